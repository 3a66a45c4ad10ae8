//! An in-process ext4 formatter: the guest has no `mkfs.ext4`, yet the host may ask for an empty
//! scratch disk to be formatted (`EnsureFilesystem`).
//!
//! Written from the on-disk format description (the kernel's ext4 "data structures"
//! documentation). The result is a plain, journal-less ext4 filesystem:
//!
//! * 4 KiB blocks, `first_data_block` 0, dynamic revision, 256-byte inodes (32 extra bytes),
//!   32768 blocks per group, one inode per 16 KiB, no `flex_bg`: every group holds its own
//!   bitmaps and inode table, right after its superblock backup and descriptor copy (if any).
//! * compat `ext_attr`, `dir_index`; incompat `filetype`, `extent`; ro_compat `sparse_super`,
//!   `large_file`, `huge_file`, `uninit_bg`, `dir_nlink`, `extra_isize`. No journal, no
//!   `resize_inode`, no `64bit` (so at most 2^32 - 1 blocks, 16 TiB), no `metadata_csum`.
//! * `uninit_bg` keeps formatting cheap on big disks: only group 0 gets an inode bitmap and a
//!   (zeroed) inode table; every other group is flagged `INODE_UNINIT` with all its inodes
//!   unused, and the kernel's lazy inode-table init zeroes those tables in the background.
//!   Groups without a superblock backup (except the last one) are also `BLOCK_UNINIT`; the
//!   others get a computed block bitmap. Every descriptor carries its crc16.
//! * The root directory (inode 2) holds `.`, `..` and `lost+found` (inode 11, four blocks as
//!   mke2fs makes it, so that e2fsck can reconnect files without allocating). Inodes 1..=10 are
//!   reserved. No blocks are reserved for root: this is a scratch disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::StorageError;

const BLOCK_SIZE: u32 = 4096;
/// `s_log_block_size`: the block size is `1024 << 2`.
const LOG_BLOCK_SIZE: u32 = 2;
/// One block of bitmap covers `8 * BLOCK_SIZE` blocks.
const BLOCKS_PER_GROUP: u32 = 8 * BLOCK_SIZE;
const INODE_SIZE: u32 = 256;
const INODES_PER_BLOCK: u32 = BLOCK_SIZE / INODE_SIZE;
/// One inode per this many bytes of filesystem (mke2fs's default ratio).
const BYTES_PER_INODE: u64 = 16 * 1024;
/// Group descriptor size without the `64bit` feature.
const DESC_SIZE: u32 = 32;
/// Inodes below this are reserved; it is also lost+found's number.
const FIRST_INO: u32 = 11;
const ROOT_INO: u32 = 2;
const LOST_FOUND_INO: u32 = 11;
/// lost+found is made 16 KiB long so that e2fsck has room to reconnect files.
const LOST_FOUND_BLOCKS: u32 = 4;
/// Bytes used past the 128-byte base inode (up to and including `i_projid`).
const EXTRA_ISIZE: u16 = 32;
/// A last group with fewer spare blocks than this (beyond its metadata) is dropped, as
/// mke2fs does.
const MIN_LAST_GROUP_DATA: u32 = 50;
/// The smallest filesystem this formatter makes.
pub const MIN_BYTES: u64 = 2 * 1024 * 1024;

const EXT4_MAGIC: u16 = 0xEF53;
const STATE_CLEAN: u16 = 1;
const ERRORS_CONTINUE: u16 = 1;
const OS_LINUX: u32 = 0;
const REV_DYNAMIC: u32 = 1;

const COMPAT_EXT_ATTR: u32 = 0x0008;
const COMPAT_DIR_INDEX: u32 = 0x0020;
const INCOMPAT_FILETYPE: u32 = 0x0002;
const INCOMPAT_EXTENTS: u32 = 0x0040;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
const RO_COMPAT_GDT_CSUM: u32 = 0x0010;
const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;

const FEATURE_COMPAT: u32 = COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
const FEATURE_INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS;
const FEATURE_RO_COMPAT: u32 = RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_HUGE_FILE
    | RO_COMPAT_GDT_CSUM
    | RO_COMPAT_DIR_NLINK
    | RO_COMPAT_EXTRA_ISIZE;

/// `s_default_mount_opts`: user_xattr and acl.
const DEFAULT_MOUNT_OPTS: u32 = 0x0004 | 0x0008;
/// `s_def_hash_version`: half MD4.
const HASH_HALF_MD4: u8 = 1;
const FLAGS_SIGNED_HASH: u32 = 0x0001;
const FLAGS_UNSIGNED_HASH: u32 = 0x0002;

