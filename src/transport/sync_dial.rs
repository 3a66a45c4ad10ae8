//! Blocking dials for the single-threaded roles (`init`, `vsockexec`), which run before any
//! async runtime exists.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use super::{Dialer, VSOCK_UDS_ENV};

/// Connects to host port `port`: over vsock to CID 2, or to `<prefix>_<port>` when the
/// `GCS_VSOCK_UDS` environment variable names a hybrid-vsock prefix (tests only).
pub fn dial(port: u32) -> io::Result<OwnedFd> {
    match std::env::var_os(VSOCK_UDS_ENV) {
        Some(prefix) if !prefix.is_empty() => {
            let path = Dialer::uds_path(&PathBuf::from(prefix), port);
            Ok(std::os::unix::net::UnixStream::connect(path)?.into())
        }
        _ => {
            let addr = vsock::VsockAddr::new(super::HOST_CID, port);
            Ok(vsock::VsockStream::connect(&addr)?.into())
        }
    }
}
