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
pub mod verity;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Errors of storage operations, with the paths involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("path {0:?} must be absolute, normalised and below /run")]
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
    #[error("{0:?} is still being added")]
    Busy(PathBuf),
    #[error("no {kind} was added at {path:?}")]
    NotAdded { path: PathBuf, kind: &'static str },
}

impl StorageError {
    /// For the error of a Remove: whether the unmount (or the removal of its directory or
    /// link) itself failed, rather than the Remove being refused before anything was touched
    /// (nothing added there, still used, still being added, a hostile path).
    pub fn is_failed_unmount(&self) -> bool {
        matches!(self, StorageError::Io { .. })
    }
}

/// Accepts only absolute paths without `..`, under `/run` (where the host puts every guest
/// path), or under `extra_root` (tests place layers elsewhere). Returns the path unchanged.
pub fn checked_path<'a>(path: &'a Path, extra_roots: &[PathBuf]) -> Result<&'a Path, StorageError> {
    let normal = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    // Strictly below /run: a mount on /run itself would hide every other one.
    let allowed = (path.starts_with("/run") && path.components().count() > 2)
        || extra_roots.iter().any(|r| path.starts_with(r) && path != r);
    if normal && allowed {
        Ok(path)
    } else {
        Err(StorageError::HostilePath(path.to_path_buf()))
    }
}

/// The UVM's own directories, which a share must neither be mounted on, nor below, nor above:
/// its programs, libraries and configuration, the kernel's filesystems, and the agent's state.
pub const SYSTEM_DIRS: [&str; 14] = [
    "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc", "/proc", "/sys",
    "/dev", "/boot", "/init", "/run/gcs",
];

/// A share's guest path (`MappedDirectory` and `MappedVirtualDisk` `MountPath`): the host may
/// choose it (`shimdiag share`, the original's own Plan9 test mounts under `/tmp`): any
/// absolute path without `..`, except `/`, `/run` and the [`SYSTEM_DIRS`] (equal to one, below
/// one, or above one). Paths under `/run/gcs/c` (container bundles) stay allowed.
pub fn checked_share_path(path: &Path) -> Result<&Path, StorageError> {
    let normal = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let in_bundles = path.starts_with("/run/gcs/c") && path != Path::new("/run/gcs/c");
    let system = SYSTEM_DIRS
        .iter()
        .any(|d| path.starts_with(d) || Path::new(d).starts_with(path));
    if normal && path != Path::new("/run") && (in_bundles || !system) {
        Ok(path)
    } else {
        Err(StorageError::HostilePath(path.to_path_buf()))
    }
}

/// `mkdir -p path` with `mode` for the directories it makes (the host's mount points are 0700,
/// an overlay's rootfs and upper/work directories 0755).
pub fn make_dirs(path: &Path, mode: u32) -> Result<(), StorageError> {
    crate::safe_fs::mkdir_all(path, mode).map_err(|source| StorageError::Io {
        what: "create directory",
        path: path.into(),
        source,
    })
}