const BG_INODE_UNINIT: u16 = 0x0001;
const BG_BLOCK_UNINIT: u16 = 0x0002;
const BG_INODE_ZEROED: u16 = 0x0004;
/// Offset of `bg_checksum` in a group descriptor: the crc covers the bytes before it.
const BG_CHECKSUM_OFFSET: usize = 0x1E;

const S_IFDIR: u16 = 0o040000;
const EXTENTS_FL: u32 = 0x0008_0000;
const EXTENT_MAGIC: u16 = 0xF30A;
const FT_DIR: u8 = 2;

/// Formats the block device (or file) at `dev` with `fstype`. Only ext4 is supported.
pub fn format(dev: &Path, fstype: &str) -> Result<(), StorageError> {
    if fstype != "ext4" {
        return Err(StorageError::Invalid(format!(
            "cannot format {} as {fstype:?}: this agent can only make ext4 filesystems",
            dev.display()
        )));
    }
    let io_err = |what: &'static str| {
        move |source: io::Error| StorageError::Io {
            what,
            path: dev.to_path_buf(),
            source,
        }
    };
    // O_EXCL on a block device fails with EBUSY while it is mounted or otherwise claimed.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
        .map_err(io_err("open for formatting"))?;
    let bytes = (&file)
        .seek(SeekFrom::End(0))
        .map_err(io_err("get the size of"))?;
    let mut uuid = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut uuid))
        .map_err(io_err("read /dev/urandom to format"))?;
    // A random (version 4, RFC 4122 variant) UUID.
    uuid[6] = (uuid[6] & 0x0F) | 0x40;
    uuid[8] = (uuid[8] & 0x3F) | 0x80;
    format_ext4(&file, bytes, uuid).map_err(|e| {
        if e.kind() == io::ErrorKind::InvalidInput {
            StorageError::Invalid(format!("cannot format {} as ext4: {e}", dev.display()))
        } else {
            io_err("format ext4 on")(e)
        }
    })
}

/// Writes an ext4 filesystem over the first `bytes` bytes of `file` (rounded down to whole
/// blocks, and short of a last block group too small to be worth having), then syncs it.
/// `uuid` becomes the filesystem UUID. Sizes under [`MIN_BYTES`] or needing more than 2^32
/// blocks fail with [`io::ErrorKind::InvalidInput`].
pub fn format_ext4(file: &File, bytes: u64, uuid: [u8; 16]) -> io::Result<()> {
    let layout = Layout::new(bytes)?;
    let now = Timestamp::now();

    // Stale signatures at the end of the device (md, GPT backup) would confuse probing. The
    // last blocks are free data blocks (or past the filesystem); metadata is written after.
    let tail = (bytes.saturating_sub(64 * 1024)) / u64::from(BLOCK_SIZE) * u64::from(BLOCK_SIZE);
    write_zeros(file, tail, bytes - tail)?;

    let descs: Vec<GroupDesc> = (0..layout.groups).map(|g| layout.group_desc(g)).collect();
    let gdt = layout.descriptor_table(&descs, &uuid);
    let free_blocks: u64 = descs.iter().map(|d| u64::from(d.free_blocks)).sum();
    let free_inodes: u64 = descs.iter().map(|d| u64::from(d.free_inodes)).sum();
    let totals = Totals {
        free_blocks: u32::try_from(free_blocks).map_err(|_| invalid("too many free blocks"))?,
        free_inodes: u32::try_from(free_inodes).map_err(|_| invalid("too many inodes"))?,
    };
    let hash_seed = hash_seed(&uuid);

    // Group 0, from block 0 up to lost+found's last block, is written in one piece.
    let bs = usize_of(BLOCK_SIZE);
    let root_block = layout.overhead(0);
    let lost_found_block = root_block + 1;
    let region_blocks = lost_found_block + LOST_FOUND_BLOCKS;
    let mut region = vec![0u8; usize_of(region_blocks) * bs];
    region[1024..2048].copy_from_slice(&layout.superblock(&uuid, &hash_seed, totals, 0, now));
    region[bs..bs + gdt.len()].copy_from_slice(&gdt);
    let block_bitmap = layout.block_bitmap(0);
    let at = |block: u32| usize_of(block) * bs;
    layout.fill_block_bitmap(
        &mut region[at(block_bitmap)..at(block_bitmap + 1)],
        0,
        region_blocks,
    );
    let inode_bitmap = &mut region[at(block_bitmap + 1)..at(block_bitmap + 2)];
    set_bits(inode_bitmap, 0, FIRST_INO);
    set_bits(inode_bitmap, layout.inodes_per_group, BLOCKS_PER_GROUP);
    let inode_table = at(layout.inode_table(0));
    let inode_at = |ino: u32| inode_table + usize_of(ino - 1) * usize_of(INODE_SIZE);
    let root = dir_inode(0o755, 3, root_block, 1, now);
    region[inode_at(ROOT_INO)..inode_at(ROOT_INO + 1)].copy_from_slice(&root);
    let lost_found = dir_inode(0o700, 2, lost_found_block, LOST_FOUND_BLOCKS, now);
    region[inode_at(LOST_FOUND_INO)..inode_at(LOST_FOUND_INO + 1)].copy_from_slice(&lost_found);
    let root_dir = &mut region[at(root_block)..at(root_block + 1)];
    let mut off = dir_entry(root_dir, 0, ROOT_INO, b".", None);
    off = dir_entry(root_dir, off, ROOT_INO, b"..", None);
    dir_entry(root_dir, off, LOST_FOUND_INO, b"lost+found", Some(bs));
    let lf_dir = &mut region[at(lost_found_block)..at(lost_found_block + 1)];
    let off = dir_entry(lf_dir, 0, LOST_FOUND_INO, b".", None);
    dir_entry(lf_dir, off, ROOT_INO, b"..", Some(bs));
    for block in 1..LOST_FOUND_BLOCKS {
        // An empty directory block: one unused entry spanning it.
        let b = &mut region[at(lost_found_block + block)..at(lost_found_block + block + 1)];
        put_u16(b, 4, low16(BLOCK_SIZE)); // rec_len
    }
    file.write_all_at(&region, 0)?;

    // The other groups: superblock backup and descriptor copy where sparse_super puts them,
    // and a block bitmap unless the group is BLOCK_UNINIT. Inode bitmaps and tables are left
    // to the kernel (INODE_UNINIT).
    for (g, desc) in (0..layout.groups).zip(&descs).skip(1) {
        let start = u64::from(g) * u64::from(BLOCKS_PER_GROUP) * u64::from(BLOCK_SIZE);
        let mut chunk = Vec::new();
        if has_super(g) {
            chunk.resize(bs, 0);
            // s_block_group_nr is 16 bits: groups past 65535 keep the low bits, as in C.
            let group_nr = low16(g);
            chunk[..1024]
                .copy_from_slice(&layout.superblock(&uuid, &hash_seed, totals, group_nr, now));
            chunk.extend_from_slice(&gdt);
        }
        if desc.flags & BG_BLOCK_UNINIT == 0 {
            let at = chunk.len();
            chunk.resize(at + bs, 0);
            layout.fill_block_bitmap(&mut chunk[at..], g, layout.overhead(g));
        }
        if !chunk.is_empty() {
            file.write_all_at(&chunk, start)?;
        }
    }
    file.sync_all()
}

