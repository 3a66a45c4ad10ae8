//! The boot images: layout of spec §8.4, owner 0:0, reproducible bytes, and BASE merged
//! underneath.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One newc cpio entry.
#[derive(Debug)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    data: Vec<u8>,
}

fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Parses a newc archive (the format the kernel unpacks into the initramfs).
fn parse_newc(bytes: &[u8]) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let mut pos = 0;
    let pad = |n: usize| (n + 3) & !3;
    loop {
        let header = &bytes[pos..pos + 110];
        assert_eq!(&header[..6], b"070701", "newc magic at {pos}");
        let field = |i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&header[6 + i * 8..14 + i * 8]).unwrap(),
                16,
            )
            .unwrap()
        };
        let (mode, uid, gid, mtime, size, namesize) = (
            field(1),
            field(2),
            field(3),
            field(5),
            field(6) as usize,
            field(11) as usize,
        );
        let name = String::from_utf8(bytes[pos + 110..pos + 110 + namesize - 1].to_vec()).unwrap();
        pos = pad(pos + 110 + namesize);
        let data = bytes[pos..pos + size].to_vec();
        pos = pad(pos + size);
        if name == "TRAILER!!!" {
            return entries;
        }
        entries.insert(
            name,
            Entry {
                mode,
                uid,
                gid,
                mtime,
                data,
            },
        );
    }
}

/// The agent binary without debug info (the images of a debug build would be ten times larger).
fn stripped() -> std::path::PathBuf {
    static ONCE: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gcs");
        assert!(Command::new("strip")
            .arg("-o")
            .arg(&path)
            .arg(common::GCS)
            .status()
            .unwrap()
            .success());
        (dir, path)
    })
    .1
    .clone()
}

fn mkimage(out: &Path, base: Option<&Path>) {
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mkimage.sh"));
    cmd.arg(stripped()).arg(out);
    if let Some(b) = base {
        cmd.arg(b);
    }
    let status = cmd.env("SOURCE_DATE_EPOCH", "1700000000").status().unwrap();
    assert!(status.success());
}

#[test]
fn initrd_layout_owner_and_reproducibility() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    mkimage(a.path(), None);
    mkimage(b.path(), None);
    for name in ["initrd.img", "rootfs.tar.gz"] {
        let (x, y) = (
            std::fs::read(a.path().join(name)).unwrap(),
            std::fs::read(b.path().join(name)).unwrap(),
        );
        assert!(
            x == y,
            "{name} differs between two builds of the same source"
        );
    }
    let entries = parse_newc(&gunzip(&a.path().join("initrd.img")));
    let init = &entries["init"];
    assert_eq!(init.mode, 0o100755);
    assert_eq!(init.data, std::fs::read(stripped()).unwrap());
    for link in ["bin/gcs", "bin/vsockexec"] {
        let e = &entries[link];
        assert_eq!(e.mode & 0o170000, 0o120000, "{link} is a symlink");
        assert_eq!(e.data, b"../init");
    }
    for dir in ["bin", "dev", "proc", "sys", "run", "tmp", "etc", "info"] {
        assert_eq!(
            entries[dir].mode & 0o170000,
            0o040000,
            "{dir} is a directory"
        );
    }
    assert!(!entries["info/gcs.commit"].data.is_empty());
    assert!(entries
        .values()
        .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == 1_700_000_000));
    // Sorted entries.
    let names: Vec<&String> = entries.keys().collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let listing = Command::new("tar")
        .arg("-tzvf")
        .arg(a.path().join("rootfs.tar.gz"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains(" 0/0 ") && l.ends_with("./init")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("drwxr-xr-x")),
        "root directory mode: {listing}"
    );
    assert!(listing.contains("./bin/gcs -> ../init"), "{listing}");
}

#[test]
fn base_is_merged_underneath() {
    let dir = tempfile::tempdir().unwrap();
    let base_tree = dir.path().join("base");
    std::fs::create_dir_all(base_tree.join("etc")).unwrap();
    std::fs::write(base_tree.join("etc/os-release"), "ID=testbase\n").unwrap();
    std::fs::write(base_tree.join("init"), "not our init").unwrap();
    let base = dir.path().join("base.tar.gz");
    assert!(Command::new("tar")
        .arg("-czf")
        .arg(&base)
        .arg("-C")
        .arg(&base_tree)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let out = dir.path().join("out");
    mkimage(&out, Some(&base));
    let entries = parse_newc(&gunzip(&out.join("initrd.img")));
    assert_eq!(entries["etc/os-release"].data, b"ID=testbase\n");
    assert_eq!(
        entries["init"].data,
        std::fs::read(stripped()).unwrap(),
        "our /init wins over the base's"
    );
}
