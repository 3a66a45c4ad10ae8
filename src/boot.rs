//! What init and the agent share about the boot (issue 17): init loads the modules the bridge
//! needs (the vsock transports) before it starts the agent, and the rest in a child process
//! meanwhile; the agent answers NegotiateProtocol at once and holds every other request, in
//! order, until that child is done, so nothing the host asks for finds a driver missing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Present while init's child is still loading modules; removed when it is done (or failed).
pub const MODULES_LOADING: &str = "/run/gcs-boot-modules-loading";

/// The longest a request waits for the boot's modules before it is served anyway.
const MODULES_DEADLINE: Duration = Duration::from_secs(60);

/// How often the marker is looked at meanwhile (only during the boot, at most until the
/// deadline).
const POLL: Duration = Duration::from_millis(5);

/// Returns once [`MODULES_LOADING`] is gone (at once ever after), or after
/// [`MODULES_DEADLINE`].
pub async fn modules_loaded() {
    if !modules_loading() {
        return;
    }
    let deadline = tokio::time::Instant::now() + MODULES_DEADLINE;
    while Path::new(MODULES_LOADING).exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    DONE.store(true, Ordering::Relaxed);
}

/// Set once the modules are in (or the deadline passed): no more looking.
static DONE: AtomicBool = AtomicBool::new(false);

/// Whether init's child may still be loading modules (one atomic load once they are in).
pub fn modules_loading() -> bool {
    if DONE.load(Ordering::Relaxed) {
        return false;
    }
    // Init makes the marker before it starts the agent: once absent, it is gone for good.
    let loading = Path::new(MODULES_LOADING).exists();
    if !loading {
        DONE.store(true, Ordering::Relaxed);
    }
    loading
}