/// Where everything goes, from the filesystem size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    blocks: u32,
    groups: u32,
    inodes_per_group: u32,
    /// Blocks of inode table per group.
    itable_blocks: u32,
    /// Blocks of group descriptors (in group 0 and in each backup).
    gdt_blocks: u32,
}

/// A group descriptor's variable fields; the locations come from [`Layout`].
#[derive(Debug, Clone, Copy)]
struct GroupDesc {
    free_blocks: u32,
    free_inodes: u32,
    used_dirs: u32,
    flags: u16,
    itable_unused: u32,
}

#[derive(Debug, Clone, Copy)]
struct Totals {
    free_blocks: u32,
    free_inodes: u32,
}

impl Layout {
    fn new(bytes: u64) -> io::Result<Self> {
        if bytes < MIN_BYTES {
            return Err(invalid(&format!(
                "{bytes} bytes is too small for ext4 (the minimum is {} MiB)",
                MIN_BYTES >> 20
            )));
        }
        let mut blocks = u32::try_from(bytes / u64::from(BLOCK_SIZE)).map_err(|_| {
            invalid(&format!(
                "{bytes} bytes needs more than 2^32 blocks of 4 KiB (16 TiB), \
                 which requires the 64bit feature this formatter does not support"
            ))
        })?;
        loop {
            let layout = Self::for_blocks(blocks);
            let last = layout.groups - 1;
            if last > 0 && layout.group_len(last) < layout.overhead(last) + MIN_LAST_GROUP_DATA {
                blocks = last * BLOCKS_PER_GROUP;
                continue;
            }
            if layout.overhead(0) + 1 + LOST_FOUND_BLOCKS + MIN_LAST_GROUP_DATA
                > layout.group_len(0)
            {
                return Err(invalid(&format!("{bytes} bytes is too small for ext4")));
            }
            return Ok(layout);
        }
    }

