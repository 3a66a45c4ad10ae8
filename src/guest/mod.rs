//! UVM-wide state: containers, processes and mounts, and the queue of container notifications.
//!
//! Lock order: each table has its own `std::sync::Mutex`, held only to look up, insert or
//! remove, never across an `.await`; no code path holds two of them at once.

mod error;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

pub use error::GuestError;

use crate::protocol::messages::ContainerNotification;

/// A container known to the guest. Its lifecycle (create, start, exec, wait, delete) is built on
/// the runtime helper; this is the record the bridge looks containers up by.
#[derive(Debug)]
pub struct Container {
    pub id: String,
}

/// The utility VM as the agent sees it.
#[derive(Debug)]
pub struct Guest {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    notifications: mpsc::UnboundedSender<ContainerNotification>,
    shutdown: watch::Sender<bool>,
}

/// The receiving end of the notification queue; the bridge drains it while a host is connected
/// and it keeps what arrives while none is.
pub type NotificationQueue = mpsc::UnboundedReceiver<ContainerNotification>;

impl Guest {
    pub fn new() -> (Arc<Self>, NotificationQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (shutdown, _) = watch::channel(false);
        let guest = Arc::new(Self {
            containers: Mutex::new(HashMap::new()),
            notifications: tx,
            shutdown,
        });
        (guest, rx)
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
