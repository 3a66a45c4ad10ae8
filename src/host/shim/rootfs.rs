//! A container's root filesystem, from containerd's snapshotter mounts to a read-only ext4
//! layer image the utility VM attaches over SCSI.
//!
//! containerd hands a shim the mounts that assemble the container's root (`CreateTaskRequest.
//! rootfs`: an `overlay` of the image's layers for the overlayfs snapshotter, a `bind` of one
//! directory for the native one). The VM cannot see this machine's files, so the shim mounts
//! them on a private directory, copies the merged tree into an ext4 image with
//! `mkfs.ext4 -d` (ownership, modes, devices, hard links and extended attributes kept), and
//! unmounts at once. Nothing of the snapshot stays mounted and the snapshot is never written:
//! the container's writes go to the guest's scratch (CombinedLayers), and are gone with it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::host::layers::ext4_image;

/// One mount of containerd's (`containerd.types.Mount`): `mount -t <kind> -o <options>
/// <source> <target>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Bytes of an ext4 image that holds a tree of `data` bytes in `entries` files: each file
/// rounded up to a 4 KiB block plus an inode and directory entry, doubled, and 32 MiB for the
/// journal and metadata; at least 64 MiB. The image is sparse, so the room costs no disk.
pub fn image_size(data: u64, entries: u64) -> u64 {
    let needed = data.saturating_add(entries.saturating_mul(4096 + 512));
    needed
        .saturating_mul(2)
        .saturating_add(32 << 20)
        .max(64 << 20)
}

/// The bytes (rounded to 4 KiB blocks) and the number of entries under `root`, never
/// following a symbolic link.
pub fn tree_usage(root: &Path) -> io::Result<(u64, u64)> {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?; // DirEntry::metadata does not follow symlinks
            entries += 1;
            bytes = bytes.saturating_add(meta.len().div_ceil(4096) * 4096);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, entries))
}

fn run(cmd: &mut Command, what: &str) -> io::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Mounts `m` on `target` with mount(8), as containerd's runc shim mounts a rootfs.
fn mount(m: &RootfsMount, target: &Path) -> io::Result<()> {
    let mut cmd = Command::new("mount");
    cmd.arg("-t").arg(&m.kind);
    if !m.options.is_empty() {
        cmd.arg("-o").arg(m.options.join(","));
    }
    cmd.arg(&m.source).arg(target);
    run(
        &mut cmd,
        &format!("mount {} {} on {}", m.kind, m.source, target.display()),
    )
}

/// Bind-mounts the file `source` on `target` (created empty), so that a directory holding
/// only `target` can be shared in its stead.
pub fn bind_file(source: &Path, target: &Path) -> io::Result<()> {
    std::fs::write(target, b"")?;
    run(
        Command::new("mount").arg("--bind").arg(source).arg(target),
        &format!("bind {} on {}", source.display(), target.display()),
    )
}

/// The mount points at or below `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// Lazily unmounts every mount point at or below `dir`, deepest first (what a killed shim
/// left mounted), then removes `dir` — only if nothing is mounted there any more: a removal
/// must never reach into a snapshot or a file of this machine through a mount.
pub fn remove_dir(dir: &Path) {
    for p in mounts_under(dir) {
        unmount(&p);
    }
    let left = mounts_under(dir);
    if left.is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        log::warn!("{} kept: still mounted there: {left:?}", dir.display());
    }
}

/// Unmounts `target` lazily (`umount -l`), ignoring a target that is not mounted.
pub fn unmount(target: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Writes the image of a container's root to `image`: the tree `mounts` assemble on
/// `scratch_dir` (created, and removed again), or the directory `root` itself when containerd
/// gave no mounts (a bundle with its own `rootfs`).
///
/// Errors: a mount or mkfs.ext4 that fails (with its message), or a tree that cannot be read.
pub fn build_image(
    mounts: &[RootfsMount],
    root: &Path,
    scratch_dir: &Path,
    image: &Path,
) -> io::Result<()> {
    if mounts.is_empty() {
        return write_image(root, image);
    }
    let target = scratch_dir.join("rootfs");
    std::fs::create_dir_all(&target)?;
    let mut result = Ok(());
    let mut mounted = 0;
    for m in mounts {
        if let Err(e) = mount(m, &target) {
            result = Err(e);
            break;
        }
        mounted += 1;
    }
    if result.is_ok() {
        result = write_image(&target, image);
    }
    for _ in 0..mounted {
        unmount(&target);
    }
    let _ = std::fs::remove_dir(&target);
    result
}

fn write_image(tree: &Path, image: &Path) -> io::Result<()> {
    let (bytes, entries) = tree_usage(tree)?;
    let size = image_size(bytes, entries);
    ext4_image(image, Some(tree), &format!("{}k", size / 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_has_a_floor_and_grows_with_the_tree() {
        assert_eq!(image_size(0, 0), 64 << 20);
        let big = image_size(1 << 30, 10_000);
        assert!(big >= 2 << 30, "{big}");
        assert_eq!(image_size(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn a_directory_with_a_mount_in_it_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir(&share).unwrap();
        let precious = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(precious.path(), b"keep").unwrap();
        bind_file(precious.path(), &share.join("f")).unwrap();
        assert_eq!(mounts_under(dir.path()), vec![share.join("f")]);
        remove_dir(dir.path());
        // Unmounted first, then removed; the bound file itself is untouched.
        assert!(!dir.path().exists());
        assert_eq!(std::fs::read(precious.path()).unwrap(), b"keep");
    }

    #[test]
    fn tree_usage_counts_blocks_and_does_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 5000]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), b"x").unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("d/up")).unwrap();
        let (bytes, entries) = tree_usage(dir.path()).unwrap();
        assert_eq!(entries, 4);
        // a: 2 blocks, b: 1 block, d: its directory blocks, the link: its target's length.
        assert!((3 * 4096..8 * 4096).contains(&bytes), "{bytes}");
    }
}
