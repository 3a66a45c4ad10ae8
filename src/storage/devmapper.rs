//! Device-mapper through its ioctls on `/dev/mapper/control` (no `dmsetup` in the guest):
//! create a device from a table, resume it, make its node, and remove it.
//!
//! The guest has no udev, so the `/dev/mapper/<name>` node the original uses is made here with
//! `mknod` from the device number the kernel returns.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::StorageError;
use crate::sys::{dm_ioctl, DM_IOCTL_HEADER};

const CONTROL: &str = "/dev/mapper/control";

// Commands (`enum` in linux/dm-ioctl.h).
const DEV_CREATE: u8 = 3;
const DEV_REMOVE: u8 = 4;
const DEV_SUSPEND: u8 = 6;
const TABLE_LOAD: u8 = 9;

// Flags.
const READONLY: u32 = 1 << 0;
const SECURE_DATA: u32 = 1 << 15;
const DEFERRED_REMOVE: u32 = 1 << 17;

/// The interface version this code speaks (4.x: any kernel since 2.6).
const VERSION: [u32; 3] = [4, 0, 0];

const NAME_LEN: usize = 128;
/// `data_start`: the payload follows the header.
const HEADER_LEN: u32 = 312;
const TARGET_SPEC_LEN: usize = 40;
const TARGET_TYPE_LEN: usize = 16;

/// One line of a device-mapper table, in 512-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub sectors: u64,
    pub kind: &'static str,
    pub params: String,
}

/// A device-mapper device that this module created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    /// `/dev/mapper/<name>`.
    pub path: PathBuf,
}

fn error(what: &str, name: &str, errno: Errno) -> StorageError {
    StorageError::Io {
        what: "device-mapper",
        path: PathBuf::from(format!("{what} {name}")),
        source: errno.into(),
    }
}

fn control() -> Result<File, StorageError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(CONTROL)
        .map_err(|source| {
            let hint = if source.kind() == std::io::ErrorKind::NotFound {
                " (this kernel has no device-mapper: dm-mod is not loaded or built in)"
            } else {
                ""
            };
            StorageError::Io {
                what: if hint.is_empty() {
                    "open"
                } else {
                    "open (no device-mapper)"
                },
                path: PathBuf::from(format!("{CONTROL}{hint}")),
                source,
            }
        })
}

/// A `struct dm_ioctl` header for device `name` with room for `payload` bytes after it.
fn header(name: &str, flags: u32, payload: usize) -> Result<Vec<u8>, StorageError> {
    if name.is_empty() || name.len() >= NAME_LEN || name.contains('/') {
        return Err(StorageError::Invalid(format!(
            "device-mapper name {name:?} is empty, too long or contains '/'"
        )));
    }
    // Some answers (status, deps) are longer than the request: leave room.
    let size = DM_IOCTL_HEADER + payload.max(4096);
    let mut buf = vec![0u8; size];
    for (i, v) in VERSION.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let size32 =
        u32::try_from(size).map_err(|_| StorageError::Invalid("table too large".into()))?;
    buf[12..16].copy_from_slice(&size32.to_ne_bytes());
    buf[16..20].copy_from_slice(&HEADER_LEN.to_ne_bytes());
    buf[28..32].copy_from_slice(&flags.to_ne_bytes());
    buf[48..48 + name.len()].copy_from_slice(name.as_bytes());
    Ok(buf)
}

fn run(command: u8, what: &str, name: &str, buf: &mut [u8]) -> Result<(), StorageError> {
    let control = control()?;
    dm_ioctl(control.as_fd(), command, buf).map_err(|e| error(what, name, e))
}

/// The `dev` field of an answer, in the kernel's `new_encode_dev` layout.
fn answered_dev(buf: &[u8]) -> (u64, u64) {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&buf[40..48]);
    let dev = u64::from_ne_bytes(raw);
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    (major, minor)
}

/// Appends the table of `targets` to a header as `struct dm_target_spec`s with their
/// parameter strings, each padded to 8 bytes.
fn table_payload(targets: &[Target]) -> Result<Vec<u8>, StorageError> {
    let mut payload = Vec::new();
    for t in targets {
        if t.kind.len() >= TARGET_TYPE_LEN || t.params.contains('\0') {
            return Err(StorageError::Invalid(format!(
                "bad device-mapper target {t:?}"
            )));
        }
        let mut spec = vec![0u8; TARGET_SPEC_LEN];
        spec[0..8].copy_from_slice(&t.start.to_ne_bytes());
        spec[8..16].copy_from_slice(&t.sectors.to_ne_bytes());
        spec[24..24 + t.kind.len()].copy_from_slice(t.kind.as_bytes());
        spec.extend_from_slice(t.params.as_bytes());
        spec.push(0);
        while spec.len() % 8 != 0 {
            spec.push(0);
        }
        let next = u32::try_from(spec.len())
            .map_err(|_| StorageError::Invalid("device-mapper parameters too long".into()))?;
        spec[20..24].copy_from_slice(&next.to_ne_bytes());
        payload.extend_from_slice(&spec);
    }
    Ok(payload)
}

