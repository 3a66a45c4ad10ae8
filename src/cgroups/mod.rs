//! The utility VM's own cgroups (spec §8.3 step 5, §5.11): `/gcs` holds the agent, `/pods`
//! holds every container and is limited to the VM's memory less a reserve, so that containers
//! cannot starve the agent. cgroup v2 or v1, as `init` mounted them.

pub mod events;

use std::path::{Path, PathBuf};

/// Errors of UVM cgroup management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{what} {path:?}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no memory cgroup under {0:?}")]
    NoMemoryController(PathBuf),
    #[error("the /pods memory limit {wanted} would be below its current usage {usage}; the limit stays {current}")]
    BelowUsage {
        wanted: u64,
        usage: u64,
        current: u64,
    },
    #[error("total memory {total} is not above the reserve {reserve}")]
    ReserveTooLarge { total: u64, reserve: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// `/gcs` and `/pods` under a cgroupfs root.
#[derive(Debug)]
pub struct UvmCgroups {
    root: PathBuf,
    version: Version,
    reserve: u64,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.into(),
        source,
    }
}

fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    // v2 writes "max" for no limit.
    Ok(text.trim().parse().ok())
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn total_memory(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl UvmCgroups {
    /// Creates `/gcs` (and moves this process into it) and `/pods` with its limit, under
    /// `root` (normally `/sys/fs/cgroup`).
    pub fn setup(root: &Path, reserve: u64) -> Result<Self, CgroupError> {
        let version = if root.join("cgroup.controllers").exists() {
            Version::V2
        } else {
            Version::V1
        };
        let cgroups = Self {
            root: root.to_path_buf(),
            version,
            reserve,
        };
        let pid = std::process::id().to_string();
        match version {
            Version::V2 => {
                // Let /pods hand its controllers down to the containers' cgroups.
                let control = root.join("cgroup.subtree_control");
                for c in ["+cpu", "+cpuset", "+io", "+memory", "+pids", "+hugetlb"] {
                    let _ = std::fs::write(&control, c);
                }
                for dir in ["gcs", "pods"] {
                    let path = root.join(dir);
                    std::fs::create_dir_all(&path).map_err(io("create", &path))?;
                }
                let procs = root.join("gcs/cgroup.procs");
                std::fs::write(&procs, &pid).map_err(io("join", &procs))?;
            }
            Version::V1 => {
                let memory = cgroups.memory_dir();
                if !memory.exists() {
                    return Err(CgroupError::NoMemoryController(root.into()));
                }
                // The original treats a missing file as fatal; newer kernels always use the
                // hierarchy and may refuse the write: neither stops the agent.
                if let Err(e) = std::fs::write(memory.join("memory.use_hierarchy"), "1") {
                    tracing::warn!(error = %e, "cannot set memory.use_hierarchy");
                }
                for hierarchy in std::fs::read_dir(root).map_err(io("read", root))?.flatten() {
                    let h = hierarchy.path();
                    if !h.join("cgroup.procs").exists() {
                        continue;
                    }
                    for dir in ["gcs", "pods"] {
                        let path = h.join(dir);
                        std::fs::create_dir_all(&path).map_err(io("create", &path))?;
                        // A new cpuset has no CPUs or memory nodes until given its parent's.
                        for f in ["cpuset.cpus", "cpuset.mems"] {
                            if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                                let _ = std::fs::write(path.join(f), v.trim());
                            }
                        }
                    }
                    let procs = h.join("gcs/cgroup.procs");
                    if let Err(e) = std::fs::write(&procs, &pid) {
                        tracing::warn!(path = %procs.display(), error = %e, "cannot join /gcs");
                    }
                }
            }
        }
        cgroups.update_pods_limit()?;
        Ok(cgroups)
    }

    fn memory_dir(&self) -> PathBuf {
        match self.version {
            Version::V2 => self.root.clone(),
            Version::V1 => self.root.join("memory"),
        }
    }

    fn pods_file(&self, v1: &str, v2: &str) -> PathBuf {
        match self.version {
            Version::V2 => self.root.join("pods").join(v2),
            Version::V1 => self.memory_dir().join("pods").join(v1),
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Keeps the `/pods` limit in step with the VM's memory: recomputed when the kernel
    /// announces memory coming online (the host hot-adds it), and once a minute regardless
    /// (the original only polls every 60 s). Hot-added memory is onlined automatically.
    /// `online_new_memory`: set the kernel to online hot-added blocks (only in a utility VM).
    pub fn follow_memory_hotplug(self: std::sync::Arc<Self>, online_new_memory: bool) {
        let auto = Path::new("/sys/devices/system/memory/auto_online_blocks");
        if online_new_memory && auto.exists() {
            if let Err(e) = std::fs::write(auto, "online") {
                tracing::warn!(error = %e, "cannot make hot-added memory come online by itself");
            }
        }
        let spawned = std::thread::Builder::new()
            .name("gcs-memhotplug".into())
            .spawn(move || {
                let mut events = crate::uevent::Uevents::subscribe();
                loop {
                    let messages = events.next_messages(std::time::Duration::from_secs(60));
                    let memory = messages.iter().any(|m| {
                        m.lines().any(|l| l == "SUBSYSTEM=memory")
                            && (m.starts_with("online@") || m.starts_with("add@"))
                    });
                    if !messages.is_empty() && !memory {
                        continue;
                    }
                    match self.update_pods_limit() {
                        Ok(Some(limit)) => {
                            tracing::info!(
                                limit,
                                hotplug = memory,
                                "/pods memory limit follows the VM's memory"
                            )
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "recomputing the /pods memory limit failed")
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot follow memory hot-plug");
        }
    }

    /// The memory cgroup `rel` (e.g. `/pods/<id>`) of this hierarchy.
    pub fn memory_cgroup(&self, rel: &str) -> events::MemoryCgroup {
        events::MemoryCgroup::new(&self.root, self.version, rel)
    }

    /// The current `/pods` memory limit (`None`: unlimited).
    pub fn pods_limit(&self) -> Result<Option<u64>, CgroupError> {
        read_u64(&self.pods_file("memory.limit_in_bytes", "memory.max"))
    }

    /// What the `/pods` limit should be now: total memory less the reserve.
    pub fn pods_limit_target(&self) -> Result<u64, CgroupError> {
        let meminfo = Path::new("/proc/meminfo");
        let text = std::fs::read_to_string(meminfo).map_err(io("read", meminfo))?;
        let total = total_memory(&text).unwrap_or(0);
        total
            .checked_sub(self.reserve)
            .filter(|l| *l > 0)
            .ok_or(CgroupError::ReserveTooLarge {
                total,
                reserve: self.reserve,
            })
    }

    /// Recomputes and applies the `/pods` limit (memory may have been hot-added); returns the
    /// new limit, or `None` if it did not change. A limit below what the pods use now is
    /// refused and the old one kept (on v2 it would OOM-kill containers instead).
    pub fn update_pods_limit(&self) -> Result<Option<u64>, CgroupError> {
        let wanted = self.pods_limit_target()?;
        let current = self.pods_limit()?;
        if current == Some(wanted) {
            return Ok(None);
        }
        let usage =
            read_u64(&self.pods_file("memory.usage_in_bytes", "memory.current"))?.unwrap_or(0);
        if wanted < usage {
            return Err(CgroupError::BelowUsage {
                wanted,
                usage,
                current: current.unwrap_or(u64::MAX),
            });
        }
        let file = self.pods_file("memory.limit_in_bytes", "memory.max");
        std::fs::write(&file, wanted.to_string()).map_err(io("write", &file))?;
        tracing::info!(limit = wanted, "/pods memory limit set");
        Ok(Some(wanted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total() {
        assert_eq!(
            total_memory("MemTotal:        2030588 kB\nMemFree: 1 kB\n"),
            Some(2_030_588 * 1024)
        );
        assert_eq!(total_memory("nothing"), None);
    }
}
