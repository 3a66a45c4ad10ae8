//! `VPMemDevice` (spec §5.3): a read-only ext4 layer on `/dev/pmem<N>`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

use super::{checked_path, unmount_and_remove, StorageError};
use crate::protocol::json::null_default;

/// Settings of `VPMemDevice`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VpmemDevice {
    pub device_number: u32,
    #[serde(deserialize_with = "null_default")]
    pub mount_path: String,
    pub mapping_info: Option<MappingInfo>,
}

/// Where a layer sits inside a multi-mapped device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MappingInfo {
    pub device_offset_in_bytes: u64,
    pub device_size_in_bytes: u64,
}

/// How long `/dev/pmem<N>` may take to appear (the original does not wait at all).
const DEVICE_DEADLINE: Duration = Duration::from_secs(10);

fn device(number: u32) -> Result<PathBuf, StorageError> {
    let dev = PathBuf::from(format!("/dev/pmem{number}"));
    let start = Instant::now();
    while !dev.exists() {
        if start.elapsed() > DEVICE_DEADLINE {
            return Err(StorageError::Invalid(format!(
                "{} does not exist",
                dev.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(dev)
}

pub fn add(settings: &VpmemDevice) -> Result<(), StorageError> {
    if settings.mapping_info.is_some() {
        return Err(StorageError::Invalid(
            "multi-mapped VPMem devices (dm-linear) are not supported yet".into(),
        ));
    }
    let target = checked_path(Path::new(&settings.mount_path), &[])?;
    let dev = device(settings.device_number)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(target)
        .map_err(|source| StorageError::Io {
            what: "create",
            path: target.into(),
            source,
        })?;
    if let Err(e) = mount(
        Some(&dev),
        target,
        Some("ext4"),
        MsFlags::MS_RDONLY,
        Some("noload"),
    ) {
        let _ = std::fs::remove_dir(target);
        return Err(StorageError::Io {
            what: "mount VPMem layer on",
            path: target.into(),
            source: e.into(),
        });
    }
    Ok(())
}

pub fn remove(settings: &VpmemDevice) -> Result<(), StorageError> {
    unmount_and_remove(checked_path(Path::new(&settings.mount_path), &[])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_decode() {
        let v: VpmemDevice =
            serde_json::from_str(r#"{"DeviceNumber":2,"MountPath":"/run/layers/p2"}"#).unwrap();
        assert_eq!((v.device_number, v.mapping_info), (2, None));
        let v: VpmemDevice = serde_json::from_str(
            r#"{"DeviceNumber":1,"MountPath":"/run/layers/p1-4194304-73400320","MappingInfo":{"DeviceOffsetInBytes":4194304,"DeviceSizeInBytes":73400320}}"#,
        )
        .unwrap();
        assert_eq!(v.mapping_info.unwrap().device_offset_in_bytes, 4_194_304);
        assert!(add(&v).is_err(), "multi-mapped is refused clearly");
        let hostile = VpmemDevice {
            device_number: 0,
            mount_path: "/etc".into(),
            mapping_info: None,
        };
        assert!(matches!(add(&hostile), Err(StorageError::HostilePath(_))));
    }
}
