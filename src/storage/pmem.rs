//! `VPMemDevice` (spec §5.3): a read-only ext4 layer on `/dev/pmem<N>`, the whole device or a
//! slice of it (dm-linear), optionally verified (dm-verity), mounted with DAX where it can be.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

use super::devmapper::{self, Target};
use super::verity::VerityInfo;
use super::{checked_path, Kind, Mounted, Storage, StorageError};
use crate::protocol::json::null_default;
use crate::uevent::{wait_until, WaitError};

/// Settings of `VPMemDevice`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VpmemDevice {
    pub device_number: u32,
    #[serde(deserialize_with = "null_default")]
    pub mount_path: String,
    pub mapping_info: Option<MappingInfo>,
    pub verity_info: Option<VerityInfo>,
}

/// Where a layer sits inside a multi-mapped device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MappingInfo {
    pub device_offset_in_bytes: u64,
    pub device_size_in_bytes: u64,
}

/// How long `/dev/pmem<N>` may take to appear. The original does not wait at all and loses
/// the race with a hot-added NVDIMM (trace 21); the host adds the device before asking.
pub const DEVICE_DEADLINE: Duration = Duration::from_secs(5);

/// The size of the block device at `dev`, 0 while it has none (or cannot be opened).
fn device_bytes(dev: &Path) -> u64 {
    use std::io::{Seek, SeekFrom};
    std::fs::File::open(dev)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .unwrap_or(0)
}

/// Waits, woken by uevents and holding no thread, for `/dev/pmem<number>` with a known size;
/// returns it and its size. Errors: `Invalid` with the timeout's text at the deadline.
pub async fn wait_for_device(
    number: u32,
    deadline: Duration,
) -> Result<(PathBuf, u64), StorageError> {
    let name = format!("pmem{number}");
    let dev = Path::new("/dev").join(&name);
    wait_until::<_, StorageError>(&dev.display().to_string(), deadline, || {
        let size = device_bytes(&dev);
        Ok((size > 0).then_some(size))
    })
    .await
    .map(|size| (dev.clone(), size))
    .map_err(|e| match e {
        WaitError::Probe(e) => e,
        timeout => StorageError::Invalid(timeout.to_string()),
    })
}

/// The dm-linear table of a layer at `mapping` inside `dev` of `device_bytes`.
fn linear_target(
    dev: &Path,
    device_bytes: u64,
    mapping: MappingInfo,
) -> Result<Target, StorageError> {
    let MappingInfo {
        device_offset_in_bytes: offset,
        device_size_in_bytes: size,
    } = mapping;
    if size == 0 || offset % 512 != 0 || size % 512 != 0 {
        return Err(StorageError::Invalid(format!(
            "MappingInfo offset {offset} and size {size} must be whole 512-byte sectors, size non-zero"
        )));
    }
    if offset
        .checked_add(size)
        .is_none_or(|end| end > device_bytes)
    {
        return Err(StorageError::Invalid(format!(
            "MappingInfo {offset}+{size} lies beyond the end of {} ({device_bytes} bytes)",
            dev.display()
        )));
    }
    Ok(Target {
        start: 0,
        sectors: size / 512,
        kind: "linear",
        params: format!("{} {}", dev.display(), offset / 512),
    })
}

/// DAX needs a capable device and a filesystem block the size of a page.
fn dax_possible(dev: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(dev) else {
        return false;
    };
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let capable = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/queue/dax"))
        .is_ok_and(|s| s.trim() == "1");
    let block_4k = super::verity::ext4_block_size(dev) == Some(4096);
    capable && block_4k
}

fn identity(settings: &VpmemDevice) -> String {
    let mut id = format!("pmem{}", settings.device_number);
    if let Some(m) = settings.mapping_info {
        id.push_str(&format!(
            " at {}+{}",
            m.device_offset_in_bytes, m.device_size_in_bytes
        ));
    }
    if let Some(v) = &settings.verity_info {
        id.push_str(&format!(" verity {}", v.root_digest));
    }
    id
}

/// `VPMemDevice` Add, first half: checks the path and waits (async) for the device; its node
/// and size. The second half, [`add`], mounts it (blocking).
pub async fn attach(settings: &VpmemDevice) -> Result<(PathBuf, u64), StorageError> {
    checked_path(Path::new(&settings.mount_path), &[])?;
    wait_for_device(settings.device_number, DEVICE_DEADLINE).await
}

