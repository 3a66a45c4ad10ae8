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

/// The `VerityInfo` of a layer built the way hcsshim's tooling builds it: an ext4 filesystem,
/// then (right after the filesystem's last block) a dm-verity superblock, then the hash tree,
/// its top level first. The root hash is SHA-256(salt ‖ first hash block), lowercase hex (SP
/// §9.3; the veritysetup on-disk format). Read from the device itself: in a confidential guest
/// the host's `VerityInfo` is not trusted, and the device is verified with what was read here,
/// so what the policy allowed is what is mounted.
///
/// Errors: no ext4 superblock, no verity superblock after the filesystem, an algorithm other
/// than sha256, a hash type other than 1, data and hash blocks of different sizes, or a read
/// failure.
pub fn from_superblock(dev: &Path) -> Result<VerityInfo, StorageError> {
    use sha2::Digest;
    use std::io::{Read, Seek, SeekFrom};
    let fail = |what: &str| StorageError::Invalid(format!("{}: {what}", dev.display()));
    let mut f = std::fs::File::open(dev).map_err(|e| fail(&format!("open: {e}")))?;
    let mut read_at = |offset: u64, buf: &mut [u8]| -> Result<(), StorageError> {
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(buf))
            .map_err(|e| fail(&format!("read at {offset}: {e}")))
    };
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut sb = [0u8; 1024];
    read_at(1024, &mut sb)?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(fail("no ext4 superblock"));
    }
    let log = u32_at(&sb, 0x18);
    if log > 6 {
        return Err(fail("bad ext4 block size"));
    }
    let block_size = 1024u64 << log;
    let mut blocks = u64::from(u32_at(&sb, 0x4));
    if u32_at(&sb, 0x60) & 0x80 != 0 {
        blocks |= u64::from(u32_at(&sb, 0x150)) << 32;
    }
    let fs_size = blocks
        .checked_mul(block_size)
        .ok_or_else(|| fail("ext4 size overflows"))?;
    let mut vsb = [0u8; 512];
    read_at(fs_size, &mut vsb)?;
    if &vsb[..8] != b"verity\0\0" {
        return Err(fail("no dm-verity superblock after the filesystem"));
    }
    if u32_at(&vsb, 12) != 1 {
        return Err(fail("dm-verity hash type is not 1"));
    }
    let algorithm = vsb[32..64].split(|b| *b == 0).next().unwrap_or_default();
    if algorithm != b"sha256" {
        return Err(fail("dm-verity algorithm is not sha256"));
    }
    let hash_block = u32_at(&vsb, 68);
    if !(512..=4096).contains(&hash_block) || !hash_block.is_power_of_two() {
        return Err(fail("bad dm-verity hash block size"));
    }
    if u32_at(&vsb, 64) != hash_block {
        return Err(fail("dm-verity data and hash blocks differ in size"));
    }
    let salt_size = usize::from(u16::from_le_bytes([vsb[80], vsb[81]]));
    if salt_size > 256 {
        return Err(fail("dm-verity salt longer than 256 bytes"));
    }
    let mut top = vec![0u8; hash_block as usize];
    read_at(fs_size + u64::from(hash_block), &mut top)?;
    let salt = &vsb[88..88 + salt_size];
    let mut hasher = sha2::Sha256::new();
    hasher.update(salt);
    hasher.update(&top);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok(VerityInfo {
        ext4_size_in_bytes: i64::try_from(fs_size).map_err(|_| fail("ext4 size overflows"))?,
        version: 1,
        algorithm: "sha256".into(),
        super_block: true,
        root_digest: hex(&hasher.finalize()),
        salt: hex(salt),
        block_size: i64::from(hash_block),
    })
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
