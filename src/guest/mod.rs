//! UVM-wide state: containers, processes and mounts, and the queue of container notifications.
//!
//! Lock order: each table has its own `std::sync::Mutex`, held only to look up, insert or
//! remove, never across an `.await`; no code path holds two of them at once.

mod error;
pub mod external;
pub mod reaper;
pub mod stdio;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

pub use error::GuestError;
pub use reaper::{ExitStatus, Reaper};

use crate::protocol::messages::{
    ContainerNotification, ProcessParameters, VsockStdioRelaySettings,
};
use crate::protocol::INFINITE_WAIT;
use crate::transport::Dialer;
use external::ExternalProcess;

/// A container known to the guest. Its lifecycle (create, start, exec, wait, delete) is built on
/// the runtime helper; this is the record the bridge looks containers up by.
#[derive(Debug)]
pub struct Container {
    pub id: String,
}

/// The utility VM as the agent sees it.
#[derive(Debug)]
pub struct Guest {
    dialer: Dialer,
    reaper: Arc<Reaper>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    external: Mutex<HashMap<u32, Arc<ExternalProcess>>>,
    notifications: mpsc::UnboundedSender<ContainerNotification>,
    shutdown: watch::Sender<bool>,
}

/// The receiving end of the notification queue; the bridge drains it while a host is connected
/// and it keeps what arrives while none is.
pub type NotificationQueue = mpsc::UnboundedReceiver<ContainerNotification>;

impl Guest {
    /// `dialer` reaches the host's stdio ports; `reaper` collects every child.
    pub fn new(dialer: Dialer, reaper: Arc<Reaper>) -> (Arc<Self>, NotificationQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (shutdown, _) = watch::channel(false);
        let guest = Arc::new(Self {
            dialer,
            reaper,
            containers: Mutex::new(HashMap::new()),
            external: Mutex::new(HashMap::new()),
            notifications: tx,
            shutdown,
        });
        (guest, rx)
    }

    /// Starts a process in the UVM itself; returns its pid.
    pub async fn exec_external(
        &self,
        params: &ProcessParameters,
        ports: VsockStdioRelaySettings,
    ) -> Result<u32, GuestError> {
        let process = external::start(&self.dialer, &self.reaper, params, ports).await?;
        let pid = process.pid;
        self.external
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, process);
        Ok(pid)
    }

    /// Waits for a UVM process. The first successful wait removes it from the table.
    pub async fn wait_external(&self, pid: u32, timeout_ms: u32) -> Result<u32, GuestError> {
        let process = self
            .external
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .cloned()
            .ok_or(GuestError::ProcessNotFound { pid })?;
        let status = wait_exit(process.exit(), pid, timeout_ms).await?;
        self.external
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        Ok(status.external_code())
    }

    /// Looks a container up by id.
    pub fn container(&self, id: &str) -> Result<Arc<Container>, GuestError> {
        let table = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(id)
            .cloned()
            .ok_or_else(|| GuestError::ContainerNotFound(id.to_string()))
    }

    /// Number of containers in the table (for stack dumps and tests).
    pub fn container_count(&self) -> usize {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
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
