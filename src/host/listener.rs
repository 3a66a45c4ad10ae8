//! Host-side listeners on the hybrid-vsock Unix sockets `<prefix>_<port>`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::{UnixListener, UnixStream};

use crate::protocol::{BRIDGE_PORT, FIRST_STDIO_PORT};
use crate::transport::Dialer;

/// Listens where a guest started with `-vsock-uds <prefix>` (or vhost-device-vsock's
/// `uds-path=<prefix>`) dials.
#[derive(Debug, Clone)]
pub struct HybridVsock {
    prefix: PathBuf,
}

impl HybridVsock {
    pub fn new(prefix: impl Into<PathBuf>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn path(&self, port: u32) -> PathBuf {
        Dialer::uds_path(&self.prefix, port)
    }

    /// Listens on `port`, replacing a stale socket file.
    pub fn listen(&self, port: u32) -> io::Result<UnixListener> {
        let path = self.path(port);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        UnixListener::bind(path)
    }

    /// Accepts one guest connection on the bridge port.
    pub async fn accept_bridge(&self) -> io::Result<UnixStream> {
        let listener = self.listen(BRIDGE_PORT)?;
        let (stream, _) = listener.accept().await?;
        Ok(stream)
    }
}

/// Allocates stdio relay ports as the host does: from 0x40000001 upward, never reused.
#[derive(Debug)]
pub struct StdioPorts {
    next: AtomicU32,
}

impl Default for StdioPorts {
    fn default() -> Self {
        Self {
            next: AtomicU32::new(FIRST_STDIO_PORT),
        }
    }
}

impl StdioPorts {
    pub fn allocate(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}
