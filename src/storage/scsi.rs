//! SCSI disks by controller and LUN (spec §5.1, §5.2): find the block device, mount it (or link
//! it), and on removal unmount and eject it.
//!
//! Controller → SCSI host: on Hyper-V by the fixed vmbus instance GUIDs of the four HCS
//! controllers; on QEMU by the order of the virtio-scsi hosts. Which applies is read from sysfs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

use super::verity::VerityInfo;
use super::{
    checked_share_path, devmapper, unmount_and_remove, Kind, Mounted, Storage, StorageError,
};
use crate::protocol::json::null_default;
use crate::uevent::{wait_until, WaitError};

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
    pub verity_info: Option<VerityInfo>,
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

/// Waits for the disk of (controller, lun) and its `/dev` node, woken by kernel uevents,
/// within `deadline`, holding no thread. Errors: a missing controller at once; `Invalid` with
/// the timeout's text at the deadline.
pub async fn wait_for_device(
    controller: u8,
    lun: u8,
    partition: u64,
    deadline: Duration,
) -> Result<PathBuf, StorageError> {
    let sys = Path::new("/sys");
    // Controllers exist from boot (only disks are hot-added), so a missing one fails at once.
    let host = scsi_host(sys, controller)?;
    let what = if partition == 0 {
        format!("SCSI disk controller {controller} lun {lun}")
    } else {
        format!("partition {partition} of SCSI disk controller {controller} lun {lun}")
    };
    wait_until(&what, deadline, || {
        let Some(name) = block_device(sys, host, lun, partition)? else {
            return Ok(None);
        };
        let dev = Path::new("/dev").join(&name);
        // The node can appear before the disk's capacity is read (reads see nothing) and
        // before the disk is live (open fails with ENXIO, as spec §5.1 step 5 notes). The
        // kernel announces the disk ("add") only once it is live.
        let size = std::fs::read_to_string(sys.join("class/block").join(&name).join("size"))
            .unwrap_or_default();
        if !size.trim().parse::<u64>().is_ok_and(|s| s > 0) {
            return Ok(None);
        }
        // sd's open checks the medium (a command to the disk): beside the worker.
        match crate::worker::block(|| std::fs::File::open(&dev)) {
            Ok(_) => Ok(Some(dev)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => Ok(None),
            Err(source) => Err(StorageError::Io {
                what: "open",
                path: dev,
                source,
            }),
        }
    })
    .await
    .map_err(|e| match e {
        WaitError::Probe(e) => e,
        timeout => StorageError::Invalid(timeout.to_string()),
    })
}

/// The filesystem on `dev`, by superblock magic (only ext4 is recognised, as the original).
fn detect_filesystem(dev: &Path) -> std::io::Result<Option<&'static str>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev)?;
    f.seek(SeekFrom::Start(1024 + 56))?;
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic)?;
    Ok((u16::from_le_bytes(magic) == 0xEF53).then_some("ext4"))
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

/// What identifies the disk behind a mount, to tell a repeated Add from a conflicting one.
fn identity(disk: &MappedVirtualDisk) -> String {
    format!(
        "controller {} lun {} partition {}{}{}{}",
        disk.controller,
        disk.lun,
        disk.partition,
        if disk.read_only { " ro" } else { " rw" },
        if disk.block_dev { " link" } else { "" },
        disk.verity_info
            .as_ref()
            .map(|v| format!(" verity {}", v.root_digest))
            .unwrap_or_default()
            + if disk.encrypted { " encrypted" } else { "" },
    )
}

/// `MappedVirtualDisk` Add, first half: checks the request and waits (async) for the disk; its
/// device node. The second half, [`add`], mounts it (blocking).
pub async fn attach(disk: &MappedVirtualDisk) -> Result<PathBuf, StorageError> {
    check(disk)?;
    wait_for_device(disk.controller, disk.lun, disk.partition, DEVICE_DEADLINE).await
}

/// What can be refused before waiting on a device.
pub(crate) fn check(disk: &MappedVirtualDisk) -> Result<(), StorageError> {
    if disk.encrypted && (disk.read_only || !matches!(disk.filesystem.as_str(), "" | "ext4")) {
        return Err(StorageError::Invalid(format!(
            "an encrypted disk is a fresh read-write ext4 scratch (ReadOnly {}, Filesystem {:?})",
            disk.read_only, disk.filesystem
        )));
    }
    if disk.verity_info.is_some() && !disk.read_only {
        return Err(StorageError::Invalid(
            "VerityInfo needs a read-only disk".into(),
        ));
    }
    if !disk.mount_path.is_empty() {
        checked_share_path(Path::new(&disk.mount_path))?;
    }
    Ok(())
}

