//! Filesystems the host asks for through ModifySettings: the overlay rootfs of a container
//! (`CombinedLayers`) and SCSI disks (`MappedVirtualDisk`, `SCSIDevice`). VPMem, Plan9,
//! dm-verity and formatting follow.

pub mod overlay;
pub mod pmem;
pub mod scsi;

use std::path::{Component, Path, PathBuf};

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
}
