//! SCSI disks by controller and LUN (spec §5.1, §5.2): find the block device, mount it (or link
//! it), and on removal unmount and eject it.
//!
//! Controller → SCSI host: on Hyper-V by the fixed vmbus instance GUIDs of the four HCS
//! controllers; on QEMU by the order of the virtio-scsi hosts. Which applies is read from sysfs.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

use super::{checked_path, unmount_and_remove, StorageError};
use crate::protocol::json::null_default;

/// vmbus instance ids of HCS SCSI controllers 0–3 (GUID v5 of "0".."3" in hcsshim's namespace).
pub const CONTROLLER_GUIDS: [&str; 4] = [
    "df6d0690-79e5-55b6-a5ec-c1e2f77f580a",
    "0110f83b-de10-5172-a266-78bca56bf50a",
    "b5d2d8d4-3a75-51bf-945b-3444dc6b8579",
    "305891a9-b251-5dfe-91a2-c25d9212275b",
];

/// How long a hot-added disk may take to appear.
pub const DEVICE_DEADLINE: Duration = Duration::from_secs(30);

/// Settings of `MappedVirtualDisk` (every key optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MappedVirtualDisk {
    #[serde(deserialize_with = "null_default")]
    pub mount_path: String,
    pub lun: u8,
    pub controller: u8,
    pub partition: u64,
    pub read_only: bool,
    pub encrypted: bool,
    #[serde(deserialize_with = "null_default")]
    pub options: Vec<String>,
    pub block_dev: bool,
    pub ensure_filesystem: bool,
    #[serde(deserialize_with = "null_default")]
    pub filesystem: String,
}

/// Settings of `SCSIDevice`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ScsiDevice {
    pub controller: u8,
    pub lun: u8,
}

/// The SCSI host number of HCS controller `controller`, from the sysfs tree at `sys`.
pub fn scsi_host(sys: &Path, controller: u8) -> Result<u32, StorageError> {
    let Some(guid) = CONTROLLER_GUIDS.get(usize::from(controller)) else {
        return Err(StorageError::Invalid(format!(
            "SCSI controller {controller} does not exist (0–3)"
        )));
    };
    let vmbus = sys.join("bus/vmbus/devices").join(guid);
    if sys.join("bus/vmbus").exists() {
        let entries = std::fs::read_dir(&vmbus).map_err(|source| StorageError::Io {
            what: "read",
            path: vmbus.clone(),
            source,
        })?;
        return entries
            .flatten()
            .find_map(|e| e.file_name().to_str()?.strip_prefix("host")?.parse().ok())
            .ok_or_else(|| {
                StorageError::Invalid(format!("no SCSI host under {}", vmbus.display()))
            });
    }
    let mut hosts: Vec<u32> = std::fs::read_dir(sys.join("class/scsi_host"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("proc_name"))
                        .is_ok_and(|n| n.trim() == "virtio_scsi")
                })
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("host")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    hosts.sort_unstable();
    hosts
        .get(usize::from(controller))
        .copied()
        .ok_or_else(|| StorageError::Invalid(format!("no SCSI controller {controller} in this VM")))
}