    fn for_blocks(blocks: u32) -> Self {
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let gdt_blocks = (groups * DESC_SIZE).div_ceil(BLOCK_SIZE);
        let inodes = u64::from(blocks) * u64::from(BLOCK_SIZE) / BYTES_PER_INODE;
        let per_group = inodes.div_ceil(u64::from(groups));
        // Whole inode-table blocks; at most one bitmap block's worth.
        let per_group = u32::try_from(per_group)
            .unwrap_or(BLOCKS_PER_GROUP)
            .clamp(INODES_PER_BLOCK, BLOCKS_PER_GROUP)
            .next_multiple_of(INODES_PER_BLOCK);
        Self {
            blocks,
            groups,
            inodes_per_group: per_group,
            itable_blocks: per_group / INODES_PER_BLOCK,
            gdt_blocks,
        }
    }

    fn group_start(&self, g: u32) -> u32 {
        g * BLOCKS_PER_GROUP
    }

    fn group_len(&self, g: u32) -> u32 {
        (self.blocks - self.group_start(g)).min(BLOCKS_PER_GROUP)
    }

    /// Blocks at the start of group `g` taken by metadata: superblock and descriptors (if
    /// the group has a backup), the two bitmaps and the inode table.
    fn overhead(&self, g: u32) -> u32 {
        self.super_blocks(g) + 2 + self.itable_blocks
    }

    fn super_blocks(&self, g: u32) -> u32 {
        if has_super(g) {
            1 + self.gdt_blocks
        } else {
            0
        }
    }

    fn block_bitmap(&self, g: u32) -> u32 {
        self.group_start(g) + self.super_blocks(g)
    }

    fn inode_table(&self, g: u32) -> u32 {
        self.block_bitmap(g) + 2
    }

    fn group_desc(&self, g: u32) -> GroupDesc {
        let last = g == self.groups - 1;
        if g == 0 {
            let used_blocks = self.overhead(0) + 1 + LOST_FOUND_BLOCKS;
            let free_inodes = self.inodes_per_group - FIRST_INO;
            GroupDesc {
                free_blocks: self.group_len(0) - used_blocks,
                free_inodes,
                used_dirs: 2,
                flags: BG_INODE_ZEROED,
                itable_unused: free_inodes,
            }
        } else {
            // The kernel and e2fsck compute a BLOCK_UNINIT bitmap themselves, but e2fsck
            // insists that the last group's is initialised.
            let block_uninit = if has_super(g) || last {
                0
            } else {
                BG_BLOCK_UNINIT
            };
            GroupDesc {
                free_blocks: self.group_len(g) - self.overhead(g),
                free_inodes: self.inodes_per_group,
                used_dirs: 0,
                flags: BG_INODE_UNINIT | block_uninit,
                itable_unused: self.inodes_per_group,
            }
        }
    }

    /// The descriptor table, padded to whole blocks, with each descriptor's checksum.
    fn descriptor_table(&self, descs: &[GroupDesc], uuid: &[u8; 16]) -> Vec<u8> {
        let size = usize_of(DESC_SIZE);
        let mut table = vec![0u8; usize_of(self.gdt_blocks) * usize_of(BLOCK_SIZE)];
        for ((g, d), raw) in (0u32..).zip(descs).zip(table.chunks_exact_mut(size)) {
            put_u32(raw, 0x00, self.block_bitmap(g));
            put_u32(raw, 0x04, self.block_bitmap(g) + 1);
            put_u32(raw, 0x08, self.inode_table(g));
            put_u16(raw, 0x0C, low16(d.free_blocks));
            put_u16(raw, 0x0E, low16(d.free_inodes));
            put_u16(raw, 0x10, low16(d.used_dirs));
            put_u16(raw, 0x12, d.flags);
            put_u16(raw, 0x1C, low16(d.itable_unused));
            let mut crc = crc16(0xFFFF, uuid);
            crc = crc16(crc, &g.to_le_bytes());
            crc = crc16(crc, &raw[..BG_CHECKSUM_OFFSET]);
            put_u16(raw, BG_CHECKSUM_OFFSET, crc);
        }
        table
    }

    /// Fills `bitmap` (one block) for group `g`: its first `used` blocks are in use, and the
    /// bits past the end of a short last group are set.
    fn fill_block_bitmap(&self, bitmap: &mut [u8], g: u32, used: u32) {
        set_bits(bitmap, 0, used);
        set_bits(bitmap, self.group_len(g), BLOCKS_PER_GROUP);
    }

