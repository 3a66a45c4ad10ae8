//! PID 1's filesystem setup as a declarative table, applied in order.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

/// One step of PID 1's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOp {
    /// Mounts `source` of type `fstype` on `target` (created if missing). `tolerate_busy`
    /// accepts `EBUSY`, i.e. already mounted (devtmpfs automounted by the kernel).
    Mount {
        source: &'static str,
        target: &'static str,
        fstype: &'static str,
        flags: MsFlags,
        data: &'static str,
        tolerate_busy: bool,
    },
    Mkdir {
        path: &'static str,
        mode: u32,
    },
    Symlink {
        target: &'static str,
        link: &'static str,
    },
}

/// Why a setup step failed.
#[derive(Debug, thiserror::Error)]
#[error("{op:?}: {errno}")]
pub struct InitOpError {
    pub op: InitOp,
    pub errno: Errno,
}

const NODEV_NOSUID_NOEXEC: MsFlags = MsFlags::MS_NODEV
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NOEXEC);

const fn mount_op(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: &'static str,
) -> InitOp {
    InitOp::Mount {
        source,
        target,
        fstype,
        flags,
        data,
        tolerate_busy: false,
    }
}

/// Steps 3–4 of the original's sequence.
pub const INIT_OPS: &[InitOp] = &[
    InitOp::Mount {
        source: "dev",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "",
        tolerate_busy: true,
    },
    mount_op("proc", "/proc", "proc", NODEV_NOSUID_NOEXEC, ""),
    InitOp::Symlink {
        target: "/proc/self/fd",
        link: "/dev/fd",
    },
    InitOp::Symlink {
        target: "/proc/self/fd/0",
        link: "/dev/stdin",
    },
    InitOp::Symlink {
        target: "/proc/self/fd/1",
        link: "/dev/stdout",
    },
    InitOp::Symlink {
        target: "/proc/self/fd/2",
        link: "/dev/stderr",
    },
    mount_op("tmpfs", "/run", "tmpfs", NODEV_NOSUID_NOEXEC, "mode=0755"),
    mount_op("tmpfs", "/tmp", "tmpfs", NODEV_NOSUID_NOEXEC, ""),
    InitOp::Mkdir {
        path: "/dev/shm",
        mode: 0o755,
    },
    mount_op("shm", "/dev/shm", "tmpfs", NODEV_NOSUID_NOEXEC, ""),
    InitOp::Mkdir {
        path: "/dev/pts",
        mode: 0o755,
    },
    mount_op(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        "",
    ),
    mount_op("sysfs", "/sys", "sysfs", NODEV_NOSUID_NOEXEC, ""),
];

/// `-w`: writable `/etc` and `/var` through overlays on a tmpfs.
pub const WRITABLE_OVERLAY_OPS: &[InitOp] = &[
    mount_op(
        "tmpfs",
        "/run/over",
        "tmpfs",
        MsFlags::empty(),
        "size=40%,mode=0755",
    ),
    InitOp::Mkdir {
        path: "/run/over/etc",
        mode: 0o755,
    },
    InitOp::Mkdir {
        path: "/run/over/etc/upper",
        mode: 0o755,
    },
    InitOp::Mkdir {
        path: "/run/over/etc/work",
        mode: 0o755,
    },
    mount_op(
        "overlay",
        "/etc",
        "overlay",
        NODEV_NOSUID_NOEXEC,
        "lowerdir=/etc,upperdir=/run/over/etc/upper,workdir=/run/over/etc/work",
    ),
    InitOp::Mkdir {
        path: "/run/over/var",
        mode: 0o755,
    },
    InitOp::Mkdir {
        path: "/run/over/var/upper",
        mode: 0o755,
    },
    InitOp::Mkdir {
        path: "/run/over/var/work",
        mode: 0o755,
    },
    mount_op(
        "overlay",
        "/var",
        "overlay",
        MsFlags::MS_NODEV.union(MsFlags::MS_NOSUID),
        "lowerdir=/var,upperdir=/run/over/var/upper,workdir=/run/over/var/work",
    ),
];

fn mkdir(path: &str, mode: u32) -> Result<(), Errno> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
    }
}

impl InitOp {
    pub fn apply(&self) -> Result<(), InitOpError> {
        let result = match *self {
            InitOp::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                tolerate_busy,
            } => {
                if !Path::new(target).exists() {
                    mkdir(target, 0o755).map_err(|errno| InitOpError { op: *self, errno })?;
                }
                let data = (!data.is_empty()).then_some(data);
                match mount(Some(source), target, Some(fstype), flags, data) {
                    Err(Errno::EBUSY) if tolerate_busy => Ok(()),
                    other => other,
                }
            }
            InitOp::Mkdir { path, mode } => mkdir(path, mode),
            InitOp::Symlink { target, link } => match std::os::unix::fs::symlink(target, link) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            },
        };
        result.map_err(|errno| InitOpError { op: *self, errno })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_spec_order() {
        let mounts: Vec<(&str, &str)> = INIT_OPS
            .iter()
            .filter_map(|op| match op {
                InitOp::Mount { fstype, target, .. } => Some((*fstype, *target)),
                _ => None,
            })
            .collect();
        assert_eq!(
            mounts,
            [
                ("devtmpfs", "/dev"),
                ("proc", "/proc"),
                ("tmpfs", "/run"),
                ("tmpfs", "/tmp"),
                ("tmpfs", "/dev/shm"),
                ("devpts", "/dev/pts"),
                ("sysfs", "/sys"),
            ]
        );
        assert!(INIT_OPS.contains(&InitOp::Symlink {
            target: "/proc/self/fd",
            link: "/dev/fd"
        }));
    }

    #[test]
    fn only_devtmpfs_tolerates_busy() {
        for op in INIT_OPS {
            if let InitOp::Mount {
                fstype,
                tolerate_busy,
                ..
            } = op
            {
                assert_eq!(*tolerate_busy, *fstype == "devtmpfs");
            }
        }
    }
}
