//! Errors of UVM-level operations.

/// What went wrong in the guest, with the ids and paths involved.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("container {0:?} does not exist")]
    ContainerNotFound(String),
    #[error("process {pid} not found")]
    ProcessNotFound { pid: u32 },
    #[error("{what} is not implemented by this agent yet")]
    NotImplemented { what: String },
}
