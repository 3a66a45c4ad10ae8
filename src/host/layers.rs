//! Layer images a host would attach: a busybox tree (what `docker export` of busybox gives) and
//! ext4 images made from a tree with `mkfs.ext4 -d` (no mounting needed).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Writes a busybox root filesystem under `dir/busybox`: Debian's static busybox with a link
/// per applet, and an `/etc/passwd` with root.
pub fn busybox_tree(dir: &Path) -> io::Result<PathBuf> {
    let tree = dir.join("busybox");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"] {
        std::fs::create_dir_all(tree.join(d))?;
    }
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("copy /bin/busybox (install busybox-static): {e}"),
        )
    })?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = tree.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(tree.join("etc/group"), "root:x:0:\n")?;
    Ok(tree)
}

/// An ext4 image of `size` (`mkfs.ext4` syntax, e.g. `16M`) at `image`, filled from `tree` when
/// given, empty otherwise.
pub fn ext4_image(image: &Path, tree: Option<&Path>, size: &str) -> io::Result<()> {
    let mut cmd = Command::new("mkfs.ext4");
    // 4 KiB blocks, as hcsshim's layer tools make them: dm-verity's sectors are that large
    // and DAX needs a page-sized block.
    cmd.args(["-q", "-F", "-b", "4096"]);
    if let Some(t) = tree {
        cmd.arg("-d").arg(t);
    }
    let status = cmd
        .arg(image)
        .arg(size)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("run mkfs.ext4 (install e2fsprogs): {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "mkfs.ext4 {} failed: {status}",
            image.display()
        )))
    }
}