/// The block device name (`sdb`, or `sdb1` for a partition) once it exists.
pub fn block_device(
    sys: &Path,
    host: u32,
    lun: u8,
    partition: u64,
) -> Result<Option<String>, StorageError> {
    let dir = sys.join(format!("bus/scsi/devices/{host}:0:0:{lun}/block"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match names.as_slice() {
        [] => Ok(None),
        [disk] if partition == 0 => Ok(Some(disk.clone())),
        [disk] => {
            let part = format!("{disk}{partition}");
            Ok(dir.join(disk).join(&part).exists().then_some(part))
        }
        _ => Err(StorageError::Invalid(format!(
            "more than one block device under {}",
            dir.display()
        ))),
    }
}

/// Waits (bounded) for the disk of (controller, lun) and its `/dev` node.
pub fn wait_for_device(
    controller: u8,
    lun: u8,
    partition: u64,
    deadline: Duration,
) -> Result<PathBuf, StorageError> {
    let sys = Path::new("/sys");
    // Controllers exist from boot (only disks are hot-added), so a missing one fails at once.
    let host = scsi_host(sys, controller)?;
    let start = Instant::now();
    loop {
        if let Some(name) = block_device(sys, host, lun, partition)? {
            let dev = Path::new("/dev").join(&name);
            // The node appears before the disk's capacity is read; until then reads see nothing.
            let size = std::fs::read_to_string(sys.join("class/block").join(&name).join("size"))
                .unwrap_or_default();
            if dev.exists() && size.trim().parse::<u64>().is_ok_and(|s| s > 0) {
                return Ok(dev);
            }
        }
        if start.elapsed() > deadline {
            return Err(StorageError::Invalid(format!(
                "SCSI disk controller {controller} lun {lun} did not appear within {deadline:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The filesystem on `dev`, by superblock magic (only ext4 is recognised, as the original).
fn detect_filesystem(dev: &Path) -> Option<&'static str> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).ok()?;
    f.seek(SeekFrom::Start(1024 + 56)).ok()?;
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic).ok()?;
    (u16::from_le_bytes(magic) == 0xEF53).then_some("ext4")
}

fn propagation(option: &str) -> Option<MsFlags> {
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

pub fn add(disk: &MappedVirtualDisk) -> Result<(), StorageError> {
    if disk.encrypted {
        return Err(StorageError::Invalid(
            "encrypted SCSI disks are not supported yet".into(),
        ));
    }
    let dev = wait_for_device(disk.controller, disk.lun, disk.partition, DEVICE_DEADLINE)?;
    if disk.mount_path.is_empty() {
        return Ok(());
    }
    let target = checked_path(Path::new(&disk.mount_path), &[])?;
    if disk.block_dev {
        if let Some(parent) = target.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| StorageError::Io {
                    what: "create",
                    path: parent.into(),
                    source,
                })?;
        }
        return std::os::unix::fs::symlink(&dev, target).map_err(|source| StorageError::Io {
            what: "link",
            path: target.into(),
            source,
        });
    }
    // As the original: a first failed detection is retried after 500 ms.
    let detected = detect_filesystem(&dev).or_else(|| {
        std::thread::sleep(Duration::from_millis(500));
        detect_filesystem(&dev)
    });
    let fstype = match (disk.filesystem.as_str(), detected) {
        ("", Some(fs)) => fs.to_string(),
        ("", None) => {
            return Err(StorageError::Invalid(format!(
                "no recognised filesystem on {}",
                dev.display()
            )))
        }
        (wanted, found) => {
            if disk.ensure_filesystem && found != Some(wanted) {
                return Err(StorageError::Invalid(format!(
                    "formatting {} as {wanted} is not supported yet",
                    dev.display()
                )));
            }
            wanted.to_string()
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(target)
        .map_err(|source| StorageError::Io {
            what: "create",
            path: target.into(),
            source,
        })?;
    let (flags, data) = if disk.read_only {
        (MsFlags::MS_RDONLY, Some("noload"))
    } else {
        (MsFlags::empty(), None)
    };
    if let Err(e) = mount(Some(&dev), target, Some(fstype.as_str()), flags, data) {
        let _ = std::fs::remove_dir(target);
        return Err(StorageError::Io {
            what: "mount disk on",
            path: target.into(),
            source: e.into(),
        });
    }
    for option in &disk.options {
        if let Some(flag) = propagation(option) {
            if let Err(e) = mount(None::<&str>, target, None::<&str>, flag, None::<&str>) {
                let _ = unmount_and_remove(target);
                return Err(StorageError::Io {
                    what: "set propagation of",
                    path: target.into(),
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

pub fn remove(disk: &MappedVirtualDisk) -> Result<(), StorageError> {
    if disk.mount_path.is_empty() {
        return Ok(());
    }
    let target = checked_path(Path::new(&disk.mount_path), &[])?;
    if disk.block_dev {
        return match std::fs::remove_file(target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io {
                what: "remove",
                path: target.into(),
                source: e,
            }),
            _ => Ok(()),
        };
    }
    unmount_and_remove(target)
}

/// Guest-side unplug before the host detaches the disk. A missing device is success.
pub fn eject(device: &ScsiDevice) -> Result<(), StorageError> {
    let host = scsi_host(Path::new("/sys"), device.controller)?;
    let path = PathBuf::from(format!(
        "/sys/bus/scsi/devices/{host}:0:0:{}/delete",
        device.lun
    ));
    match std::fs::write(&path, "1\n") {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io {
            what: "delete",
            path,
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn virtio_hosts_in_order() {
        let sys = tempfile::tempdir().unwrap();
        for (n, name) in [(0, "ata_piix"), (2, "virtio_scsi"), (5, "virtio_scsi")] {
            touch(
                &sys.path()
                    .join(format!("class/scsi_host/host{n}/proc_name")),
                &format!("{name}\n"),
            );
        }
        assert_eq!(scsi_host(sys.path(), 0).unwrap(), 2);
        assert_eq!(scsi_host(sys.path(), 1).unwrap(), 5);
        assert!(scsi_host(sys.path(), 2).is_err());
        assert!(
            scsi_host(sys.path(), 4).is_err(),
            "controller ≥ 4 is refused, not a crash"
        );
    }

    #[test]
    fn vmbus_controllers_by_guid() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(
            sys.path()
                .join(format!("bus/vmbus/devices/{}/host3", CONTROLLER_GUIDS[1])),
        )
        .unwrap();
        std::fs::create_dir_all(
            sys.path()
                .join(format!("bus/vmbus/devices/{}", CONTROLLER_GUIDS[0])),
        )
        .unwrap();
        assert_eq!(scsi_host(sys.path(), 1).unwrap(), 3);
        assert!(scsi_host(sys.path(), 0).is_err());
        assert!(scsi_host(sys.path(), 2).is_err());
    }

    #[test]
    fn block_devices_and_partitions() {
        let sys = tempfile::tempdir().unwrap();
        assert_eq!(block_device(sys.path(), 0, 1, 0).unwrap(), None);
        std::fs::create_dir_all(sys.path().join("bus/scsi/devices/0:0:0:1/block/sdb/sdb2"))
            .unwrap();
        assert_eq!(
            block_device(sys.path(), 0, 1, 0).unwrap().as_deref(),
            Some("sdb")
        );
        assert_eq!(
            block_device(sys.path(), 0, 1, 2).unwrap().as_deref(),
            Some("sdb2")
        );
        assert_eq!(block_device(sys.path(), 0, 1, 3).unwrap(), None);
        std::fs::create_dir_all(sys.path().join("bus/scsi/devices/0:0:0:1/block/sdc")).unwrap();
        assert!(block_device(sys.path(), 0, 1, 0).is_err());
    }

    #[test]
    fn settings_decode_with_omitted_zeroes() {
        let d: MappedVirtualDisk = serde_json::from_str(
            r#"{"MountPath":"/run/mounts/scsi/m3","Lun":3,"ReadOnly":true,"Options":["ro"]}"#,
        )
        .unwrap();
        assert_eq!((d.controller, d.lun, d.read_only), (0, 3, true));
        assert!(serde_json::from_str::<MappedVirtualDisk>(r#"{"Lun":300}"#).is_err());
    }
}