/// `VPMemDevice` Add, second half: maps and mounts `dev` of `device_bytes`, found by
/// [`attach`]. Blocking.
pub fn add(
    storage: &Storage,
    settings: &VpmemDevice,
    (dev, device_bytes): (PathBuf, u64),
) -> Result<(), StorageError> {
    let target = checked_path(Path::new(&settings.mount_path), &[])?;
    storage.add(Kind::Pmem, target, identity(settings), || {
        let mut made = Mounted::default();
        let mounted = mount_layer(settings, &dev, device_bytes, target, &mut made);
        if mounted.is_err() {
            for name in &made.mapped {
                let _ = devmapper::remove(name);
            }
        }
        mounted.map(|()| made)
    })
}

fn mount_layer(
    settings: &VpmemDevice,
    dev: &Path,
    device_bytes: u64,
    target: &Path,
    made: &mut Mounted,
) -> Result<(), StorageError> {
    let n = settings.device_number;
    let mut source = dev.to_path_buf();
    if let Some(mapping) = settings.mapping_info {
        let table = linear_target(dev, device_bytes, mapping)?;
        let name = format!(
            "dm-linear-pmem{n}-{}-{}",
            mapping.device_offset_in_bytes, mapping.device_size_in_bytes
        );
        source = devmapper::create(&name, &[table], true, false)?.path;
        made.mapped.insert(0, name);
    }
    if let Some(verity) = &settings.verity_info {
        // Two packed layers may have the same contents (and digest): the offset tells them apart.
        let name = match settings.mapping_info {
            Some(m) => format!(
                "dm-verity-pmem{n}-{}-{}",
                m.device_offset_in_bytes, verity.root_digest
            ),
            None => format!("dm-verity-pmem{n}-{}", verity.root_digest),
        };
        source = verity.open(&name, &source)?.path;
        made.mapped.insert(0, name);
    }
    super::make_dirs(target, 0o700)?;
    let mut result = Err(nix::errno::Errno::EINVAL);
    if dax_possible(&source) {
        result = mount(
            Some(&source),
            target,
            Some("ext4"),
            MsFlags::MS_RDONLY,
            Some("noload,dax"),
        );
        if let Err(e) = result {
            tracing::warn!(device = %source.display(), error = %e, "DAX mount failed; mounting without DAX");
        }
    }
    if result.is_err() {
        result = mount(
            Some(&source),
            target,
            Some("ext4"),
            MsFlags::MS_RDONLY,
            Some("noload"),
        );
    }
    result.map_err(|e| {
        let _ = std::fs::remove_dir(target);
        StorageError::Io {
            what: "mount VPMem layer on",
            path: target.into(),
            source: e.into(),
        }
    })
}

/// `VPMemDevice` Remove: undo one Add; the last unmounts and removes the dm devices.
pub fn remove(storage: &Storage, settings: &VpmemDevice) -> Result<(), StorageError> {
    storage.remove(
        Kind::Pmem,
        checked_path(Path::new(&settings.mount_path), &[])?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_decode() {
        let v: VpmemDevice =
            serde_json::from_str(r#"{"DeviceNumber":2,"MountPath":"/run/layers/p2"}"#).unwrap();
        assert_eq!((v.device_number, v.mapping_info), (2, None));
        let v: VpmemDevice = serde_json::from_str(
            r#"{"DeviceNumber":1,"MountPath":"/run/layers/p1-4194304-73400320","MappingInfo":{"DeviceOffsetInBytes":4194304,"DeviceSizeInBytes":73400320}}"#,
        )
        .unwrap();
        assert_eq!(v.mapping_info.unwrap().device_offset_in_bytes, 4_194_304);
        let hostile = VpmemDevice {
            mount_path: "/etc".into(),
            ..VpmemDevice::default()
        };
        assert!(matches!(
            attach(&hostile).await,
            Err(StorageError::HostilePath(_))
        ));
    }

    #[test]
    fn linear_tables() {
        let dev = Path::new("/dev/pmem1");
        let m = |o, s| MappingInfo {
            device_offset_in_bytes: o,
            device_size_in_bytes: s,
        };
        let t = linear_target(dev, 1 << 30, m(4_194_304, 73_400_320)).unwrap();
        assert_eq!((t.sectors, t.params.as_str()), (143_360, "/dev/pmem1 8192"));
        assert!(linear_target(dev, 1 << 30, m(100, 4096)).is_err());
        assert!(linear_target(dev, 1 << 30, m(0, 0)).is_err());
        assert!(linear_target(dev, 1 << 20, m(4096, 1 << 20)).is_err());
        assert!(linear_target(dev, 1 << 20, m(u64::MAX - 511, 1024)).is_err());
    }
}
