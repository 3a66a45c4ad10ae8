//! dm-verity over a read-only layer whose hash tree is appended to its ext4 filesystem (the
//! layout hcsshim's tools write: ext4, an optional verity superblock, the Merkle tree).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::devmapper::{self, Device, Target};
use super::StorageError;
use crate::protocol::json::null_default;

/// `VerityInfo` of `MappedVirtualDisk` and `VPMemDevice` (hcsshim's `DeviceVerityInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VerityInfo {
    pub ext4_size_in_bytes: i64,
    pub version: i64,
    #[serde(deserialize_with = "null_default")]
    pub algorithm: String,
    pub super_block: bool,
    #[serde(deserialize_with = "null_default")]
    pub root_digest: String,
    #[serde(deserialize_with = "null_default")]
    pub salt: String,
    pub block_size: i64,
}

fn is_hex(s: &str) -> bool {
    s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl VerityInfo {
    /// The dm-verity target over `dev` (data and hashes on the same device), after checking
    /// every field: the kernel's own messages for a bad table are only in its log.
    pub fn target(&self, dev: &Path) -> Result<Target, StorageError> {
        let bad = |why: &str| StorageError::Invalid(format!("VerityInfo: {why}"));
        let block = u64::try_from(self.block_size).map_err(|_| bad("negative BlockSize"))?;
        if !(512..=4096).contains(&block) || !block.is_power_of_two() {
            return Err(bad("BlockSize must be a power of two from 512 to 4096"));
        }
        let size =
            u64::try_from(self.ext4_size_in_bytes).map_err(|_| bad("negative Ext4SizeInBytes"))?;
        if size == 0 || size % block != 0 {
            return Err(bad(
                "Ext4SizeInBytes must be a non-zero multiple of BlockSize",
            ));
        }
        if !(0..=1).contains(&self.version) {
            return Err(bad("Version must be 0 or 1"));
        }
        let algorithm = if self.algorithm.is_empty() {
            "sha256"
        } else {
            self.algorithm.as_str()
        };
        if !algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("Algorithm has unexpected characters"));
        }
        if self.root_digest.is_empty() || !is_hex(&self.root_digest) {
            return Err(bad("RootDigest must be hexadecimal"));
        }
        if !is_hex(&self.salt) {
            return Err(bad("Salt must be hexadecimal"));
        }
        let salt = if self.salt.is_empty() {
            "-"
        } else {
            &self.salt
        };
        let data_blocks = size / block;
        // The tree starts after the filesystem, past the one-block superblock if there is one.
        let hash_start = data_blocks + u64::from(self.super_block);
        let dev = dev.display();
        Ok(Target {
            start: 0,
            sectors: size / 512,
            kind: "verity",
            params: format!(
                "{} {dev} {dev} {block} {block} {data_blocks} {hash_start} {algorithm} {} {salt}",
                self.version, self.root_digest
            ),
        })
    }

    /// Stacks a read-only verity device named `name` on `dev`.
    pub fn open(&self, name: &str, dev: &Path) -> Result<Device, StorageError> {
        let target = self.target(dev)?;
        // The verity device's sectors are BlockSize bytes: a filesystem with smaller blocks
        // cannot be mounted on it, and the kernel would only say EINVAL.
        if let Some(fs_block) = ext4_block_size(dev) {
            if i64::from(fs_block) < self.block_size {
                return Err(StorageError::Invalid(format!(
                    "the ext4 block size on {} ({fs_block}) is smaller than the verity BlockSize ({})",
                    dev.display(),
                    self.block_size
                )));
            }
        }
        devmapper::create(name, &[target], true, false)
    }
}

/// The block size of the ext4 filesystem on `dev`, if there is one.
pub fn ext4_block_size(dev: &Path) -> Option<u32> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).ok()?;
    let mut sb = [0u8; 60];
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    let magic = u16::from_le_bytes([sb[56], sb[57]]);
    let log = u32::from_le_bytes([sb[24], sb[25], sb[26], sb[27]]);
    (magic == 0xEF53 && log <= 6).then(|| 1024 << log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> VerityInfo {
        serde_json::from_str(
            r#"{"Ext4SizeInBytes":8388608,"Version":1,"Algorithm":"sha256","SuperBlock":true,
                "RootDigest":"ab12","Salt":"00ff","BlockSize":4096}"#,
        )
        .unwrap()
    }

    #[test]
    fn table_line() {
        let t = info().target(Path::new("/dev/sdb")).unwrap();
        assert_eq!(t.sectors, 16384);
        assert_eq!(
            t.params,
            "1 /dev/sdb /dev/sdb 4096 4096 2048 2049 sha256 ab12 00ff"
        );
        let mut no_sb = info();
        no_sb.super_block = false;
        no_sb.salt.clear();
        assert!(no_sb
            .target(Path::new("/dev/sdb"))
            .unwrap()
            .params
            .ends_with("2048 2048 sha256 ab12 -"));
    }

    #[test]
    fn bad_fields_are_refused() {
        for edit in [
            |i: &mut VerityInfo| i.block_size = 3000,
            |i: &mut VerityInfo| i.block_size = -1,
            |i: &mut VerityInfo| i.ext4_size_in_bytes = 4097,
            |i: &mut VerityInfo| i.root_digest = "xyz".into(),
            |i: &mut VerityInfo| i.root_digest.clear(),
            |i: &mut VerityInfo| i.salt = "0".into(),
            |i: &mut VerityInfo| i.algorithm = "sha256 0 0".into(),
            |i: &mut VerityInfo| i.version = 7,
        ] {
            let mut i = info();
            edit(&mut i);
            assert!(i.target(Path::new("/dev/sdb")).is_err(), "{i:?}");
        }
    }
}
