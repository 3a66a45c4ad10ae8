//! `Encrypted` scratch disks: dm-crypt (AES-XTS, 4 KiB sectors) under a random 512-bit key that
//! exists only in the guest's memory and the kernel's, so what the host stores is unreadable
//! once the VM is gone.
//!
//! The original formats the disk as LUKS2 with dm-integrity through `cryptsetup`, with a random
//! key file it deletes at once. With a key that is never kept, the LUKS header only ever
//! describes an unopenable volume, so a plain dm-crypt mapping gives the same confidentiality
//! without cryptsetup in the guest. It does not add the original's integrity (HMAC) layer.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::devmapper::{self, Device, Target};
use super::StorageError;

const KEY_BYTES: usize = 64;

fn random_key() -> Result<[u8; KEY_BYTES], StorageError> {
    let mut key = [0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|source| StorageError::Io {
            what: "read",
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(key)
}

/// Maps `dev` through dm-crypt as `name` with a fresh random key.
pub fn open(name: &str, dev: &Path) -> Result<Device, StorageError> {
    let bytes = std::fs::File::open(dev)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .map_err(|source| StorageError::Io {
            what: "size of",
            path: dev.into(),
            source,
        })?;
    if bytes < 4096 {
        return Err(StorageError::Invalid(format!(
            "{} is too small to encrypt",
            dev.display()
        )));
    }
    // Whole 4 KiB sectors; a tail shorter than that is left out of the mapping.
    let sectors = bytes / 4096 * 8;
    let mut key = random_key()?;
    let mut hex = String::with_capacity(KEY_BYTES * 2);
    for b in key {
        hex.push_str(&format!("{b:02x}"));
    }
    let target = Target {
        start: 0,
        sectors,
        kind: "crypt",
        params: format!(
            "aes-xts-plain64 {hex} 0 {} 0 1 sector_size:4096",
            dev.display()
        ),
    };
    let made = devmapper::create(name, std::slice::from_ref(&target), false, true);
    // Best effort: overwrite our copies of the key before their buffers are freed.
    key.fill(0);
    target.params.into_bytes().fill(0);
    hex.into_bytes().fill(0);
    made
}