/// Unmounts `path` repeatedly until nothing is mounted there (stacked mounts are peeled), then
/// removes it, never crossing into another filesystem: if something is still mounted at or
/// below it, that is an error and its contents are left alone.
pub fn unmount_and_remove(path: &Path) -> Result<(), StorageError> {
    for _ in 0..8 {
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
    let parent_dev = match path.parent().map(std::fs::symlink_metadata) {
        Some(Ok(meta)) => meta.dev(),
        _ => return Ok(()),
    };
    remove_tree(path, parent_dev)
}

/// Removes `path` and what is below it without crossing into another filesystem: a mount still
/// below it is an error (`EBUSY`) and its contents are left alone. Nothing there is not an
/// error.
pub fn remove_within_filesystem(path: &Path) -> Result<(), StorageError> {
    match path.parent().map(std::fs::symlink_metadata) {
        Some(Ok(meta)) => remove_tree(path, meta.dev()),
        _ => Ok(()),
    }
}

/// Removes `path` and what is below it, all of which must be on filesystem `dev`.
fn remove_tree(path: &Path, dev: u64) -> Result<(), StorageError> {
    let io = |what, source| StorageError::Io {
        what,
        path: path.into(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("inspect", e)),
    };
    if meta.dev() != dev {
        return Err(io(
            "remove (something is still mounted there)",
            std::io::Error::from_raw_os_error(libc::EBUSY),
        ));
    }
    if !meta.is_dir() {
        return std::fs::remove_file(path).map_err(|e| io("remove", e));
    }
    for entry in std::fs::read_dir(path).map_err(|e| io("read", e))? {
        let entry = entry.map_err(|e| io("read", e))?;
        remove_tree(&entry.path(), dev)?;
    }
    std::fs::remove_dir(path).map_err(|e| io("remove", e))
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
    /// Bind mounts made alongside (an overlay's bundle bind), undone on the last Remove.
    pub binds: Vec<PathBuf>,
}

/// What is mounted at one guest path.
#[derive(Debug)]
struct Record {
    kind: Kind,
    /// Identity of the source: an Add with the same identity is counted, another refused.
    identity: String,
    adds: u32,
    /// `None` while the first Add is still mounting.
    made: Option<Mounted>,
    /// The last Remove is unmounting (unlocked): further Adds and Removes of the path are
    /// refused as busy meanwhile.
    removing: bool,
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

    /// Runs `mount` for a new `path`, or counts a repeated Add of the same resource. The path
    /// is reserved while `mount` runs, unlocked: a mount that never returns (a 9p server that
    /// never answers) holds up only its own path, not every other storage request.
    pub fn add(
        &self,
        kind: Kind,
        path: &Path,
        identity: String,
        mount: impl FnOnce() -> Result<Mounted, StorageError>,
    ) -> Result<(), StorageError> {
        {
            let mut records = self.lock();
            if let Some(record) = records.get_mut(path) {
                if record.made.is_none() || record.removing {
                    return Err(StorageError::Busy(path.into()));
                }
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
            // A mount above another would hide it, and its removal would reach into it.
            if let Some(below) = records.keys().find(|p| p.starts_with(path)) {
                return Err(StorageError::Invalid(format!(
                    "{path:?} would cover {below:?}, which is mounted"
                )));
            }
            records.insert(
                path.into(),
                Record {
                    kind,
                    identity,
                    adds: 1,
                    made: None,
                    removing: false,
                },
            );
        }
        let mounted = mount();
        let mut records = self.lock();
        match mounted {
            Ok(made) => {
                if let Some(record) = records.get_mut(path) {
                    record.made = Some(made);
                }
                Ok(())
            }
            Err(e) => {
                records.remove(path);
                Err(e)
            }
        }
    }

    /// Undoes one Add at `path`; the last one unmounts, removes the directory (or link) and
    /// the device-mapper devices, unless a mounted overlay still reads through `path`. The
    /// unmount runs unlocked (it syncs the filesystem's dirty data, and a dead 9p server can
    /// hold it): other paths' requests are not held up meanwhile, while the path itself is
    /// marked removing until everything is undone ([`has`](Self::has) says no; its Adds and
    /// Removes are `Busy`).
    ///
    /// # Errors
    /// `NotAdded` (no such mount of `kind`), `Busy` (still mounting, or being removed),
    /// `InUse` (an overlay reads through it), the unmount's or removal's error (the record is
    /// kept for a retry), or a device-mapper device that would not go (the record is gone by
    /// then, as in the original).
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
        let Some(made) = record.made.as_ref().filter(|_| !record.removing) else {
            return Err(StorageError::Busy(path.into()));
        };
        if record.adds > 1 {
            record.adds -= 1;
            return Ok(());
        }
        let link = made.link;
        if let Some(user) = records
            .iter()
            .find(|(p, r)| {
                p.as_path() != path
                    && r.made
                        .as_ref()
                        .is_some_and(|m| m.uses.iter().any(|u| u.starts_with(path)))
            })
            .map(|(p, _)| p.clone())
        {
            return Err(StorageError::InUse {
                path: path.into(),
                user,
            });
        }
        if let Some(record) = records.get_mut(path) {
            record.removing = true;
        }
        drop(records);
        let undone = if link {
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
        let mut records = self.lock();
        if let Err(e) = undone {
            // Still mounted: keep the record so that a retry can finish the job.
            if let Some(record) = records.get_mut(path) {
                record.removing = false;
            }
            return Err(e);
        }
        // The record stays (marked removing) until its binds and device-mapper devices are
        // undone too: an Add of the path meanwhile is busy, not raced by this undo.
        let made = records
            .get_mut(path)
            .and_then(|r| r.made.take())
            .unwrap_or_default();
        drop(records);
        let undone = Self::undo_binds_and_devices(&made);
        self.lock().remove(path);
        undone
    }

    /// Detaches `made`'s bind mounts and removes its device-mapper devices. Errors: the first
    /// device-mapper device that would not go (the rest are still tried).
    fn undo_binds_and_devices(made: &Mounted) -> Result<(), StorageError> {
        for bind in &made.binds {
            if let Err(e) = nix::mount::umount2(bind, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %bind.display(), error = %e, "undoing a bind mount failed");
            }
        }
        // A device-mapper device that cannot go (its dm-crypt or dm-verity target) fails the
        // Remove, as in the original, once the rest is undone: in a confidential guest that
        // marks the UVM inconsistent (SP §4.6).
        let mut first_error = None;
        for name in &made.mapped {
            if let Err(e) = devmapper::remove(name) {
                tracing::warn!(device = name, error = %e, "removing a device-mapper device failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether `path` lies on a read-write SCSI disk that was mounted encrypted (`scratch_mount`'s
    /// `encrypted`, SP §4.7); false when no disk mounted here holds it.
    pub fn on_encrypted_disk(&self, path: &Path) -> bool {
        self.lock().iter().any(|(p, r)| {
            r.kind == Kind::Scsi
                && r.made.is_some()
                && !r.removing
                && path.starts_with(p)
                && r.identity.contains(" rw")
                && r.identity.ends_with(" encrypted")
        })
    }

    /// Whether `path` holds a finished mount of `kind` (not one being removed).
    pub fn has(&self, kind: Kind, path: &Path) -> bool {
        self.lock()
            .get(path)
            .is_some_and(|r| r.kind == kind && r.made.is_some() && !r.removing)
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
        for ok in [
            "/tmp/share",
            "/mnt/data",
            "/var/lib/x",
            "/run/mounts/scsi/m0",
            "/run/gcs/c/x/mounts/m0",
            "/srv",
        ] {
            assert!(checked_share_path(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "/",
            "/run",
            "/run/gcs",
            "/run/gcs/c",
            "/etc",
            "/etc/x",
            "/usr/lib/y",
            "/proc/1",
            "/dev",
            "/sys/fs",
            "/bin",
            "/init",
            "tmp/x",
            "/tmp/../etc",
        ] {
            assert!(checked_share_path(Path::new(bad)).is_err(), "{bad}");
        }
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

    /// A path whose last Remove is unmounting (unlocked) is not mounted for `has` or
    /// `on_encrypted_disk` (a confidential Create must not take a rootfs going away), and its
    /// Adds and Removes are busy until the Remove ends.
    #[test]
    fn a_path_being_removed_is_busy_and_not_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("scratch");
        let storage = Storage::default();
        let identity = "scsi:0:1 rw encrypted".to_string();
        storage
            .add(Kind::Scsi, &disk, identity.clone(), || {
                std::fs::create_dir_all(&disk).unwrap();
                Ok(Mounted::default())
            })
            .unwrap();
        assert!(storage.has(Kind::Scsi, &disk));
        assert!(storage.on_encrypted_disk(&disk.join("c")));
        storage.lock().get_mut(&disk).unwrap().removing = true;
        assert!(!storage.has(Kind::Scsi, &disk));
        assert!(!storage.on_encrypted_disk(&disk.join("c")));
        assert!(matches!(
            storage.add(Kind::Scsi, &disk, identity.clone(), || panic!(
                "mounted twice"
            )),
            Err(StorageError::Busy(_))
        ));
        assert!(matches!(
            storage.remove(Kind::Scsi, &disk),
            Err(StorageError::Busy(_))
        ));
        storage.lock().get_mut(&disk).unwrap().removing = false;
        storage.remove(Kind::Scsi, &disk).unwrap();
        assert!(!disk.exists());
        assert!(storage.mounts().is_empty());
    }
}
