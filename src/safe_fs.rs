//! Directories and files the agent makes for the host (bundles, `config.json`, a pod's
//! `/etc` files, mount points under `/run`), resolved without following any symlink: a
//! container, its image or a neighbour that planted a symlink under `/run` (a scratch
//! directory is container-writable) cannot redirect them into the UVM's own files. Built on
//! `pathrs` (the crate libcontainer uses) with `RESOLVE_NO_SYMLINKS` from `/`; the lexical
//! checks of the callers stay in front of it.

use std::fs::Permissions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pathrs::flags::{OpenFlags, ResolverFlags};

fn root() -> std::io::Result<pathrs::Root> {
    pathrs::Root::open("/")
        .map(|r| r.with_resolver_flags(ResolverFlags::NO_SYMLINKS))
        .map_err(std::io::Error::other)
}

/// `mkdir -p path`, directories it makes get `mode`; no component may be a symlink.
///
/// Errors: `ELOOP`-class errors from pathrs when a component is a symlink, `ENOTDIR` when one
/// is a file, and the usual I/O errors.
pub fn mkdir_all(path: &Path, mode: u32) -> std::io::Result<()> {
    root()?
        .mkdir_all(path, &Permissions::from_mode(mode))
        .map(drop)
        .map_err(std::io::Error::other)
}

/// Writes `content` to the regular file `path` (created or truncated), then sets its mode to
/// `mode` exactly; no component of `path`, the file itself included, may be a symlink.
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    write_file_with(path, mode, |file| file.write_all(content))
}

/// [`write_file`] with the content written by `write` into the opened file (for content
/// encoded as it is written).
pub fn write_file_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut file = root()?
        .create_file(
            path,
            OpenFlags::O_WRONLY | OpenFlags::O_TRUNC | OpenFlags::O_NOFOLLOW,
            &Permissions::from_mode(mode),
        )
        .map_err(std::io::Error::other)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    write(&mut file)
}

/// Opens the regular file `path` for appending (created with `mode` if missing, its parent
/// directories too), following no symlink: a container that can write the directory cannot
/// point the agent's writes elsewhere.
pub fn open_append(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        mkdir_all(parent, 0o755)?;
    }
    let file = root()?
        .create_file(
            path,
            OpenFlags::O_WRONLY | OpenFlags::O_APPEND | OpenFlags::O_NOFOLLOW,
            &Permissions::from_mode(mode),
        )
        .map_err(std::io::Error::other)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(file)
}

/// Binds what `source` names (resolved without following any symlink, and held open while
/// it is mounted) onto `target`, a new directory or empty file made for it: later swaps of
/// `source`'s components for symlinks cannot change what `target` shows. `MS_BIND|MS_REC`.
pub fn pin(source: &Path, target: &Path) -> std::io::Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let handle = root()?.resolve(source).map_err(std::io::Error::other)?;
    let meta = nix::sys::stat::fstat(handle.as_fd().as_raw_fd()).map_err(std::io::Error::from)?;
    let is_dir = nix::sys::stat::SFlag::from_bits_truncate(meta.st_mode)
        .contains(nix::sys::stat::SFlag::S_IFDIR);
    if let Some(parent) = target.parent() {
        mkdir_all(parent, 0o700)?;
    }
    if is_dir {
        mkdir_all(target, 0o700)?;
    } else {
        write_file(target, b"", 0o600)?;
    }
    let via = format!("/proc/self/fd/{}", handle.as_fd().as_raw_fd());
    nix::mount::mount(
        Some(via.as_str()),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(target.path(), dir.path().join("link")).unwrap();
        assert!(mkdir_all(&dir.path().join("link/x"), 0o700).is_err());
        assert!(write_file(&dir.path().join("link/config.json"), b"{}", 0o600).is_err());
        assert!(!target.path().join("x").exists());
        assert!(!target.path().join("config.json").exists());
        std::os::unix::fs::symlink(target.path().join("f"), dir.path().join("file-link")).unwrap();
        assert!(write_file(&dir.path().join("file-link"), b"x", 0o600).is_err());
        assert!(!target.path().join("f").exists());

        mkdir_all(&dir.path().join("a/b"), 0o700).unwrap();
        write_file(&dir.path().join("a/b/config.json"), b"{}", 0o600).unwrap();
        write_file(&dir.path().join("a/b/config.json"), b"{1}", 0o600).unwrap();
        let meta = std::fs::metadata(dir.path().join("a/b/config.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read(dir.path().join("a/b/config.json")).unwrap(),
            b"{1}"
        );
    }
}
