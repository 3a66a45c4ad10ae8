//! Containers: create (through the runtime helper), start of init, exec, waits, signals,
//! properties and deletion, with the exit notification rules of spec §6.6.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::spec::Kind;
use super::stdio::{self, PtyMaster};
use super::{wait_exit, GuestError};
use crate::protocol::messages::NotificationType;
use crate::reaper::ExitStatus;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lifecycle state (§6.9); only "creating" (a table placeholder) blocks operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Terminated,
}

/// One process of a container: its init or an exec.
#[derive(Debug)]
pub struct ContainerProcess {
    pub pid: u32,
    pub is_init: bool,
    /// The process's `args` (what `signal_container_process` shows the policy).
    pub args: Vec<String>,
    /// Set once reaped (the process is gone).
    reaped: watch::Receiver<bool>,
    /// Set once reaped and its output relays drained: what WaitForProcess waits for.
    exit: watch::Receiver<Option<ExitStatus>>,
    /// Set by the first successful WaitForProcess.
    waited: watch::Sender<bool>,
    pub pty: Mutex<Option<PtyMaster>>,
}

/// Hands a process's "output drained" signal to its exit tracker once relays run.
pub type RelaySlot = oneshot::Sender<oneshot::Receiver<()>>;

/// Completes a process's exit latch: reaped, then output drained (bounded).
#[derive(Debug)]
pub struct ExitTracker {
    reaped_tx: watch::Sender<bool>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
    relays: oneshot::Receiver<oneshot::Receiver<()>>,
}

impl ContainerProcess {
    /// A process record for `pid`, the tracker that completes its exit, and the slot its
    /// relays report through.
    pub fn new(pid: u32, is_init: bool, args: Vec<String>) -> (Arc<Self>, ExitTracker, RelaySlot) {
        let (reaped_tx, reaped) = watch::channel(false);
        let (exit_tx, exit) = watch::channel(None);
        let (waited, _) = watch::channel(false);
        let (slot, relays) = oneshot::channel();
        let process = Arc::new(Self {
            pid,
            is_init,
            args,
            reaped,
            exit,
            waited,
            pty: Mutex::new(None),
        });
        (
            process,
            ExitTracker {
                reaped_tx,
                exit_tx,
                relays,
            },
            slot,
        )
    }

    pub fn has_exited(&self) -> bool {
        *self.reaped.borrow()
    }

    /// The exit status, once the process exited and its output drained.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Waits for the exit (and drained output) with `TimeoutInMs` semantics; a success marks
    /// the process as waited for.
    pub async fn wait(&self, timeout_ms: u32) -> Result<ExitStatus, GuestError> {
        let status = wait_exit(self.exit.clone(), self.pid, timeout_ms).await?;
        self.waited.send_replace(true);
        Ok(status)
    }

    pub fn waited(&self) -> watch::Receiver<bool> {
        self.waited.subscribe()
    }

    /// Delivers a signal unless the process is already gone (its pid may have been reused).
    pub fn signal(&self, signal: i32) -> Result<(), GuestError> {
        if self.has_exited() {
            return Err(GuestError::ProcessNotFound { pid: self.pid });
        }
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| GuestError::InvalidRequest(format!("invalid signal {signal}")))?;
        let pid =
            i32::try_from(self.pid).map_err(|_| GuestError::ProcessNotFound { pid: self.pid })?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::ESRCH) => Err(GuestError::ProcessNotFound { pid: self.pid }),
            Err(e) => Err(GuestError::Io {
                what: format!("signal {signal} to {pid}"),
                source: e.into(),
            }),
        }
    }
}

impl ExitTracker {
    /// "The process is gone", for stdin relays that must stop then.
    pub fn reaped(&self) -> watch::Receiver<bool> {
        self.reaped_tx.subscribe()
    }

    /// Waits for `exited`, runs `on_exit`, waits for the relays to drain (at most
    /// [`stdio::DRAIN_AFTER_EXIT`]), then publishes the exit.
    pub fn track(
        self,
        exited: oneshot::Receiver<ExitStatus>,
        on_exit: impl FnOnce(ExitStatus) + Send + 'static,
    ) {
        tokio::spawn(async move {
            let status = exited.await.unwrap_or(ExitStatus::Code(255));
            self.reaped_tx.send_replace(true);
            on_exit(status);
            let relays = self.relays;
            let drained = async move {
                if let Ok(done) = relays.await {
                    let _ = done.await;
                }
            };
            if tokio::time::timeout(stdio::DRAIN_AFTER_EXIT, drained)
                .await
                .is_err()
            {
                tracing::warn!("process output did not drain after exit; giving up on it");
            }
            self.exit_tx.send_replace(Some(status));
        });
    }
}

