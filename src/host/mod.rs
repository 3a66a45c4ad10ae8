//! The host side of the bridge, as a library: what hcsshim's `internal/gcs` does on Windows,
//! for tests and for `uvmboot`. It accepts the guest's connection, numbers requests from 0,
//! matches responses by id, enforces the host's rules (message size 16..=64 KiB, known response
//! ids, only `0x30100101` notifications) by failing the connection as the real host would, and
//! offers a typed call per request.

mod client;
pub mod layers;
mod listener;
pub mod qemu;
pub mod qmp;
pub mod shim;
pub mod spec;

pub use client::{BridgeClient, Frame, HostError};
pub use listener::{HybridVsock, StdioPorts};
pub use qemu::{BootTimings, Uvm, UvmConfig};
