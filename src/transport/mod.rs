//! How the guest reaches the host: AF_VSOCK to CID 2 in a real utility VM, or, for tests, the
//! hybrid-vsock convention of vhost-device-vsock and Firecracker where "dial port P" connects
//! to the Unix socket `<prefix>_<P>`; and the agent's own stdin/stdout (`-use-inouterr`).

mod fd_stream;
mod stream;
pub mod sync_dial;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use fd_stream::FdStream;
pub use stream::Stream;

/// The host's vsock context id.
pub const HOST_CID: u32 = 2;

/// Environment variable that redirects the synchronous dials of `init` and `vsockexec` to Unix
/// sockets, the same way `-vsock-uds` does for the agent. Meant for tests only.
pub const VSOCK_UDS_ENV: &str = "GCS_VSOCK_UDS";

/// Delay between dial attempts, as the original.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts for a stdio or Plan9 dial before giving up.
pub const DIAL_ATTEMPTS: u32 = 10;

/// Where "dial vsock port P" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialer {
    Vsock { cid: u32 },
    Uds { prefix: PathBuf },
}

impl Dialer {
    pub fn new(vsock_uds: Option<PathBuf>) -> Self {
        match vsock_uds {
            Some(prefix) => Self::Uds { prefix },
            None => Self::Vsock { cid: HOST_CID },
        }
    }

    /// The Unix socket path that stands for `port` under a hybrid-vsock prefix.
    pub fn uds_path(prefix: &std::path::Path, port: u32) -> PathBuf {
        let mut s = prefix.as_os_str().to_owned();
        s.push(format!("_{port}"));
        PathBuf::from(s)
    }

    /// One connection attempt.
    pub async fn dial_once(&self, port: u32) -> io::Result<Stream> {
        match self {
            Self::Vsock { cid } => {
                let addr = tokio_vsock::VsockAddr::new(*cid, port);
                Ok(Stream::Vsock(
                    tokio_vsock::VsockStream::connect(addr).await?,
                ))
            }
            Self::Uds { prefix } => Ok(Stream::Unix(
                tokio::net::UnixStream::connect(Self::uds_path(prefix, port)).await?,
            )),
        }
    }

    /// Dials a stdio (or Plan9) port: up to 10 attempts 100 ms apart, retrying only while no
    /// listener is there yet (`ETIMEDOUT` on vsock; a missing or refusing socket on the Unix
    /// transport). Any other error fails at once.
    pub async fn dial(&self, port: u32) -> io::Result<Stream> {
        let mut attempt = 1;
        loop {
            match self.dial_once(port).await {
                Ok(s) => return Ok(s),
                Err(e) if attempt < DIAL_ATTEMPTS && is_retryable(&e) => {
                    attempt += 1;
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("dial port {port}: {e}")));
                }
            }
        }
    }
}

/// Errors that mean "the host has no listener on that port yet".
pub fn is_retryable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIMEDOUT) | Some(libc::ENOENT) | Some(libc::ECONNREFUSED)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uds_path_naming() {
        assert_eq!(
            Dialer::uds_path(std::path::Path::new("/tmp/vm.vsock"), 1073741824),
            PathBuf::from("/tmp/vm.vsock_1073741824")
        );
    }

    #[tokio::test]
    async fn dial_gives_up_after_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dialer::new(Some(dir.path().join("v")));
        let start = std::time::Instant::now();
        let err = d.dial(5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(start.elapsed() >= RETRY_INTERVAL * (DIAL_ATTEMPTS - 1));
    }

    #[tokio::test]
    async fn dial_waits_for_late_listener() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("v");
        let d = Dialer::new(Some(prefix.clone()));
        let path = Dialer::uds_path(&prefix, 7);
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let l = tokio::net::UnixListener::bind(path).unwrap();
            l.accept().await.unwrap()
        });
        let _s = d.dial(7).await.unwrap();
        late.await.unwrap();
    }
}
