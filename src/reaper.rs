//! The agent's one reaper. The agent is a child subreaper: every process it starts, and every
//! container process that is re-parented to it, is collected here by a thread blocked in
//! `waitid(P_ALL, WEXITED)` (wait(2)), and the status goes straight to whoever registered for
//! that pid: no signal handler, no task hop between the exit and its waiter. Nothing else in
//! the agent waits for children.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// Exit code as reported for container processes: the status, or 128 + signal.
    pub fn container_code(self) -> u32 {
        match self {
            Self::Code(c) => u32::try_from(c & 0xff).unwrap_or(255),
            Self::Signal(s) => 128 + u32::try_from(s & 0x7f).unwrap_or(0),
        }
    }

    /// Exit code as reported for UVM processes: Go's `ExitCode()`, -1 when killed by a signal.
    pub fn external_code(self) -> u32 {
        match self {
            Self::Code(c) => u32::try_from(c & 0xff).unwrap_or(255),
            Self::Signal(_) => u32::MAX,
        }
    }
}

/// Exits of pids nobody registered for yet (a child can exit before its spawner registers),
/// kept up to this many.
const UNCLAIMED_LIMIT: usize = 4096;

/// ... and for this long. The race they cover lasts from a fork to its spawner's registration
/// (microseconds for UVM processes, one helper round trip for container processes); the
/// processes nobody ever claims — the runtime's intermediate process, one per container and
/// exec, which `CLONE_PARENT` makes the agent's child — must not accumulate (the soak test's
/// `exits unclaimed` grew by one per container before).
const UNCLAIMED_TTL: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    watchers: HashMap<i32, oneshot::Sender<ExitStatus>>,
    unclaimed: HashMap<i32, ExitStatus>,
    /// Unclaimed pids, oldest first, with when they were reaped.
    order: VecDeque<(i32, std::time::Instant)>,
}

impl State {
    /// Drops unclaimed exits older than [`UNCLAIMED_TTL`], and the oldest beyond the limit.
    fn expire(&mut self, now: std::time::Instant) {
        while let Some(&(pid, at)) = self.order.front() {
            let stale = now.duration_since(at) >= UNCLAIMED_TTL;
            if !stale && self.order.len() < UNCLAIMED_LIMIT {
                break;
            }
            self.order.pop_front();
            self.unclaimed.remove(&pid);
        }
        if self.unclaimed.is_empty() && self.unclaimed.capacity() > 64 {
            self.unclaimed.shrink_to(64);
            self.order.shrink_to(64);
        }
    }
}

/// Collects child exits and hands them out by pid.
#[derive(Debug, Default)]
pub struct Reaper {
    state: Mutex<State>,
    /// Children started so far: the reaping thread, told `ECHILD` (no child at all), sleeps
    /// until this moves.
    spawned: Mutex<u64>,
    spawned_changed: Condvar,
}

