//! cgroup setup of PID 1: cgroup v2 unless the kernel command line asks for v1 or the kernel
//! lacks what v2 containers need (the BPF device controller); otherwise the v1 layout.

use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{mount, umount, MsFlags};

use super::log;

const ROOT: &str = "/sys/fs/cgroup";
const NODEV_NOSUID_NOEXEC: MsFlags = MsFlags::MS_NODEV
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NOEXEC);

/// Which hierarchy ended up mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    V2,
    V1,
}

/// True when `hcsshim.cgroup=v1` is a whole token of the kernel command line.
pub fn wants_v1(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|t| t == "hcsshim.cgroup=v1")
}

/// Names of the enabled controllers in `/proc/cgroups` text.
pub fn enabled_v1_controllers(proc_cgroups: &str) -> Vec<String> {
    proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then(|| f[0].to_string())
        })
        .collect()
}

pub fn setup() -> Result<Hierarchy, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if !wants_v1(&cmdline) {
        match try_v2() {
            Ok(()) => return Ok(Hierarchy::V2),
            Err(e) => log(4, &format!("cgroup v2 unusable, falling back to v1: {e}")),
        }
    }
    setup_v1()?;
    Ok(Hierarchy::V1)
}

fn try_v2() -> Result<(), String> {
    std::fs::create_dir_all(ROOT).map_err(|e| format!("mkdir {ROOT}: {e}"))?;
    mount(
        Some("cgroup2"),
        ROOT,
        Some("cgroup2"),
        NODEV_NOSUID_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mount cgroup2: {e}"))?;
    let check = || -> Result<String, String> {
        let controllers = std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers"))
            .map_err(|e| format!("cgroup.controllers: {e}"))?;
        let dir = std::fs::File::open(ROOT).map_err(|e| format!("open {ROOT}: {e}"))?;
        match crate::sys::bpf_query_cgroup_device(dir.as_fd()) {
            Err(e @ (nix::errno::Errno::ENOSYS | nix::errno::Errno::EINVAL)) => {
                Err(format!("no BPF device cgroup support: {e}"))
            }
            _ => Ok(controllers),
        }
    };
    let controllers = match check() {
        Ok(c) => c,
        Err(e) => {
            let _ = umount(ROOT);
            return Err(e);
        }
    };
    let enable: Vec<String> = controllers
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if !enable.is_empty() {
        let control = Path::new(ROOT).join("cgroup.subtree_control");
        if std::fs::write(&control, enable.join(" ")).is_err() {
            // One controller that cannot be enabled must not cost the others.
            for c in &enable {
                if let Err(e) = std::fs::write(&control, c) {
                    log(4, &format!("enable cgroup controller {c}: {e}"));
                }
            }
        }
    }
    Ok(())
}

fn setup_v1() -> Result<(), String> {
    std::fs::create_dir_all(ROOT).map_err(|e| format!("mkdir {ROOT}: {e}"))?;
    mount(
        Some("cgroup_root"),
        ROOT,
        Some("tmpfs"),
        NODEV_NOSUID_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mount cgroup_root: {e}"))?;
    let text =
        std::fs::read_to_string("/proc/cgroups").map_err(|e| format!("/proc/cgroups: {e}"))?;
    let controllers = enabled_v1_controllers(&text);
    if controllers.is_empty() {
        return Err("no cgroup v1 controllers enabled".into());
    }
    for c in controllers {
        let dir = Path::new(ROOT).join(&c);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        mount(
            Some(c.as_str()),
            &dir,
            Some("cgroup"),
            NODEV_NOSUID_NOEXEC,
            Some(c.as_str()),
        )
        .map_err(|e| format!("mount cgroup {c}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_token_must_be_whole() {
        assert!(wants_v1("console=ttyS0 hcsshim.cgroup=v1 panic=-1"));
        assert!(!wants_v1("hcsshim.cgroup=v12"));
        assert!(!wants_v1("xhcsshim.cgroup=v1"));
        assert!(!wants_v1(""));
    }

    #[test]
    fn proc_cgroups_parsing() {
        let text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t2\t1\t1\ncpu\t3\t1\t1\nrdma\t0\t1\t0\n";
        assert_eq!(enabled_v1_controllers(text), ["cpuset", "cpu"]);
    }
}