    fn superblock(
        &self,
        uuid: &[u8; 16],
        hash_seed: &[u8; 16],
        totals: Totals,
        group_nr: u16,
        now: Timestamp,
    ) -> [u8; 1024] {
        let mut sb = [0u8; 1024];
        let s = &mut sb[..];
        put_u32(s, 0x00, self.groups * self.inodes_per_group); // s_inodes_count
        put_u32(s, 0x04, self.blocks); // s_blocks_count_lo
        put_u32(s, 0x08, 0); // s_r_blocks_count_lo
        put_u32(s, 0x0C, totals.free_blocks); // s_free_blocks_count_lo
        put_u32(s, 0x10, totals.free_inodes); // s_free_inodes_count
        put_u32(s, 0x14, 0); // s_first_data_block
        put_u32(s, 0x18, LOG_BLOCK_SIZE); // s_log_block_size
        put_u32(s, 0x1C, LOG_BLOCK_SIZE); // s_log_cluster_size
        put_u32(s, 0x20, BLOCKS_PER_GROUP); // s_blocks_per_group
        put_u32(s, 0x24, BLOCKS_PER_GROUP); // s_clusters_per_group
        put_u32(s, 0x28, self.inodes_per_group); // s_inodes_per_group
        put_u32(s, 0x30, now.sb_lo); // s_wtime
        put_u16(s, 0x36, 0xFFFF); // s_max_mnt_count: -1, no mount-count checks
        put_u16(s, 0x38, EXT4_MAGIC);
        put_u16(s, 0x3A, STATE_CLEAN);
        put_u16(s, 0x3C, ERRORS_CONTINUE);
        put_u32(s, 0x40, now.sb_lo); // s_lastcheck
        put_u32(s, 0x48, OS_LINUX);
        put_u32(s, 0x4C, REV_DYNAMIC);
        put_u32(s, 0x54, FIRST_INO);
        put_u16(s, 0x58, low16(INODE_SIZE));
        put_u16(s, 0x5A, group_nr); // s_block_group_nr
        put_u32(s, 0x5C, FEATURE_COMPAT);
        put_u32(s, 0x60, FEATURE_INCOMPAT);
        put_u32(s, 0x64, FEATURE_RO_COMPAT);
        s[0x68..0x78].copy_from_slice(uuid);
        s[0xEC..0xFC].copy_from_slice(hash_seed);
        s[0xFC] = HASH_HALF_MD4;
        put_u32(s, 0x100, DEFAULT_MOUNT_OPTS);
        put_u32(s, 0x108, now.sb_lo); // s_mkfs_time
        put_u16(s, 0x15C, EXTRA_ISIZE); // s_min_extra_isize
        put_u16(s, 0x15E, EXTRA_ISIZE); // s_want_extra_isize
                                        // The directory hash follows the signedness of `char`, as on the machine that made it.
        let signed_char = std::ffi::c_char::MIN != 0;
        put_u32(
            s,
            0x160,
            if signed_char {
                FLAGS_SIGNED_HASH
            } else {
                FLAGS_UNSIGNED_HASH
            },
        );
        s[0x274] = now.sb_hi; // s_wtime_hi
        s[0x276] = now.sb_hi; // s_mkfs_time_hi
        s[0x277] = now.sb_hi; // s_lastcheck_hi
        sb
    }
}

/// Groups 0, 1 and the powers of 3, 5 and 7 hold superblock backups (sparse_super).
fn has_super(g: u32) -> bool {
    fn power_of(mut g: u32, base: u32) -> bool {
        while g > 1 && g % base == 0 {
            g /= base;
        }
        g == 1
    }
    g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
}

/// A directory inode (owned by root) with `blocks` contiguous blocks from `first_block`,
/// mapped by one extent held in the inode.
fn dir_inode(perm: u16, links: u16, first_block: u32, blocks: u32, now: Timestamp) -> [u8; 256] {
    let mut raw = [0u8; 256];
    let i = &mut raw[..];
    put_u16(i, 0x00, S_IFDIR | perm); // i_mode
    put_u32(i, 0x04, blocks * BLOCK_SIZE); // i_size_lo
    for at in [0x08, 0x0C, 0x10] {
        put_u32(i, at, now.inode_lo); // i_atime, i_ctime, i_mtime
    }
    put_u16(i, 0x1A, links); // i_links_count
    put_u32(i, 0x1C, blocks * (BLOCK_SIZE / 512)); // i_blocks_lo, in sectors
    put_u32(i, 0x20, EXTENTS_FL); // i_flags
                                  // i_block: extent header, then one leaf extent.
    put_u16(i, 0x28, EXTENT_MAGIC);
    put_u16(i, 0x2A, 1); // eh_entries
    put_u16(i, 0x2C, 4); // eh_max: (60 - 12) / 12
    put_u16(i, 0x2E, 0); // eh_depth
    put_u32(i, 0x34, 0); // ee_block
    put_u16(i, 0x38, low16(blocks)); // ee_len
    put_u16(i, 0x3A, 0); // ee_start_hi
    put_u32(i, 0x3C, first_block); // ee_start_lo
    put_u16(i, 0x80, EXTRA_ISIZE); // i_extra_isize
    for at in [0x84, 0x88, 0x8C, 0x94] {
        put_u32(i, at, now.inode_extra); // i_{c,m,a,cr}time_extra
    }
    put_u32(i, 0x90, now.inode_lo); // i_crtime
    raw
}

