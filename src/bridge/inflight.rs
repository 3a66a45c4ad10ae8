//! Registry of requests being handled, for DumpStacks and for diagnosing stuck handlers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::protocol::MessageType;

#[derive(Debug)]
struct Entry {
    connection: u64,
    id: u64,
    message_type: MessageType,
    container_id: String,
    started: Instant,
}

/// Characters of a request's container id kept for the registry.
const MAX_ID_SHOWN: usize = 128;

/// Requests currently being handled, across connections.
#[derive(Debug, Default)]
pub struct InFlight {
    next: AtomicU64,
    entries: Mutex<BTreeMap<u64, Entry>>,
}

/// Removes its entry when the request's handling ends (response queued or task dropped).
#[derive(Debug)]
pub struct InFlightGuard {
    registry: Arc<InFlight>,
    key: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.registry
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl InFlight {
    pub fn enter(
        self: &Arc<Self>,
        connection: u64,
        id: u64,
        message_type: MessageType,
        container_id: &str,
    ) -> InFlightGuard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            connection,
            id,
            message_type,
            // A hostile id can be megabytes; the registry keeps enough to recognise it.
            container_id: container_id.chars().take(MAX_ID_SHOWN).collect(),
            started: Instant::now(),
        };
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, entry);
        InFlightGuard {
            registry: Arc::clone(self),
            key,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One line per request, oldest first.
    pub fn describe(&self) -> String {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for e in entries.values() {
            let _ = writeln!(
                out,
                "  connection {} id {} {} container {:?} for {:.3}s",
                e.connection,
                e.id,
                e.message_type.short_name(),
                e.container_id,
                e.started.elapsed().as_secs_f64()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_removes_entry() {
        let reg = Arc::new(InFlight::default());
        let g = reg.enter(1, 7, MessageType::WAIT_FOR_PROCESS, "c");
        assert_eq!(reg.len(), 1);
        assert!(reg
            .describe()
            .contains("id 7 WaitForProcess container \"c\""));
        drop(g);
        assert!(reg.is_empty());
    }
}
