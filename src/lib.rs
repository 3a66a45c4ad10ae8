//! gcs: a guest compute service for Linux utility VMs, speaking hcsshim's HCS bridge protocol.
//!
//! One static multi-call binary plays `init` (PID 1), `vsockexec` and `gcs` (the agent). Data
//! flows one way: `transport` → `bridge` → `guest` → storage, network and runtime. `protocol` is shared
//! with `host`, the host-side client used by tests and `uvmboot`.

pub mod agent;
pub mod boot;
pub mod bridge;
pub mod cgroups;
pub mod cli;
pub mod crash;
pub mod devices;
pub mod fuzz;
pub mod guest;
pub mod host;
pub mod init;
pub mod kmsg;
pub mod logging;
pub mod network;
pub mod policy;
pub mod protocol;
pub mod reaper;
pub mod runtime;
pub mod safe_fs;
pub mod storage;
pub mod sys;
pub mod timesync;
pub mod transport;
pub mod uevent;
pub mod worker;