/// Writes a directory entry at `off` in `block` and returns the offset after it. `end`
/// makes it the last entry, its record running to that offset.
fn dir_entry(block: &mut [u8], off: usize, ino: u32, name: &[u8], end: Option<usize>) -> usize {
    let len = (8 + name.len()).next_multiple_of(4);
    let rec_len = end.map_or(len, |end| end - off);
    put_u32(block, off, ino);
    put_u16(block, off + 4, u16::try_from(rec_len).unwrap_or(u16::MAX));
    block[off + 6] = u8::try_from(name.len()).unwrap_or(u8::MAX);
    block[off + 7] = FT_DIR;
    block[off + 8..off + 8 + name.len()].copy_from_slice(name);
    off + rec_len
}

/// Sets bits `from..to` of a little-endian bitmap.
fn set_bits(bitmap: &mut [u8], from: u32, to: u32) {
    for bit in from..to {
        bitmap[usize_of(bit / 8)] |= 1 << (bit % 8);
    }
}

/// CRC-16 (polynomial 0x8005, bit-reflected), as ext4 uses for group descriptors.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc = (crc >> 8) ^ CRC16_TABLE[usize::from(low8(crc) ^ b)];
    }
    crc
}

const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0u16;
    while i < 256 {
        let mut c = i;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i as usize] = c;
        i += 1;
    }
    table
};

