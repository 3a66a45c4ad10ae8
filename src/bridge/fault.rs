//! Fault injection for the crash tests (issue 15). Compiled into debug builds only, and live only
//! with `GCS_FAULT_INJECTION=1` in the agent's environment: ModifySettings of ResourceType
//! `GcsFaultInjection` with `Settings: {"Fault": <kind>}` makes the agent fail on purpose —
//! `panic` (in the handler), `panic-reader` (in the bridge reader, before dispatch),
//! `panic-writer` (in the bridge writer, before its next response), `abort`, `segv` (a real
//! memory fault). Release builds know none of it: the resource type is unknown there.

/// The ResourceType that carries a fault.
pub const RESOURCE_TYPE: &str = "GcsFaultInjection";

#[cfg(debug_assertions)]
static WRITER_PANIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True in a debug build started with `GCS_FAULT_INJECTION=1`.
pub fn enabled() -> bool {
    cfg!(debug_assertions) && std::env::var_os("GCS_FAULT_INJECTION").is_some_and(|v| v == "1")
}

/// Called by the reader with each request's payload before dispatching it.
pub fn at_dispatch(payload: &[u8]) {
    if enabled()
        && payload
            .windows(b"\"panic-reader\"".len())
            .any(|w| w == b"\"panic-reader\"")
    {
        panic!("injected panic in the bridge reader");
    }
}

/// Called by the writer before it takes its next response.
pub fn at_writer() {
    #[cfg(debug_assertions)]
    if WRITER_PANIC.swap(false, std::sync::atomic::Ordering::Relaxed) {
        panic!("injected panic in the bridge writer");
    }
}

/// Carries out `fault` in the handler (only when [`enabled`]). Errors: an unknown kind.
pub fn inject(fault: &str) -> Result<(), String> {
    if !enabled() {
        return Err(format!("invalid ResourceType '{RESOURCE_TYPE}'"));
    }
    match fault {
        "panic" => panic!("injected panic in a handler"),
        "panic-writer" => {
            #[cfg(debug_assertions)]
            WRITER_PANIC.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        "abort" => std::process::abort(),
        #[cfg(debug_assertions)]
        "segv" => {
            crate::sys::fault();
            Ok(())
        }
        other => Err(format!("unknown fault {other:?}")),
    }
}
