//! Filesystems the host asks for through ModifySettings (spec §5): SCSI disks
//! (`MappedVirtualDisk`, `SCSIDevice`), VPMem layers (`VPMemDevice`), the overlay rootfs of a
//! container (`CombinedLayers`) and Plan9 shares (`MappedDirectory`), with device-mapper
//! (linear, verity) through ioctls and device discovery by kernel uevents.
//!
//! [`Storage`] keeps one record per guest path it mounted: how many Adds it answered (the same
//! resource added twice is counted, not mounted twice), the device-mapper devices under it,
//! and which overlays use it, so that a layer under a live rootfs is never unmounted.

pub mod crypt;
pub mod devmapper;
pub mod mkfs;
pub mod overlay;
pub mod plan9;
pub mod pmem;
pub mod scsi;
pub mod uevent;
pub mod verity;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Errors of storage operations, with the paths involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("path {0:?} must be absolute, normalised and under /run")]
    HostilePath(PathBuf),
    #[error("{what} {path:?}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{path:?} is still used by the container rootfs at {user:?}")]
    InUse { path: PathBuf, user: PathBuf },
    #[error("{path:?} is already mounted from a different {kind} ({existing})")]
    Conflict {
        path: PathBuf,
        kind: &'static str,
        existing: String,
    },
    #[error("{path:?} is still used by the running container {container:?}")]
    ContainerRunning { path: PathBuf, container: String },
    #[error("no {kind} was added at {path:?}")]
    NotAdded { path: PathBuf, kind: &'static str },
}

/// Accepts only absolute paths without `..`, under `/run` (where the host puts every guest
/// path), or under `extra_root` (tests place layers elsewhere). Returns the path unchanged.
pub fn checked_path<'a>(path: &'a Path, extra_roots: &[PathBuf]) -> Result<&'a Path, StorageError> {
    let normal = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let allowed = path.starts_with("/run") || extra_roots.iter().any(|r| path.starts_with(r));
    if normal && allowed {
        Ok(path)
    } else {
        Err(StorageError::HostilePath(path.to_path_buf()))
    }
}

/// Unmounts `path` repeatedly until nothing is mounted there (stacked mounts are peeled), then
/// removes it.
pub fn unmount_and_remove(path: &Path) -> Result<(), StorageError> {
    for _ in 0..5 {
        match nix::mount::umount2(path, nix::mount::MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                return Err(StorageError::Io {
                    what: "unmount",
                    path: path.into(),
                    source: e.into(),
                })
            }
        }
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io {
            what: "remove",
            path: path.into(),
            source,
        }),
    }
}

/// Which resource made a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scsi,
    Pmem,
    Overlay,
    Plan9,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Scsi => "MappedVirtualDisk",
            Kind::Pmem => "VPMemDevice",
            Kind::Overlay => "CombinedLayers",
            Kind::Plan9 => "MappedDirectory",
        }
    }
}

/// What a mount step made, for its later removal.
#[derive(Debug, Default)]
pub struct Mounted {
    /// Device-mapper devices under the mount, top-most first.
    pub mapped: Vec<String>,
    /// Paths the mount reads through (an overlay's layers and scratch).
    pub uses: Vec<PathBuf>,
    /// A symlink to a block device (`BlockDev`) rather than a mount.
    pub link: bool,
}

/// What is mounted at one guest path.
#[derive(Debug)]
struct Record {
    kind: Kind,
    /// Identity of the source: an Add with the same identity is counted, another refused.
    identity: String,
    adds: u32,
    made: Mounted,
}

/// The guest's mounts made for the host, by path.
#[derive(Debug, Default)]
pub struct Storage {
    records: Mutex<BTreeMap<PathBuf, Record>>,
}

impl Storage {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `mount` for a new `path`, or counts a repeated Add of the same resource. The table
    /// stays locked while mounting, so two Adds of one path cannot both mount; device waits
    /// happen before this, unlocked.
    pub fn add(
        &self,
        kind: Kind,
        path: &Path,
        identity: String,
        mount: impl FnOnce() -> Result<Mounted, StorageError>,
    ) -> Result<(), StorageError> {
        let mut records = self.lock();
        if let Some(record) = records.get_mut(path) {
            if record.kind == kind && record.identity == identity {
                record.adds += 1;
                tracing::info!(path = %path.display(), adds = record.adds, "{} added again; counted", kind.name());
                return Ok(());
            }
            return Err(StorageError::Conflict {
                path: path.into(),
                kind: record.kind.name(),
                existing: record.identity.clone(),
            });
        }
        let made = mount()?;
        records.insert(
            path.into(),
            Record {
                kind,
                identity,
                adds: 1,
                made,
            },
        );
        Ok(())
    }