/// The htree hash seed: must be non-zero and need not be more secret than the UUID it is
/// derived from (format() has no other randomness to pass), but should not equal it.
fn hash_seed(uuid: &[u8; 16]) -> [u8; 16] {
    let mut seed = [0u8; 16];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for &b in uuid {
        state = splitmix(state ^ u64::from(b));
    }
    for chunk in seed.chunks_exact_mut(8) {
        state = splitmix(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    if seed == [0; 16] {
        seed[0] = 1;
    }
    seed
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The format time in the encodings the superblock and inodes use.
#[derive(Debug, Clone, Copy)]
struct Timestamp {
    /// Superblock times: low 32 bits (unsigned) plus a high byte.
    sb_lo: u32,
    sb_hi: u8,
    /// Inode times: low 32 bits (read as signed), and in `*_extra` two epoch bits and the
    /// nanoseconds.
    inode_lo: u32,
    inode_extra: u32,
}

impl Timestamp {
    fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        let lo = u32::try_from(secs & 0xFFFF_FFFF).unwrap_or(0);
        let secs_signed = i64::try_from(secs).unwrap_or(i64::MAX);
        let lo_signed = i64::from(i32::from_le_bytes(lo.to_le_bytes()));
        let epoch = u32::try_from(((secs_signed - lo_signed) >> 32) & 3).unwrap_or(0);
        Self {
            sb_lo: lo,
            sb_hi: u8::try_from((secs >> 32) & 0xFF).unwrap_or(0),
            inode_lo: lo,
            inode_extra: epoch | (since.subsec_nanos() << 2),
        }
    }
}

fn write_zeros(file: &File, mut offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; 64 * 1024];
    let end = offset + len;
    while offset < end {
        let n = usize::try_from(end - offset).map_or(zeros.len(), |n| n.min(zeros.len()));
        file.write_all_at(&zeros[..n], offset)?;
        offset += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok(())
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Descriptor counts are 16-bit without the 64bit feature; the values here always fit
/// (at most 32768 blocks or inodes per group).
fn low16(v: u32) -> u16 {
    u16::try_from(v & 0xFFFF).unwrap_or(0)
}

fn low8(v: u16) -> u8 {
    u8::try_from(v & 0xFF).unwrap_or(0)
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::process::Command;

    const MIB: u64 = 1024 * 1024;

    /// An e2fsprogs tool: /sbin is often not in a test runner's PATH.
    fn tool(name: &str) -> PathBuf {
        ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} not found: these tests need e2fsprogs"))
    }

    /// `e2fsck -fn` must pass without a single complaint.
    fn assert_fsck_clean(image: &Path) {
        let out = Command::new(tool("e2fsck"))
            .arg("-fn")
            .arg(image)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report = format!("e2fsck -fn {}:\n{stdout}{stderr}", image.display());
        assert!(out.status.success(), "{report}");
        for line in stdout.lines().chain(stderr.lines()) {
            let expected = line.starts_with("Pass ")
                || line.starts_with("e2fsck ")
                || line.contains(" files (")
                || line.trim().is_empty();
            assert!(expected, "unexpected line {line:?} in {report}");
        }
    }

    fn dumpe2fs(image: &Path, header_only: bool) -> String {
        let mut cmd = Command::new(tool("dumpe2fs"));
        if header_only {
            cmd.arg("-h");
        }
        let out = cmd.arg(image).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn header(image: &Path) -> HashMap<String, String> {
        dumpe2fs(image, true)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    fn number(h: &HashMap<String, String>, key: &str) -> u64 {
        h.get(key)
            .unwrap_or_else(|| panic!("no {key:?} in {h:?}"))
            .parse()
            .unwrap()
    }

    fn uuid(seed: u8) -> [u8; 16] {
        let mut u = [0u8; 16];
        for (i, b) in (0u8..).zip(u.iter_mut()) {
            *b = seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(17)) | 1;
        }
        u
    }

    fn image(dir: &Path, name: &str, bytes: u64) -> (PathBuf, File) {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(bytes).unwrap();
        (path, file)
    }

    #[test]
    fn formats_clean_filesystems_of_various_sizes() {
        let dir = tempfile::tempdir().unwrap();
        // (bytes, expected block count)
        let cases = [
            (3 * MIB, 768),
            (64 * MIB, 16384),
            (200 * MIB, 51200),
            // Group 1 would be 3 blocks: dropped, as mke2fs does.
            (129 * MIB + 12 * 1024, 32768),
            // A kept partial last group, and a size that is not a whole number of blocks.
            (160 * MIB + 12 * 1024 + 1000, 40963),
            // Exactly the minimum.
            (MIN_BYTES, 512),
        ];
        for (i, (bytes, blocks)) in (0u8..).zip(cases) {
            let (path, file) = image(dir.path(), &format!("fs{i}.img"), bytes);
            format_ext4(&file, bytes, uuid(i)).unwrap();
            drop(file);
            assert_fsck_clean(&path);

            let h = header(&path);
            let features: Vec<&str> = h["Filesystem features"].split_whitespace().collect();
            for f in [
                "ext_attr",
                "dir_index",
                "filetype",
                "extent",
                "sparse_super",
                "large_file",
                "huge_file",
                "uninit_bg",
                "dir_nlink",
                "extra_isize",
            ] {
                assert!(features.contains(&f), "{f} missing from {features:?}");
            }
            for f in ["has_journal", "resize_inode", "64bit", "metadata_csum"] {
                assert!(!features.contains(&f), "{f} in {features:?}");
            }
            assert_eq!(h["Filesystem state"], "clean");
            assert_eq!(h["Errors behavior"], "Continue");
            assert_eq!(h["Filesystem OS type"], "Linux");
            assert_eq!(h["Maximum mount count"], "-1");
            assert_eq!(number(&h, "Block size"), 4096);
            assert_eq!(number(&h, "Inode size"), 256);
            assert_eq!(number(&h, "First inode"), 11);
            assert_eq!(number(&h, "First block"), 0);
            assert_eq!(number(&h, "Blocks per group"), 32768);
            assert_eq!(number(&h, "Block count"), blocks, "{bytes} bytes");
            let groups = blocks.div_ceil(32768);
            let per_group = number(&h, "Inodes per group");
            assert_eq!(per_group % 16, 0);
            assert_eq!(number(&h, "Inode count"), per_group * groups);
            // One inode per 16 KiB, rounded up to whole inode-table blocks.
            let wanted = (blocks / 4).div_ceil(groups);
            assert!(
                per_group >= wanted && per_group < wanted + 16,
                "{per_group}"
            );
            assert_eq!(number(&h, "Free inodes"), per_group * groups - 11);
            let free = number(&h, "Free blocks");
            assert!(
                free < blocks && free > blocks * 9 / 10,
                "{free} of {blocks}"
            );
            assert_eq!(
                h["Filesystem UUID"].replace('-', ""),
                uuid(i)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
        }
    }

    /// A reused disk: garbage where the bitmaps and inode tables go must not matter, as the
    /// uninitialised groups say which of them are meaningless.
    #[test]
    fn ignores_garbage_on_a_reused_disk() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = 400 * MIB; // groups 0..=3; group 2 is BLOCK_UNINIT
        let (path, file) = image(dir.path(), "reused.img", bytes);
        let mut state = 1u64;
        let mut garbage = vec![0u8; usize::try_from(4 * MIB).unwrap()];
        for chunk in garbage.chunks_exact_mut(8) {
            state = splitmix(state);
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        for group in 0..4 {
            file.write_all_at(&garbage, group * 128 * MIB).unwrap();
        }
        file.write_all_at(&garbage, bytes - 4 * MIB).unwrap();
        format_ext4(&file, bytes, uuid(99)).unwrap();
        drop(file);
        assert_fsck_clean(&path);

        let groups = dumpe2fs(&path, false);
        let flags: Vec<&str> = groups
            .lines()
            .filter(|l| l.starts_with("Group "))
            .map(|l| l.split_once(" csum ").unwrap().1)
            .collect();
        assert_eq!(flags.len(), 4, "{groups}");
        assert!(flags[0].ends_with("[ITABLE_ZEROED]"), "{}", flags[0]);
        assert!(flags[1].ends_with("[INODE_UNINIT]"), "{}", flags[1]);
        assert!(
            flags[2].ends_with("[INODE_UNINIT, BLOCK_UNINIT]"),
            "{}",
            flags[2]
        );
        assert!(flags[3].ends_with("[INODE_UNINIT]"), "{}", flags[3]);
        assert!(groups.contains("Backup superblock at 32768"), "{groups}");
        assert!(groups.contains("Backup superblock at 98304"), "{groups}");
        assert!(!groups.contains("Backup superblock at 65536"), "{groups}");
    }

    #[test]
    fn backups_follow_sparse_super() {
        let with: Vec<u32> = (0..130).filter(|&g| has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
    }

    #[test]
    fn crc16_matches_the_reference_value() {
        // CRC-16/ARC of "123456789" is 0xBB3D (initial 0); ext4 starts from !0 instead.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
        assert_eq!(crc16(0xFFFF, b"123456789"), 0x4B37);
    }

    #[test]
    fn rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = image(dir.path(), "tiny.img", MIB);
        let err = format_ext4(&file, MIB, uuid(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("too small"), "{err}");
        let err = format_ext4(&file, 17 << 40, uuid(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("64bit"), "{err}");
        drop(file);
        // Nothing was written.
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));

        match format(&path, "ext4") {
            Err(StorageError::Invalid(msg)) => assert!(msg.contains("too small"), "{msg}"),
            other => panic!("{other:?}"),
        }
        match format(&path, "xfs") {
            Err(StorageError::Invalid(msg)) => assert!(msg.contains("\"xfs\""), "{msg}"),
            other => panic!("{other:?}"),
        }
        match format(&dir.path().join("missing"), "ext4") {
            Err(StorageError::Io { what, .. }) => assert_eq!(what, "open for formatting"),
            other => panic!("{other:?}"),
        }
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    }

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Detaches the loop device (unmounting first) even when the test fails.
    struct Loop {
        dev: PathBuf,
        mnt: PathBuf,
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.mnt).output();
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).output();
        }
    }

    /// Formats a loop device through `format` (the block-device path), has the kernel mount
    /// it and write to it, then checks the result.
    #[test]
    fn kernel_mounts_and_writes_it() {
        // CI runs as root with loop devices: there, this never skips.
        if std::env::var_os("CI").is_none()
            && (!is_root() || !Path::new("/dev/loop-control").exists())
        {
            eprintln!("skipped: needs root and loop devices");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = image(dir.path(), "disk.img", 300 * MIB);
        drop(file);
        let dev = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&path));
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let lo = Loop {
            dev: PathBuf::from(dev.trim()),
            mnt: mnt.clone(),
        };
        format(&lo.dev, "ext4").unwrap();
        run(Command::new("mount").arg(&lo.dev).arg(&mnt));

        // In use: O_EXCL refuses to format it again.
        match format(&lo.dev, "ext4") {
            Err(StorageError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EBUSY), "{source}")
            }
            other => panic!("{other:?}"),
        }

        assert!(mnt.join("lost+found").is_dir());
        // Directories spread over groups (the Orlov allocator), files of a few MB, and a
        // directory large enough to be hashed (dir_index).
        let block: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        for d in 0..16 {
            let sub = mnt.join(format!("dir{d}"));
            std::fs::create_dir(&sub).unwrap();
            for f in 0..8 {
                std::fs::write(sub.join(format!("small{f}")), format!("{d}/{f}")).unwrap();
            }
            std::fs::write(sub.join("big"), block.repeat(d % 4 + 1)).unwrap();
        }
        let many = mnt.join("many");
        std::fs::create_dir(&many).unwrap();
        for f in 0..400 {
            std::fs::write(many.join(format!("a-rather-long-file-name-{f:04}")), b"x").unwrap();
        }
        assert_eq!(std::fs::read_dir(&many).unwrap().count(), 400);
        let attrs = run(Command::new(tool("lsattr")).arg("-d").arg(&many));
        assert!(
            attrs.split_whitespace().next().unwrap().contains('I'),
            "{attrs}"
        );
        assert_eq!(
            std::fs::read(mnt.join("dir3/big")).unwrap(),
            block.repeat(4),
            "data read back"
        );
        run(Command::new("umount").arg(&mnt));
        drop(lo);

        assert_fsck_clean(&path);
        let h = header(&path);
        assert_eq!(h["Filesystem state"], "clean");
        assert_eq!(
            number(&h, "Free inodes"),
            number(&h, "Inode count") - 11 - 16 * 10 - 401
        );
    }
}
