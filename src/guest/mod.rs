//! UVM-wide state: containers, UVM processes, pods and network namespaces, and the queue of
//! container notifications.
//!
//! Lock order: each table has its own `std::sync::Mutex`, held only to look up, insert or
//! remove, never across an `.await`; no code path holds two of them at once.

pub mod consistency;
pub mod constraints;
pub mod container;
mod error;
pub mod external;
pub mod lifecycle;
pub mod network;
pub mod security;
pub mod spec;
pub mod stdio;
pub mod storage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};

pub use crate::reaper::{ExitStatus, Reaper};
pub use container::Container;
pub use error::GuestError;

use crate::protocol::messages::{
    ContainerNotification, ProcessParameters, VsockStdioRelaySettings,
};
use crate::protocol::INFINITE_WAIT;
use crate::runtime::RuntimeClient;
use crate::transport::Dialer;
use external::ExternalProcess;

/// UVM processes the table keeps (running, or exited and not yet waited for) before exited ones
/// nobody waited for are forgotten.
pub const MAX_UVM_PROCESSES: usize = 1024;

/// A slot of the container table: reserved while Create runs, then the container.
#[derive(Debug)]
enum Entry {
    Creating,
    Ready(Arc<Container>),
    /// DeleteContainerState is cleaning up: the id is not found, and not free yet (a Create
    /// of it meanwhile would have its bundle and cgroup removed by that clean-up).
    Deleting,
}

/// A network namespace the host told us about: its NICs, and where they live once its sandbox
/// (or standalone container) exists.
#[derive(Debug, Default)]
struct Namespace {
    adapters: Vec<crate::network::adapter::Adapter>,
    /// The init of the container whose network namespace this is, once created.
    pid: Option<u32>,
    /// A host-network pod: NICs are configured in the agent's own namespace.
    host_network: bool,
}

/// The utility VM as the agent sees it.
#[derive(Debug)]
pub struct Guest {
    dialer: Dialer,
    reaper: Arc<Reaper>,
    runtime: RuntimeClient,
    /// Runtime state, console sockets and exec process files.
    runtime_dir: PathBuf,
    /// Bound of the pipe-mode clean-close handshake.
    handshake_timeout: std::time::Duration,
    containers: Mutex<HashMap<String, Entry>>,
    external: Mutex<HashMap<u32, Arc<ExternalProcess>>>,
    sandbox_roots: Mutex<HashMap<String, PathBuf>>,
    namespaces: Mutex<HashMap<String, Namespace>>,
    /// Mounts made for the host (layers, disks, shares, rootfs overlays).
    storage: Arc<crate::storage::Storage>,
    /// `/gcs` and `/pods`, when the agent set them up (in a UVM or a test sandbox).
    uvm_cgroups: Option<Arc<crate::cgroups::UvmCgroups>>,
    notifications: mpsc::UnboundedSender<ContainerNotification>,
    shutdown: watch::Sender<bool>,
    /// The security policy every enforcement point asks (open door unless told otherwise).
    policy: Arc<crate::policy::Policy>,
    /// Set when an unmount the policy allowed failed (SP §4.6; read only with a policy).
    inconsistent: consistency::Latch,
}