impl Reaper {
    /// A reaper that has not started collecting (tests that spawn nothing use it as is).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Becomes a child subreaper and starts the reaping thread (`gcs-reaper`).
    ///
    /// # Errors
    /// `prctl(PR_SET_CHILD_SUBREAPER)` or the thread's creation failed.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        nix::sys::prctl::set_child_subreaper(true)?;
        let reaper = Arc::clone(self);
        std::thread::Builder::new()
            .name("gcs-reaper".into())
            .stack_size(REAPER_STACK)
            .spawn(move || reaper.run())?;
        Ok(())
    }

    /// Starts a child ([`crate::sys::spawn`]) and wakes the reaping thread if it was idle for
    /// want of children. The exit is collected by this reaper; [`watch`](Self::watch) it.
    ///
    /// # Errors
    /// As [`crate::sys::spawn`]: the stage that failed, its errno, and the pid of a child that
    /// was started but failed before exec (it exits 127).
    pub fn spawn(
        &self,
        request: &crate::sys::SpawnRequest,
    ) -> Result<i32, (crate::sys::SpawnStage, Errno, Option<i32>)> {
        let result = crate::sys::spawn(request);
        if matches!(result, Ok(_) | Err((_, _, Some(_)))) {
            let mut spawned = self.spawned.lock().unwrap_or_else(|p| p.into_inner());
            *spawned = spawned.wrapping_add(1);
            self.spawned_changed.notify_all();
        }
        result
    }

    /// The exit of `pid`, once it happens (at once if it already happened).
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = state.unclaimed.remove(&pid) {
            state.order.retain(|(p, _)| *p != pid);
            let _ = tx.send(status);
        } else {
            state.watchers.insert(pid, tx);
        }
        rx
    }

    /// [`watch`](Self::watch) for a pid as the wire carries it.
    pub fn watch_pid(&self, pid: u32) -> oneshot::Receiver<ExitStatus> {
        self.watch(i32::try_from(pid).unwrap_or(i32::MAX))
    }

    /// Exits collected that nobody has claimed yet, and pids being watched (for stack dumps and
    /// the soak test).
    pub fn counts(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.unclaimed.len(), state.watchers.len())
    }

    /// Drops a registration or an unclaimed exit (for a child whose exec failed).
    pub fn forget(&self, pid: i32) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.watchers.remove(&pid);
        if state.unclaimed.remove(&pid).is_some() {
            state.order.retain(|(p, _)| *p != pid);
        }
    }

    fn deliver(&self, pid: i32, status: ExitStatus) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = state.watchers.remove(&pid) {
            let _ = tx.send(status);
            return;
        }
        debug!(pid, ?status, "reaped a process nobody waits for");
        let now = std::time::Instant::now();
        state.expire(now);
        state.unclaimed.insert(pid, status);
        state.order.push_back((pid, now));
    }

    /// The reaping thread: waits for any child's exit, forever.
    fn run(&self) {
        loop {
            // Read before waiting, so that a child started between `ECHILD` and the sleep
            // below is not missed.
            let seen = *self.spawned.lock().unwrap_or_else(|p| p.into_inner());
            match waitid(Id::All, WaitPidFlag::WEXITED) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.deliver(pid.as_raw(), ExitStatus::Code(code))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.deliver(pid.as_raw(), ExitStatus::Signal(sig as i32))
                }
                Err(Errno::ECHILD) => {
                    let spawned = self.spawned.lock().unwrap_or_else(|p| p.into_inner());
                    drop(
                        self.spawned_changed
                            .wait_while(spawned, |n| *n == seen)
                            .unwrap_or_else(|p| p.into_inner()),
                    );
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    warn!(error = %e, "waitid failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }
}

/// The reaping thread's stack: it only waits and delivers (and logs).
const REAPER_STACK: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(ExitStatus::Code(3).container_code(), 3);
        assert_eq!(ExitStatus::Signal(9).container_code(), 137);
        assert_eq!(ExitStatus::Signal(15).container_code(), 143);
        assert_eq!(ExitStatus::Signal(9).external_code(), 4294967295);
        assert_eq!(ExitStatus::Code(7).external_code(), 7);
    }

    #[test]
    fn exit_before_registration_is_kept() {
        let r = Reaper::new();
        r.deliver(42, ExitStatus::Code(1));
        let mut rx = r.watch(42);
        assert_eq!(rx.try_recv().unwrap(), ExitStatus::Code(1));
        let mut rx = r.watch(43);
        assert!(rx.try_recv().is_err());
        r.deliver(43, ExitStatus::Signal(9));
        assert_eq!(rx.try_recv().unwrap(), ExitStatus::Signal(9));
    }

    #[test]
    fn unclaimed_exits_expire() {
        let r = Reaper::new();
        r.deliver(7, ExitStatus::Code(0));
        {
            let mut state = r.state.lock().unwrap();
            let later = std::time::Instant::now() + UNCLAIMED_TTL;
            state.expire(later);
            assert!(state.unclaimed.is_empty() && state.order.is_empty());
        }
        let mut rx = r.watch(7);
        assert!(
            rx.try_recv().is_err(),
            "an expired exit was still handed out"
        );
    }

    #[test]
    fn unclaimed_is_bounded() {
        let r = Reaper::new();
        for pid in 0..(i32::try_from(UNCLAIMED_LIMIT).unwrap() + 10) {
            r.deliver(pid, ExitStatus::Code(0));
        }
        let state = r.state.lock().unwrap();
        assert_eq!(state.unclaimed.len(), UNCLAIMED_LIMIT);
        assert!(!state.unclaimed.contains_key(&0));
    }
}
