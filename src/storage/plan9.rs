//! `MappedDirectory` (spec §5.5): a host directory shared over 9P, mounted with `trans=fd` on a
//! vsock connection to the host's Plan9 server.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::socket::{setsockopt, sockopt};
use serde::{Deserialize, Serialize};

use super::{checked_share_path, Kind, Mounted, Storage, StorageError};
use crate::protocol::json::null_default;

/// Settings of `MappedDirectory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MappedDirectory {
    #[serde(deserialize_with = "null_default")]
    pub mount_path: String,
    pub port: i32,
    #[serde(deserialize_with = "null_default")]
    pub share_name: String,
    pub read_only: bool,
}

/// The 9P message size the original negotiates, and its socket buffer sizes.
const MSIZE: usize = 65536;

impl MappedDirectory {
    /// The host port to dial, checked before any connection is made.
    pub fn port(&self) -> Result<u32, StorageError> {
        u32::try_from(self.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| StorageError::Invalid(format!("Plan9 port {} is invalid", self.port)))
    }

    /// Checks what goes into the mount options: a ',' in the share name would add options.
    pub fn validate(&self) -> Result<&Path, StorageError> {
        self.port()?;
        if self.share_name.contains([',', '\0']) {
            return Err(StorageError::Invalid(format!(
                "Plan9 ShareName {:?} contains ',' or NUL",
                self.share_name
            )));
        }
        checked_share_path(Path::new(&self.mount_path))
    }

    /// The `9p` mount data for a connection on fd `fd`.
    fn data(&self, fd: i32) -> String {
        let mut data = format!("trans=fd,rfdno={fd},wfdno={fd},msize={MSIZE}");
        if self.read_only {
            data.push_str(",noload");
        }
        if !self.share_name.is_empty() {
            data.push_str(",aname=");
            data.push_str(&self.share_name);
        }
        data
    }
}

/// `MappedDirectory` Add over `connection`, an open stream to the host's Plan9 server. The
/// kernel takes its own reference to the connection; ours is closed on return.
pub fn add(
    storage: &Storage,
    settings: &MappedDirectory,
    connection: OwnedFd,
) -> Result<(), StorageError> {
    let target = settings.validate()?;
    let identity = format!(
        "share {:?} port {}{}",
        settings.share_name,
        settings.port,
        if settings.read_only { " ro" } else { "" }
    );
    storage.add(Kind::Plan9, target, identity, || {
        // As the original; a Unix socket (tests) takes the same options.
        let _ = setsockopt(&connection, sockopt::RcvBuf, &MSIZE);
        let _ = setsockopt(&connection, sockopt::SndBuf, &MSIZE);
        super::make_dirs(target, 0o700)?;
        let flags = if settings.read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        let data = settings.data(connection.as_raw_fd());
        mount(Some(target), target, Some("9p"), flags, Some(data.as_str())).map_err(|e| {
            let _ = std::fs::remove_dir(target);
            StorageError::Io {
                what: "mount Plan9 share on",
                path: target.into(),
                source: e.into(),
            }
        })?;
        Ok(Mounted::default())
    })
}

/// `MappedDirectory` Remove: undo one Add.
pub fn remove(storage: &Storage, settings: &MappedDirectory) -> Result<(), StorageError> {
    storage.remove(
        Kind::Plan9,
        checked_share_path(Path::new(&settings.mount_path))?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_validation() {
        let d: MappedDirectory = serde_json::from_str(
            r#"{"MountPath":"/run/gcs/c/x/mounts/m0","Port":564,"ShareName":"1","ReadOnly":true}"#,
        )
        .unwrap();
        assert!(d.validate().is_ok());
        assert_eq!(
            d.data(7),
            "trans=fd,rfdno=7,wfdno=7,msize=65536,noload,aname=1"
        );
        let hostile = MappedDirectory {
            share_name: "1,access=any".into(),
            ..d.clone()
        };
        assert!(hostile.validate().is_err());
        assert!(MappedDirectory {
            port: -1,
            ..d.clone()
        }
        .validate()
        .is_err());
        assert!(MappedDirectory {
            mount_path: "/etc".into(),
            ..d
        }
        .validate()
        .is_err());
    }
}