/// The receiving end of the notification queue; the bridge drains it while a host is connected
/// and it keeps what arrives while none is.
pub type NotificationQueue = mpsc::UnboundedReceiver<ContainerNotification>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Guest {
    /// `dialer` reaches the host's stdio ports; `reaper` collects every child; container
    /// runtime state lives under `runtime_dir`.
    pub fn new(
        dialer: Dialer,
        reaper: Arc<Reaper>,
        runtime_dir: PathBuf,
    ) -> (Arc<Self>, NotificationQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (shutdown, _) = watch::channel(false);
        let runtime = RuntimeClient::new(runtime_dir.join("state"), Arc::clone(&reaper));
        let guest = Arc::new(Self {
            dialer,
            reaper,
            runtime,
            runtime_dir,
            handshake_timeout: stdio::HANDSHAKE_TIMEOUT,
            containers: Mutex::new(HashMap::new()),
            external: Mutex::new(HashMap::new()),
            sandbox_roots: Mutex::new(HashMap::new()),
            namespaces: Mutex::new(HashMap::new()),
            storage: Arc::default(),
            uvm_cgroups: None,
            notifications: tx,
            shutdown,
            policy: Arc::new(crate::policy::Policy::new(Arc::new(
                crate::policy::open_door::OpenDoor,
            ))),
            inconsistent: consistency::Latch::default(),
        });
        (guest, rx)
    }

    /// Changes the clean-close handshake bound (before the guest is shared).
    pub fn set_handshake_timeout(self: &mut Arc<Self>, timeout: std::time::Duration) {
        if let Some(guest) = Arc::get_mut(self) {
            guest.handshake_timeout = timeout;
        }
    }

    /// Hands the UVM cgroups to the guest (before the guest is shared).
    pub fn set_uvm_cgroups(self: &mut Arc<Self>, cgroups: Arc<crate::cgroups::UvmCgroups>) {
        if let Some(guest) = Arc::get_mut(self) {
            guest.uvm_cgroups = Some(cgroups);
        }
    }

    /// Starts with `enforcer` instead of the open door (`-initial-policy-stance deny`; before the
    /// guest is shared).
    ///
    /// # Panics
    /// If the guest is shared already: a closed door must never silently stay open.
    pub fn set_initial_enforcer(self: &mut Arc<Self>, enforcer: Arc<dyn crate::policy::Enforcer>) {
        #[allow(clippy::expect_used, reason = "a start-up ordering bug, not an input")]
        let guest =
            Arc::get_mut(self).expect("the initial enforcer is set before the guest is shared");
        guest.policy = Arc::new(crate::policy::Policy::new(enforcer));
    }

    /// The security policy state.
    pub fn policy(&self) -> &crate::policy::Policy {
        &self.policy
    }

    /// Asks `point` with `input`; a refusal becomes an error whose text starts with `context`
    /// (the original's wording of what was refused).
    pub fn enforce(
        &self,
        point: crate::policy::EnforcementPoint,
        input: serde_json::Value,
        context: impl FnOnce() -> String,
    ) -> Result<crate::policy::Decision, GuestError> {
        self.policy
            .decide(point, input)
            .map_err(|source| GuestError::Policy {
                context: context(),
                source,
            })
    }

    /// PodCgroupMemoryLimit (§5.11): recompute and apply the `/pods` limit.
    pub async fn update_pods_limit(&self) -> Result<Option<u64>, GuestError> {
        let Some(cgroups) = self.uvm_cgroups.clone() else {
            return Err(GuestError::InvalidState(
                "the UVM cgroups were not set up (the agent is not in a utility VM)".into(),
            ));
        };
        tokio::task::spawn_blocking(move || cgroups.update_pods_limit())
            .await
            .map_err(|e| GuestError::InvalidState(format!("cgroup task failed: {e}")))?
            .map_err(GuestError::Cgroups)
    }

    fn lock_containers(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        lock(&self.containers)
    }

    fn lock_sandbox_roots(&self) -> MutexGuard<'_, HashMap<String, PathBuf>> {
        lock(&self.sandbox_roots)
    }

    /// Makes the record of namespace `id` unless there is one; returns whether it made it.
    fn namespace_get_or_add(&self, id: &str) -> bool {
        let mut namespaces = lock(&self.namespaces);
        if namespaces.contains_key(id) {
            return false;
        }
        namespaces.insert(id.to_string(), Namespace::default());
        true
    }

    /// Drops the record of namespace `id` if nothing uses it (no NICs, no container in it).
    fn namespace_remove_if_unused(&self, id: &str) {
        let mut namespaces = lock(&self.namespaces);
        if namespaces
            .get(id)
            .is_some_and(|ns| ns.adapters.is_empty() && ns.pid.is_none())
        {
            namespaces.remove(id);
        }
    }

    fn namespace_exists(&self, id: &str) -> bool {
        lock(&self.namespaces).contains_key(id)
    }

    /// Drops a namespace record, keyed by the namespace id (the original keys this by the
    /// container id by mistake, so its records outlive their pods).
    fn namespace_remove(&self, id: &str) {
        lock(&self.namespaces).remove(id);
    }

    /// Starts a process in the UVM itself; returns its pid.
    pub async fn exec_external(
        &self,
        params: &ProcessParameters,
        ports: VsockStdioRelaySettings,
    ) -> Result<u32, GuestError> {
        external::check_sizes(params)?;
        // SP §4.11: `argList` is `CommandArgs` as sent, the environment as `K=V`.
        let env: Vec<String> = params
            .environment
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let decision = self.enforce(
            crate::policy::EnforcementPoint::ExecExternal,
            crate::policy::input::exec_external(
                &params.command_args,
                &env,
                &params.working_directory,
            ),
            || "exec is denied due to policy".into(),
        )?;
        let stdio_allowed = decision.allow_stdio_access()?;
        if !stdio_allowed && params.emulate_console {
            return Err(GuestError::InvalidRequest(
                "exec of process that requires terminal access denied due to policy not allowing stdio access".into(),
            ));
        }
        let filtered;
        let params = match decision.env_list()? {
            Some(allowed) => {
                let mut p = params.clone();
                p.environment = Some(
                    params
                        .environment
                        .iter()
                        .flatten()
                        .zip(&env)
                        .filter(|(_, entry)| allowed.contains(entry))
                        .map(|((k, v), _)| (k.clone(), v.clone()))
                        .collect(),
                );
                filtered = p;
                &filtered
            }
            None => params,
        };
        let process =
            external::start(&self.dialer, &self.reaper, params, ports, stdio_allowed).await?;
        let pid = process.pid;
        let mut table = lock(&self.external);
        // Bounded: a host that never waits for its UVM processes cannot grow the table without
        // end; past the bound, exited processes nobody waited for are forgotten.
        if table.len() >= MAX_UVM_PROCESSES {
            let exited: Vec<u32> = table
                .iter()
                .filter(|(_, p)| p.exit().borrow().is_some())
                .map(|(pid, _)| *pid)
                .take(table.len() + 1 - MAX_UVM_PROCESSES)
                .collect();
            for old in exited {
                tracing::warn!(
                    pid = old,
                    "forgetting an exited UVM process nobody waited for"
                );
                table.remove(&old);
            }
        }
        table.insert(pid, process);
        Ok(pid)
    }

    /// Waits for a UVM process. The first successful wait removes it from the table.
    pub async fn wait_external(&self, pid: u32, timeout_ms: u32) -> Result<u32, GuestError> {
        let process = lock(&self.external)
            .get(&pid)
            .cloned()
            .ok_or(GuestError::ProcessNotFound { pid })?;
        let status = wait_exit(process.exit(), pid, timeout_ms).await?;
        lock(&self.external).remove(&pid);
        Ok(status.external_code())
    }

    /// Looks a container up by id; one still being created is an error.
    pub fn container(&self, id: &str) -> Result<Arc<Container>, GuestError> {
        match self.lock_containers().get(id) {
            Some(Entry::Ready(c)) => Ok(Arc::clone(c)),
            Some(Entry::Creating) => Err(GuestError::StillCreating(id.to_string())),
            Some(Entry::Deleting) | None => Err(GuestError::ContainerNotFound(error::shown(id))),
        }
    }

    /// Number of containers in the table (for stack dumps and tests).
    pub fn container_count(&self) -> usize {
        self.lock_containers().len()
    }

    /// The reaper's unclaimed exits and watched pids (for stack dumps and tests).
    pub fn reaper_counts(&self) -> (usize, usize) {
        self.reaper.counts()
    }

    /// Number of UVM processes in the table (for stack dumps and tests).
    pub fn uvm_process_count(&self) -> usize {
        lock(&self.external).len()
    }

    /// Queues a container notification for the host. It is sent on the current connection, or
    /// on the next one if the host is disconnected.
    pub fn notify(&self, notification: ContainerNotification) {
        // The receiver lives as long as the bridge, which outlives every caller.
        let _ = self.notifications.send(notification);
    }

    /// Asks the agent to stop serving and power the UVM off (ShutdownGraceful/Forced for the
    /// null container id).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once a UVM shutdown was requested.
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Waits on an exit latch, with `TimeoutInMs` semantics (`0xFFFFFFFF` is forever).
pub async fn wait_exit(
    mut exit: watch::Receiver<Option<ExitStatus>>,
    pid: u32,
    timeout_ms: u32,
) -> Result<ExitStatus, GuestError> {
    let wait = async {
        match exit.wait_for(|s| s.is_some()).await {
            Ok(s) => Ok((*s).unwrap_or(ExitStatus::Code(255))),
            Err(_) => Err(GuestError::ProcessNotFound { pid }),
        }
    };
    if timeout_ms == INFINITE_WAIT {
        return wait.await;
    }
    tokio::time::timeout(
        std::time::Duration::from_millis(u64::from(timeout_ms)),
        wait,
    )
    .await
    .map_err(|_| GuestError::WaitTimeout { pid })?
}