/// Creates device `name` with `targets`, activates it and makes `/dev/mapper/<name>`.
/// Nothing is left behind on failure. `secure` marks tables holding keys, whose buffers the
/// kernel then wipes.
pub fn create(
    name: &str,
    targets: &[Target],
    read_only: bool,
    secure: bool,
) -> Result<Device, StorageError> {
    let mut buf = header(name, 0, 0)?;
    if let Err(e) = run(DEV_CREATE, "create", name, &mut buf) {
        // A device of that name left by an earlier teardown that could not finish (removal
        // deferred while it was open): remove it if it is free now, and try once more.
        if !is_errno(&e, Errno::EBUSY) || remove(name).is_err() {
            return Err(e);
        }
        buf = header(name, 0, 0)?;
        run(DEV_CREATE, "create", name, &mut buf)?;
    }
    let made = (|| {
        let (major, minor) = answered_dev(&buf);
        let payload = table_payload(targets)?;
        let mut flags = if read_only { READONLY } else { 0 };
        if secure {
            flags |= SECURE_DATA;
        }
        let mut load = header(name, flags, payload.len())?;
        let count = u32::try_from(targets.len())
            .map_err(|_| StorageError::Invalid("too many device-mapper targets".into()))?;
        load[20..24].copy_from_slice(&count.to_ne_bytes());
        load[DM_IOCTL_HEADER..DM_IOCTL_HEADER + payload.len()].copy_from_slice(&payload);
        run(TABLE_LOAD, "load table of", name, &mut load)?;
        if secure {
            load.fill(0);
        }
        // A "suspend" without the suspend flag resumes: it swaps the loaded table in.
        let mut resume = header(name, 0, 0)?;
        run(DEV_SUSPEND, "resume", name, &mut resume)?;
        let path = Path::new("/dev/mapper").join(name);
        // A stale node of that name may point at another device: replace it.
        let _ = std::fs::remove_file(&path);
        mknod(
            &path,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(major, minor),
        )
        .map_err(|e| error("make node of", name, e))?;
        Ok(Device {
            name: name.to_string(),
            path,
        })
    })();
    if made.is_err() {
        let _ = remove(name);
    }
    made
}

/// Removes device `name` and its node. A device still open (a lazy unmount not yet finished)
/// is marked for deferred removal, which the kernel completes when it is closed.
pub fn remove(name: &str) -> Result<(), StorageError> {
    let mut buf = header(name, 0, 0)?;
    let removed = match run(DEV_REMOVE, "remove", name, &mut buf) {
        Err(e) if is_errno(&e, Errno::EBUSY) => {
            let mut deferred = header(name, DEFERRED_REMOVE, 0)?;
            run(DEV_REMOVE, "remove (deferred)", name, &mut deferred)
        }
        other => other,
    };
    // The node goes only with the device (a device that stays keeps its node).
    if removed.is_ok() || removed.as_ref().is_err_and(|e| is_errno(e, Errno::ENXIO)) {
        let _ = std::fs::remove_file(Path::new("/dev/mapper").join(name));
    }
    removed
}

fn is_errno(e: &StorageError, errno: Errno) -> bool {
    matches!(e, StorageError::Io { source, .. } if source.raw_os_error() == Some(errno as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let buf = header("dm-linear-pmem0-0-4096", READONLY, 0).unwrap();
        assert_eq!(&buf[0..4], &4u32.to_ne_bytes());
        assert_eq!(
            u32::from_ne_bytes(buf[12..16].try_into().unwrap()) as usize,
            buf.len()
        );
        assert_eq!(&buf[16..20], &312u32.to_ne_bytes());
        assert_eq!(&buf[28..32], &1u32.to_ne_bytes());
        assert_eq!(&buf[48..70], b"dm-linear-pmem0-0-4096");
        assert!(header(&"x".repeat(128), 0, 0).is_err());
        assert!(header("a/b", 0, 0).is_err());
    }

    #[test]
    fn table_is_padded_and_chained() {
        let payload = table_payload(&[
            Target {
                start: 0,
                sectors: 8,
                kind: "linear",
                params: "/dev/pmem0 16".into(),
            },
            Target {
                start: 8,
                sectors: 8,
                kind: "zero",
                params: String::new(),
            },
        ])
        .unwrap();
        let next = u32::from_ne_bytes(payload[20..24].try_into().unwrap()) as usize;
        assert_eq!(
            next, 56,
            "40-byte spec + 14 bytes of params + NUL, padded to 8"
        );
        assert_eq!(&payload[40..53], b"/dev/pmem0 16");
        assert_eq!(&payload[next + 24..next + 28], b"zero");
        assert_eq!(payload.len() % 8, 0);
    }

    #[test]
    fn device_numbers_decode() {
        let mut buf = vec![0u8; 312];
        // major 253, minor 300 in the kernel's encoding.
        let dev: u64 = (300 & 0xff) | (253 << 8) | ((300 & !0xff) << 12);
        buf[40..48].copy_from_slice(&dev.to_ne_bytes());
        assert_eq!(answered_dev(&buf), (253, 300));
    }
}