/// Where a container's init stdio waits between Create and its start.
#[derive(Debug)]
pub struct InitIo {
    pub pending: super::lifecycle::PendingIo,
    pub slot: RelaySlot,
    pub reaped: watch::Receiver<bool>,
}

/// A created container.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    /// `ActivityId` of the Create request, echoed in the exit notification.
    pub activity_id: String,
    pub bundle: PathBuf,
    pub scratch: String,
    /// `…tee-log-path`: the file the init's stdout and stderr are also appended to.
    pub tee_log: Option<PathBuf>,
    pub rootfs: PathBuf,
    /// The container's cgroup (`linux.cgroupsPath`), e.g. `/pods/<id>`.
    pub cgroup: String,
    /// Sources of the spec's bind mounts: storage the host must not take away while it runs.
    pub mount_sources: Vec<PathBuf>,
    pub kind: Kind,
    pub sandbox_root: PathBuf,
    /// The network namespace id this container was created with (lower-cased).
    pub network_namespace: String,
    /// A host-network pod (its NICs stay in the agent's namespace).
    pub host_network: bool,
    /// The spec's `process.rlimits` and `process.user`, as an object with those keys (what an
    /// exec inherits, spec §6.5).
    pub spec_process: serde_json::Value,
    /// The spec's `process.user` was a name (now resolved): an exec without a name of its own
    /// runs as that user (spec §6.5).
    pub user_from_name: bool,
    /// The policy's `allow_stdio_access` for this container: without it, its processes' stdio
    /// goes nowhere (SP §4.9).
    pub stdio_allowed: bool,
    pub init: Arc<ContainerProcess>,
    pub state: Mutex<State>,
    pub init_io: Mutex<Option<InitIo>>,
    pub processes: Mutex<HashMap<u32, Arc<ContainerProcess>>>,
    pub exit_type: Mutex<NotificationType>,
    /// Set when the container is killed, shut down by force or deleted: the init's output
    /// relays stop redialing a host that went away (spec §7.4).
    pub teardown: tokio::sync::watch::Sender<bool>,
}

impl Container {
    pub fn state(&self) -> State {
        *lock(&self.state)
    }

    pub fn set_state(&self, state: State) {
        *lock(&self.state) = state;
    }

    /// The init or an exec'd process by pid.
    pub fn process(&self, pid: u32) -> Result<Arc<ContainerProcess>, GuestError> {
        if pid == self.init.pid {
            return Ok(Arc::clone(&self.init));
        }
        lock(&self.processes)
            .get(&pid)
            .cloned()
            .ok_or(GuestError::ProcessNotFound { pid })
    }

    pub fn add_process(&self, process: Arc<ContainerProcess>) {
        lock(&self.processes).insert(process.pid, process);
    }

    pub fn remove_process(&self, pid: u32) {
        lock(&self.processes).remove(&pid);
    }

    /// Marks the container torn down ([`Container::teardown`]).
    pub fn tear_down(&self) {
        self.teardown.send_replace(true);
    }

    /// Records how the container is being stopped; the last SIGTERM or SIGKILL wins.
    pub fn note_signal(&self, signal: i32) {
        if signal == libc::SIGKILL {
            self.tear_down();
        }
        let kind = match signal {
            libc::SIGTERM => NotificationType::GracefulExit,
            libc::SIGKILL => NotificationType::ForcedExit,
            _ => return,
        };
        *lock(&self.exit_type) = kind;
    }

    pub fn exit_type(&self) -> NotificationType {
        *lock(&self.exit_type)
    }

    pub fn take_init_io(&self) -> Option<InitIo> {
        lock(&self.init_io).take()
    }

    /// Pids of processes started through the agent that still exist.
    pub fn live_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = lock(&self.processes)
            .values()
            .filter(|p| !p.has_exited())
            .map(|p| p.pid)
            .collect();
        if !self.init.has_exited() {
            pids.push(self.init.pid);
        }
        pids
    }
}