/// `MappedVirtualDisk` Add, second half: mounts (or links) `dev`, found by [`attach`], at
/// `MountPath`. Blocking.
pub fn add(storage: &Storage, disk: &MappedVirtualDisk, dev: &Path) -> Result<(), StorageError> {
    let dev = dev.to_path_buf();
    let target = if disk.mount_path.is_empty() {
        None
    } else {
        Some(checked_share_path(Path::new(&disk.mount_path))?)
    };
    // An empty MountPath means "attach only": the device is there, nothing is mounted.
    let Some(target) = target else {
        return Ok(());
    };
    storage.add(Kind::Scsi, target, identity(disk), || {
        let mut made = Mounted::default();
        let mut source = dev.clone();
        if let Some(verity) = &disk.verity_info {
            let name = format!(
                "dm-verity-scsi-contr{}-lun{}-p{}-{}",
                disk.controller, disk.lun, disk.partition, verity.root_digest
            );
            source = verity.open(&name, &dev)?.path;
            made.mapped.push(name);
        }
        let mut disk = disk.clone();
        if disk.encrypted {
            let name = format!(
                "dm-crypt-scsi-contr{}-lun{}-p{}",
                disk.controller, disk.lun, disk.partition
            );
            source = super::crypt::open(&name, &dev)?.path;
            made.mapped.push(name);
            // A new key makes the old contents noise: always format.
            if let Err(e) = super::mkfs::format(&source, "ext4") {
                let _ = devmapper::remove(&made.mapped[0]);
                return Err(e);
            }
            disk.filesystem = "ext4".into();
            disk.ensure_filesystem = false;
        }
        let mounted = mount_disk(&disk, &source, target, &mut made);
        if mounted.is_err() {
            for name in &made.mapped {
                let _ = devmapper::remove(name);
            }
        }
        mounted.map(|()| made)
    })
}

fn mkdir(path: &Path) -> Result<(), StorageError> {
    super::make_dirs(path, 0o700)
}

fn mount_disk(
    disk: &MappedVirtualDisk,
    dev: &Path,
    target: &Path,
    made: &mut Mounted,
) -> Result<(), StorageError> {
    if disk.block_dev {
        if let Some(parent) = target.parent() {
            mkdir(parent)?;
        }
        made.link = true;
        return std::os::unix::fs::symlink(dev, target).map_err(|source| StorageError::Io {
            what: "link",
            path: target.into(),
            source,
        });
    }
    // As the original: a first failed detection is retried after 500 ms.
    let detected = match detect_filesystem(dev) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(device = %dev.display(), error = %e, "reading the superblock failed; retrying in 500 ms");
            std::thread::sleep(Duration::from_millis(500));
            detect_filesystem(dev).ok().flatten()
        }
    };
    let fstype = match (disk.filesystem.as_str(), detected) {
        ("", Some(fs)) => fs.to_string(),
        ("", None) => {
            return Err(StorageError::Invalid(format!(
                "no recognised filesystem on {} (only ext4 is detected; set Filesystem)",
                dev.display()
            )))
        }
        (wanted, found) => {
            if !matches!(wanted, "ext4" | "xfs") {
                return Err(StorageError::Invalid(format!(
                    "unsupported filesystem {wanted:?} (ext4 or xfs)"
                )));
            }
            if disk.ensure_filesystem && found != Some(wanted) {
                if disk.read_only {
                    return Err(StorageError::Invalid(format!(
                        "cannot format the read-only disk {}",
                        dev.display()
                    )));
                }
                super::mkfs::format(dev, wanted)?;
            }
            wanted.to_string()
        }
    };
    mkdir(target)?;
    let (flags, data) = if disk.read_only {
        (MsFlags::MS_RDONLY, Some("noload"))
    } else {
        (MsFlags::empty(), None)
    };
    if let Err(e) = mount(Some(dev), target, Some(fstype.as_str()), flags, data) {
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

/// `MappedVirtualDisk` Remove: undo one Add at `MountPath` (the device is not needed for
/// that, unlike the original, which first waits for it without a deadline).
pub fn remove(storage: &Storage, disk: &MappedVirtualDisk) -> Result<(), StorageError> {
    if disk.mount_path.is_empty() {
        return Ok(());
    }
    storage.remove(Kind::Scsi, checked_share_path(Path::new(&disk.mount_path))?)
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
