//! The agent's side of the helper: starts it, sends one request at a time, restarts it if it
//! dies.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::channel::{self, MAX_MESSAGE};
use super::{HelperRequest, HelperResponse, RuntimeError, HELPER_NAME};
use crate::reaper::Reaper;

struct Helper {
    sock: AsyncFd<OwnedFd>,
    pid: i32,
    /// Where responses are received, [`MAX_MESSAGE`] bytes, kept for the helper's life: one
    /// allocation of that size per call is an mmap and munmap each (it is above the
    /// allocator's mmap threshold). Only the pages a response touches become resident.
    buf: Vec<u8>,
}

/// Connection to the runtime helper; requests are serialised.
pub struct RuntimeClient {
    state_root: PathBuf,
    reaper: Arc<Reaper>,
    helper: Mutex<Option<Helper>>,
    /// The agent's own executable (`/proc/self/exe`, O_PATH), opened when the client is made;
    /// the helper is exec'd through it, so it is this very binary even if the file at the
    /// agent's path is replaced meanwhile (or, under valgrind, which answers an open of
    /// `/proc/self/exe` with the client's file, the agent rather than valgrind). `None` if it
    /// could not be opened: `/proc/self/exe` then.
    exe: Option<OwnedFd>,
}

impl std::fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeClient")
            .field("state_root", &self.state_root)
            .finish()
    }
}

impl RuntimeClient {
    pub fn new(state_root: PathBuf, reaper: Arc<Reaper>) -> Self {
        let exe = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open("/proc/self/exe")
        }
        .map(OwnedFd::from)
        .map_err(|e| warn!(error = %e, "cannot open /proc/self/exe; the helper is exec'd by path"))
        .ok();
        Self {
            exe,
            state_root,
            reaper,
            helper: Mutex::new(None),
        }
    }

    fn start_helper(&self) -> Result<Helper, RuntimeError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let path = self.exe.as_ref().map_or_else(
            || "/proc/self/exe".to_owned(),
            |fd| format!("/proc/self/fd/{}", fd.as_raw_fd()),
        );
        let exe =
            std::ffi::CString::new(path).map_err(|e| RuntimeError::Protocol(e.to_string()))?;
        let argv = [
            HELPER_NAME.to_string(),
            self.state_root.to_string_lossy().into_owned(),
        ]
        .into_iter()
        .map(std::ffi::CString::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RuntimeError::Protocol(e.to_string()))?;
        let envp = vec![std::ffi::CString::new(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .map_err(|e| RuntimeError::Protocol(e.to_string()))?];
        let request = crate::sys::SpawnRequest {
            program: exe,
            argv,
            envp,
            cwd: None,
            stdio: [Some(theirs.as_raw_fd()), None, Some(2)],
            controlling_tty: false,
        };
        let pid = self.reaper.spawn(&request).map_err(|(stage, errno, _)| {
            RuntimeError::Protocol(format!("start helper ({stage:?}): {errno}"))
        })?;
        drop(theirs);
        let flags = nix::fcntl::fcntl(ours.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(std::io::Error::from)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(ours.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(std::io::Error::from)?;
        // Its exit is collected (and dropped) by the reaper.
        drop(self.reaper.watch(pid));
        info!(pid, "runtime helper started");
        Ok(Helper {
            sock: crate::sys::register_async_fd(ours)?,
            pid,
            buf: vec![0u8; MAX_MESSAGE],
        })
    }

    /// Sends one request with its stdio fds and waits for the answer.
    pub async fn call(
        &self,
        request: &HelperRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<HelperResponse, RuntimeError> {
        let payload =
            serde_json::to_vec(request).map_err(|e| RuntimeError::Protocol(e.to_string()))?;
        let mut guard = self.helper.lock().await;
        if guard.is_none() {
            *guard = Some(self.start_helper()?);
        }
        let started = std::time::Instant::now();
        let result = match guard.as_mut() {
            Some(helper) => exchange(helper, &payload, &fds).await,
            None => Err(RuntimeError::Protocol("no helper".into())),
        };
        // The helper's time for the request, the channel included (debug level).
        tracing::debug!(
            request = request.name(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "runtime helper call"
        );
        if let Err(e) = &result {
            if let Some(h) = guard.take() {
                warn!(pid = h.pid, error = %e, "runtime helper failed; it will be restarted");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(h.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match result? {
            HelperResponse::Error { kind, message } => Err(RuntimeError::Failed { kind, message }),
            other => Ok(other),
        }
    }
}

async fn exchange(
    helper: &mut Helper,
    payload: &[u8],
    fds: &[OwnedFd],
) -> Result<HelperResponse, RuntimeError> {
    loop {
        let mut guard = helper.sock.writable().await?;
        match guard.try_io(|s| {
            channel::send(s.get_ref().as_raw_fd(), payload, fds).map_err(std::io::Error::from)
        }) {
            Ok(r) => {
                r?;
                break;
            }
            Err(_would_block) => continue,
        }
    }
    let Helper { sock, buf, .. } = helper;
    let n = loop {
        let mut guard = sock.readable().await?;
        match guard
            .try_io(|s| channel::recv(s.get_ref().as_raw_fd(), buf).map_err(std::io::Error::from))
        {
            Ok(Ok(Some((n, _)))) => break n,
            Ok(Ok(None)) => return Err(RuntimeError::Protocol("runtime helper exited".into())),
            Ok(Err(e)) => return Err(e.into()),
            Err(_would_block) => continue,
        }
    };
    serde_json::from_slice(&buf[..n])
        .map_err(|e| RuntimeError::Protocol(format!("bad response: {e}")))
}
