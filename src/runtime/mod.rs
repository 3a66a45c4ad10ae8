//! Containers through youki's `libcontainer`, run in a single-threaded helper process.
//!
//! libcontainer forks and changes the process-wide working directory, so it must never run on
//! the agent's tokio threads or in a fork of the multi-threaded agent. The agent starts the
//! helper as a fresh exec of its own binary (`gcs-runtime-helper`), talks to it over a
//! `SOCK_SEQPACKET` socketpair (one JSON message per request, stdio fds passed with
//! `SCM_RIGHTS`), and serialises requests. Containers are built with `as_sibling`, so their
//! init and exec'd processes are children of the agent, collected by its one reaper.

pub mod channel;
mod client;
pub mod executor;
pub mod helper;
pub mod metrics;
pub mod passwd;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::RuntimeClient;

/// The name the helper runs under (`argv[0]`), which selects its role in `main`.
pub const HELPER_NAME: &str = "gcs-runtime-helper";

/// Where libcontainer keeps container state inside the UVM.
pub const DEFAULT_STATE_ROOT: &str = "/run/gcs/runtime";

/// A request to the helper. Stdio fds follow in `SCM_RIGHTS`, in the order stdin, stdout,
/// stderr, for each `true` in `stdio`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelperRequest {
    /// Create the container from `<bundle>/config.json`; its init waits for `Start`.
    Create {
        id: String,
        bundle: PathBuf,
        stdio: [bool; 3],
        console_socket: Option<PathBuf>,
    },
    Start {
        id: String,
    },
    /// Run the OCI process in `<process>` (a process.json) in the running container. `cwd` is
    /// the process's own `cwd` (empty when it has none), checked before libcontainer reads the
    /// file: the helper need not read it twice.
    Exec {
        id: String,
        process: PathBuf,
        cwd: String,
        stdio: [bool; 3],
        console_socket: Option<PathBuf>,
    },
    /// Kill whatever is left and remove the cgroup and state.
    Delete {
        id: String,
    },
    /// PIDs in the container's cgroup.
    Pids {
        id: String,
    },
    /// The container's cgroup statistics in the v1 `Metrics` shape.
    Stats {
        id: String,
    },
    /// Apply OCI `LinuxResources` to the running container's cgroup (`runc update`). The
    /// container's device rules are kept unless `resources` has its own.
    Update {
        id: String,
        resources: serde_json::Value,
    },
    /// A pod's cgroup (`/pods/<sandbox>`, which its containers' cgroups are below) takes a
    /// sandbox spec's `linux.resources`, devices aside (each container has its own rules).
    PodCgroup {
        path: String,
        resources: serde_json::Value,
    },
}

impl HelperRequest {
    /// The request's kind, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Start { .. } => "start",
            Self::Exec { .. } => "exec",
            Self::Delete { .. } => "delete",
            Self::Pids { .. } => "pids",
            Self::Stats { .. } => "stats",
            Self::Update { .. } => "update",
            Self::PodCgroup { .. } => "pod-cgroup",
        }
    }
}

/// What the helper answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelperResponse {
    Pid(i32),
    Done,
    Pids(Vec<i32>),
    Stats(serde_json::Value),
    Error {
        kind: RuntimeErrorKind,
        message: String,
    },
}

/// Classes of runtime failure that map to distinct HRESULTs (runc's mapping, spec §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeErrorKind {
    NotExist,
    AlreadyExists,
    InvalidId,
    NotRunning,
    StillRunning,
    Other,
}

/// Errors talking to or reported by the helper.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime helper i/o")]
    Io(#[from] std::io::Error),
    #[error("runtime helper protocol: {0}")]
    Protocol(String),
    #[error("{message}")]
    Failed {
        kind: RuntimeErrorKind,
        message: String,
    },
}

impl RuntimeError {
    pub fn kind(&self) -> RuntimeErrorKind {
        match self {
            Self::Failed { kind, .. } => *kind,
            _ => RuntimeErrorKind::Other,
        }
    }
}
