//! Fault injection for the crash tests (issue 15). Compiled into debug builds only, and live only
//! with `GCS_FAULT_INJECTION=1` in the agent's environment: ModifySettings of ResourceType
//! `GcsFaultInjection` with `Settings: {"Fault": <kind>}` makes the agent fail on purpose —
//! `panic` (in the handler), `panic-reader` (in the bridge reader, before dispatch),
//! `panic-writer` (in the bridge writer, once it has taken the first response after the fault
//! request's own answer, before writing it), `abort`, `segv` (a real memory fault). Release
//! builds know none of it: the resource type is unknown there.

/// The ResourceType that carries a fault.
pub const RESOURCE_TYPE: &str = "GcsFaultInjection";

/// A `panic-writer` fault: armed by the request of this message id, then primed once the
/// writer has taken that request's answer.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy)]
enum WriterFault {
    Armed(u64),
    Primed,
}

#[cfg(debug_assertions)]
static WRITER_PANIC: std::sync::Mutex<Option<WriterFault>> = std::sync::Mutex::new(None);

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

/// Called by the writer with each response it has taken (message id `response_id`), before
/// writing it. True once: for the first response taken after the arming request's own answer
/// (which is written), whatever else was taken in between; the writer keeps that response for
/// the next connection and panics.
pub fn writer_should_panic(response_id: u64) -> bool {
    #[cfg(debug_assertions)]
    {
        let mut fault = WRITER_PANIC.lock().unwrap_or_else(|e| e.into_inner());
        match *fault {
            Some(WriterFault::Armed(id)) if id == response_id => {
                *fault = Some(WriterFault::Primed);
            }
            Some(WriterFault::Primed) => {
                *fault = None;
                return true;
            }
            _ => {}
        }
    }
    let _ = response_id;
    false
}

/// Carries out `fault` in the handler of request `request_id` (only when [`enabled`]).
/// Errors: an unknown kind.
pub fn inject(fault: &str, request_id: u64) -> Result<(), String> {
    if !enabled() {
        return Err(format!("invalid ResourceType '{RESOURCE_TYPE}'"));
    }
    match fault {
        "panic" => panic!("injected panic in a handler"),
        "panic-writer" => {
            #[cfg(debug_assertions)]
            {
                *WRITER_PANIC.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(WriterFault::Armed(request_id));
            }
            let _ = request_id;
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
