//! Errors of UVM-level operations.

/// What went wrong in the guest, with the ids and paths involved.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("container {0:?} does not exist")]
    ContainerNotFound(String),
    #[error("process {pid} not found")]
    ProcessNotFound { pid: u32 },
    #[error("timed out waiting for process {pid}")]
    WaitTimeout { pid: u32 },
    #[error("{0}")]
    InvalidRequest(String),
    /// A container id the runtime would refuse (`E_INVALIDARG`, as runc's refusal maps).
    #[error(
        "invalid container id {0:?}: it must match ^[A-Za-z0-9_+.-]{{1,1024}}$ and not be . or .."
    )]
    InvalidId(String),
    #[error("failed to call Start for external process: {0}")]
    StartProcess(String),
    #[error("dial {stream} port {port}")]
    StdioDial {
        stream: &'static str,
        port: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0:?} already exists")]
    ContainerExists(String),
    #[error("container {0:?} is still being created")]
    StillCreating(String),
    #[error("container not running")]
    NotRunning(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("network namespace {0:?} not found")]
    NamespaceNotFound(String),
    #[error("runtime")]
    Runtime(#[source] crate::runtime::RuntimeError),
    #[error("storage")]
    Storage(#[source] crate::storage::StorageError),
    #[error("device")]
    Device(#[source] crate::devices::DeviceError),
    #[error("cgroups")]
    Cgroups(#[source] crate::cgroups::CgroupError),
    #[error("network")]
    Network(#[source] crate::network::NetworkError),
    /// The policy refused (or its answer could not be used): `context` is what was refused,
    /// in the original's words, e.g. `overlay creation denied by policy`.
    #[error("{context}")]
    Policy {
        context: String,
        #[source]
        source: crate::policy::PolicyError,
    },
    /// A policy error with no context of its own (e.g. a second `SecurityPolicy`).
    #[error(transparent)]
    PolicyRefused(#[from] crate::policy::PolicyError),
    #[error("{what} is not implemented by this agent yet")]
    NotImplemented { what: String },
    /// A confidential UVM whose unmount failed after the policy allowed it (SP §4.6): the
    /// first failure's cause, e.g. `unmounting overlay at <path> failed: <error>`.
    #[error("mount, unmount, container creation and deletion have been disabled in this UVM due to a previous error: {0}")]
    Inconsistent(String),
}

/// An id as errors show it: at most 1024 bytes (the longest valid container id) and a note of
/// the rest, so that a hostile 10 MiB id is not copied into every error about it.
pub(crate) fn shown(id: &str) -> String {
    const SHOWN: usize = 1024;
    if id.len() <= SHOWN {
        return id.to_string();
    }
    let mut cut = SHOWN;
    while !id.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes)", &id[..cut], id.len())
}
