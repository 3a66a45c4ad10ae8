//! Memory events of the UVM's cgroups (spec §8.3 step 5): OOM kills in `/pods` and in every
//! container, and `/gcs` crossing `-gcs-mem-limit-bytes`. Each event is one structured log line
//! (no notification goes to the host: it has no type for it and would drop the bridge).
//!
//! cgroup v1 signals through eventfds registered in `cgroup.event_control`; on v2 the kernel
//! updates `memory.events`, watched with inotify. Either way a thread sleeps in `read` until
//! the kernel has something to say, and ends when the cgroup goes.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::Version;

/// At most one log line per cgroup per this long; counts are cumulative, so nothing is lost.
const RATE_LIMIT: Duration = Duration::from_secs(1);

/// `oom_kill` of a v1 `memory.oom_control` or v2 `memory.events` text.
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Where a cgroup's memory files are, under the cgroupfs `root`.
#[derive(Debug, Clone)]
pub struct MemoryCgroup {
    pub version: Version,
    /// The cgroup's directory in the memory hierarchy.
    pub dir: PathBuf,
}

impl MemoryCgroup {
    pub fn new(root: &Path, version: Version, rel: &str) -> Self {
        let rel = rel.trim_start_matches('/');
        let dir = match version {
            Version::V2 => root.join(rel),
            Version::V1 => root.join("memory").join(rel),
        };
        Self { version, dir }
    }

    fn events_file(&self) -> PathBuf {
        match self.version {
            Version::V2 => self.dir.join("memory.events"),
            Version::V1 => self.dir.join("memory.oom_control"),
        }
    }

    pub fn oom_kills(&self) -> u64 {
        read_trimmed(&self.events_file()).map_or(0, |t| oom_kills(&t))
    }

    fn usage_and_limit(&self) -> (String, String) {
        let (usage, limit) = match self.version {
            Version::V2 => ("memory.current", "memory.max"),
            Version::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
        };
        (
            read_trimmed(&self.dir.join(usage)).unwrap_or_default(),
            read_trimmed(&self.dir.join(limit)).unwrap_or_default(),
        )
    }
}

/// v1: an eventfd registered for `file` (plus `args`) in `cgroup.event_control`.
fn v1_eventfd(cgroup: &MemoryCgroup, file: &str, args: &str) -> std::io::Result<EventFd> {
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)?;
    let target = std::fs::File::open(cgroup.dir.join(file))?;
    let line = format!("{} {} {args}", efd.as_raw_fd(), target.as_raw_fd());
    std::fs::write(cgroup.dir.join("cgroup.event_control"), line.trim_end())?;
    // The kernel holds its own reference to `target` from here on.
    Ok(efd)
}

/// Blocks until the next event; `false` once the cgroup is gone.
enum Waiter {
    V1(EventFd),
    V2(Inotify),
}

impl Waiter {
    fn wait(&mut self, cgroup: &MemoryCgroup) -> bool {
        match self {
            // The eventfd also fires when the cgroup is removed.
            Waiter::V1(efd) => efd.read().is_ok() && cgroup.dir.exists(),
            Waiter::V2(inotify) => match inotify.read_events() {
                Ok(events) => !events.iter().any(|e| {
                    e.mask
                        .intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF)
                }),
                Err(_) => false,
            },
        }
    }
}

/// Logs every OOM kill in `cgroup` (labelled `container_id`, or the cgroup for `/pods`) on a
/// thread of its own, until the cgroup is removed.
pub fn watch_oom(cgroup: MemoryCgroup, container_id: String) {
    let waiter = match cgroup.version {
        Version::V1 => v1_eventfd(&cgroup, "memory.oom_control", "").map(Waiter::V1),
        Version::V2 => Inotify::init(InitFlags::IN_CLOEXEC)
            .and_then(|i| {
                i.add_watch(&cgroup.events_file(), AddWatchFlags::IN_MODIFY)?;
                Ok(i)
            })
            .map(Waiter::V2)
            .map_err(std::io::Error::from),
    };
    let mut waiter = match waiter {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(container_id = %container_id, cgroup = %cgroup.dir.display(), error = %e, "cannot watch for OOM kills");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("gcs-oom".into())
        .spawn(move || {
            let mut reported = cgroup.oom_kills();
            let mut last_log: Option<Instant> = None;
            while waiter.wait(&cgroup) {
                let mut kills = cgroup.oom_kills();
                // v1 signals when the cgroup goes under OOM, just before the OOM killer picks
                // and counts its victim: give the count a moment to move.
                if cgroup.version == Version::V1 {
                    for _ in 0..20 {
                        if kills > reported {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                        kills = cgroup.oom_kills();
                    }
                }
                // Only new kills are news (v1 may also signal OOM pressure without one).
                if kills <= reported {
                    continue;
                }
                if last_log.is_some_and(|t| t.elapsed() < RATE_LIMIT) {
                    continue;
                }
                let (usage, limit) = cgroup.usage_and_limit();
                tracing::warn!(
                    container_id = %container_id,
                    cgroup = %cgroup.dir.display(),
                    oom_kill = kills,
                    usage = %usage,
                    limit = %limit,
                    "OOM: the kernel killed a process for want of memory"
                );
                reported = kills;
                last_log = Some(Instant::now());
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start an OOM watcher");
    }
}

/// Logs when `/gcs` uses more than `threshold` bytes (a warning, not a limit). v1 has usage
/// thresholds; v2 has none, so there the check rides on `memory.events` changes and a slow
/// look every minute.
pub fn watch_threshold(cgroup: MemoryCgroup, threshold: u64) {
    let spawned = std::thread::Builder::new()
        .name("gcs-memwatch".into())
        .spawn(move || {
            let over = |c: &MemoryCgroup| {
                let (usage, limit) = c.usage_and_limit();
                let used: u64 = usage.parse().unwrap_or(0);
                if used > threshold {
                    tracing::warn!(usage = used, threshold, limit = %limit, "the agent's cgroup /gcs uses more memory than -gcs-mem-limit-bytes");
                }
            };
            match cgroup.version {
                Version::V1 => {
                    let efd = match v1_eventfd(&cgroup, "memory.usage_in_bytes", &threshold.to_string()) {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot watch the agent's memory");
                            return;
                        }
                    };
                    // The kernel signals crossings only: look once now for where we start.
                    over(&cgroup);
                    while efd.read().is_ok() {
                        over(&cgroup);
                    }
                }
                Version::V2 => loop {
                    over(&cgroup);
                    std::thread::sleep(Duration::from_secs(60));
                },
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the memory watcher");
    }
}

/// The OOM-kill count of a container's cgroup `rel` (for its Statistics).
pub fn container_oom_kills(root: &Path, rel: &str) -> u64 {
    let version = if root.join("cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    };
    let mut text = String::new();
    let cgroup = MemoryCgroup::new(root, version, rel);
    std::fs::File::open(cgroup.events_file())
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_or(0, |_| oom_kills(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counts() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            3
        );
        assert_eq!(
            oom_kills("low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 0\n"),
            2
        );
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn memory_dirs() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            MemoryCgroup::new(root, Version::V1, "/pods/c1").dir,
            PathBuf::from("/sys/fs/cgroup/memory/pods/c1")
        );
        assert_eq!(
            MemoryCgroup::new(root, Version::V2, "pods/c1").dir,
            PathBuf::from("/sys/fs/cgroup/pods/c1")
        );
    }
}