    /// Undoes one Add at `path`; the last one unmounts, removes the directory (or link) and
    /// the device-mapper devices, unless a mounted overlay still reads through `path`.
    pub fn remove(&self, kind: Kind, path: &Path) -> Result<(), StorageError> {
        let mut records = self.lock();
        let record = match records.get_mut(path) {
            Some(r) if r.kind == kind => r,
            _ => {
                return Err(StorageError::NotAdded {
                    path: path.into(),
                    kind: kind.name(),
                })
            }
        };
        if record.adds > 1 {
            record.adds -= 1;
            return Ok(());
        }
        if let Some(user) = records
            .iter()
            .find(|(p, r)| p.as_path() != path && r.made.uses.iter().any(|u| u.starts_with(path)))
            .map(|(p, _)| p.clone())
        {
            return Err(StorageError::InUse {
                path: path.into(),
                user,
            });
        }
        let Some(record) = records.remove(path) else {
            return Ok(());
        };
        let undone = if record.made.link {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io {
                    what: "remove",
                    path: path.into(),
                    source: e,
                }),
                _ => Ok(()),
            }
        } else {
            unmount_and_remove(path)
        };
        if let Err(e) = undone {
            // Still mounted: keep the record so a retry can finish the job.
            records.insert(path.into(), record);
            return Err(e);
        }
        for name in &record.made.mapped {
            if let Err(e) = devmapper::remove(name) {
                tracing::warn!(device = name, error = %e, "removing a device-mapper device failed");
            }
        }
        Ok(())
    }

    /// Paths mounted, with their resource and Add count (for stack dumps and tests).
    pub fn mounts(&self) -> Vec<(PathBuf, &'static str, u32)> {
        self.lock()
            .iter()
            .map(|(p, r)| (p.clone(), r.kind.name(), r.adds))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        assert!(checked_path(Path::new("/run/gcs/c/x/rootfs"), &[]).is_ok());
        assert!(checked_path(Path::new("/run/../etc"), &[]).is_err());
        assert!(checked_path(Path::new("run/x"), &[]).is_err());
        assert!(checked_path(Path::new("/etc/passwd"), &[]).is_err());
        assert!(checked_path(Path::new("/tmp/layers/a"), &[PathBuf::from("/tmp/layers")]).is_ok());
        // "." components are normalised away; the result is the same path.
        assert!(checked_path(Path::new("/run/./x"), &[]).is_ok());
    }

    #[test]
    fn adds_are_counted_conflicts_refused_and_users_protect() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        let root = dir.path().join("rootfs");
        let storage = Storage::default();
        let make = |p: &Path| {
            std::fs::create_dir_all(p).unwrap();
            Ok(Mounted::default())
        };
        storage
            .add(Kind::Pmem, &layer, "pmem:0".into(), || make(&layer))
            .unwrap();
        storage
            .add(Kind::Pmem, &layer, "pmem:0".into(), || {
                panic!("mounted twice")
            })
            .unwrap();
        assert!(matches!(
            storage.add(Kind::Pmem, &layer, "pmem:1".into(), || make(&layer)),
            Err(StorageError::Conflict { .. })
        ));
        storage
            .add(Kind::Overlay, &root, "c".into(), || {
                std::fs::create_dir_all(&root).unwrap();
                Ok(Mounted {
                    uses: vec![layer.join("sub")],
                    ..Mounted::default()
                })
            })
            .unwrap();
        // Two Adds: the first Remove only counts down.
        storage.remove(Kind::Pmem, &layer).unwrap();
        assert!(layer.exists());
        assert!(matches!(
            storage.remove(Kind::Pmem, &layer),
            Err(StorageError::InUse { .. })
        ));
        assert!(matches!(
            storage.remove(Kind::Scsi, &root),
            Err(StorageError::NotAdded { .. })
        ));
        storage.remove(Kind::Overlay, &root).unwrap();
        storage.remove(Kind::Pmem, &layer).unwrap();
        assert!(!layer.exists() && !root.exists());
        assert!(storage.mounts().is_empty());
        assert!(matches!(
            storage.remove(Kind::Pmem, &layer),
            Err(StorageError::NotAdded { .. })
        ));
    }
}
