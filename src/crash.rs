//! Crashes are caught and reproducible (issue 15): a panic anywhere is logged — message, place,
//! thread and backtrace — before anything else happens (unwinding, or the bridge answering the
//! request with an error); a fatal signal leaves a record in the log stream and, with
//! `-core-dump-location`, a core where the kernel's `core_pattern` points.

use std::os::fd::RawFd;

/// Installs the panic hook and the fatal-signal record. `log_fd` is the log stream's
/// descriptor (the host reads it); `json` its format; `core` whether a crash lifts the
/// agent's core size limit (the UVM starts processes with none).
pub fn install(log_fd: RawFd, json: bool, core: bool) {
    std::panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload());
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(
            panic = %message,
            location = %location,
            thread = thread.name().unwrap_or("<unnamed>"),
            backtrace = %backtrace,
            "panic"
        );
    }));
    if let Err(e) = crate::sys::install_crash_record(log_fd, json, core) {
        tracing::warn!(error = %e, "cannot install the fatal-signal handler; a crash leaves no record");
    }
}

/// The text of a panic's payload (`panic!` with a literal or a formatted message).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into())
}
