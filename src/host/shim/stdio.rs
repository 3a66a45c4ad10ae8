//! A process's standard streams between containerd's FIFOs and the agent's vsock stdio ports.
//!
//! containerd names a FIFO per stream (`CreateTaskRequest.stdin`, ...; an empty name for a
//! stream the process does not have). The shim allocates a host port per stream as hcsshim
//! does (from 0x40000001, never reused), listens where the guest dials it (the hybrid vsock
//! socket `<prefix>_<port>`), and copies: FIFO to guest for stdin, guest to FIFO for stdout
//! and stderr. A terminal process has no stderr: the pseudo-terminal carries both.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::host::{HybridVsock, StdioPorts};
use crate::protocol::messages::VsockStdioRelaySettings;

/// The streams containerd asked for (`stdin`, `stdout`, `stderr` and `terminal` of a
/// CreateTaskRequest or ExecProcessRequest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// A stream's destination on this machine: a FIFO path, or `file://<path>` (ctr's
/// `--log-uri`), appended to. Other schemes (`binary://`) are refused.
fn local_path(name: &str) -> io::Result<PathBuf> {
    if let Some(path) = name.strip_prefix("file://") {
        return Ok(PathBuf::from(path));
    }
    if name.contains("://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("stdio {name:?}: only FIFOs and file:// are supported"),
        ));
    }
    Ok(PathBuf::from(name))
}

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

async fn open_reader(path: &Path) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
    if is_fifo(path) {
        // O_RDONLY|O_NONBLOCK: the open does not wait for the writer, and end of file comes
        // only once a writer has come and gone.
        Ok(Box::new(pipe::OpenOptions::new().open_receiver(path)?))
    } else {
        Ok(Box::new(tokio::fs::File::open(path).await?))
    }
}

async fn open_writer(path: &Path) -> io::Result<Box<dyn AsyncWrite + Send + Unpin>> {
    if is_fifo(path) {
        // O_RDWR: never ENXIO while containerd's reader is not open yet.
        Ok(Box::new(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path)?,
        ))
    } else {
        Ok(Box::new(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await?,
        ))
    }
}

/// The relay of one process's streams; dropping it stops every copy.
#[derive(Debug)]
pub struct Relay {
    /// The ports to put in ExecuteProcess (0: no such stream).
    pub settings: VsockStdioRelaySettings,
    close_stdin: Option<oneshot::Sender<()>>,
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = &self.stdin {
            t.abort();
        }
        for t in &self.outputs {
            t.abort();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

impl Relay {
    /// Listens for the guest's connection on a fresh port per stream and starts the copies;
    /// a stream's FIFO is opened when the guest connects.
    pub fn start(vsock: &HybridVsock, ports: &StdioPorts, paths: &StdioPaths) -> io::Result<Relay> {
        let mut relay = Relay {
            settings: VsockStdioRelaySettings::default(),
            close_stdin: None,
            stdin: None,
            outputs: Vec::new(),
            sockets: Vec::new(),
        };
        if !paths.stdin.is_empty() {
            let path = local_path(&paths.stdin)?;
            let port = ports.allocate();
            let listener = vsock.listen(port)?;
            relay.sockets.push(vsock.path(port));
            relay.settings.std_in = port;
            let (tx, rx) = oneshot::channel();
            relay.close_stdin = Some(tx);
            relay.stdin = Some(tokio::spawn(copy_in(listener, vsock.path(port), path, rx)));
        }
        let outputs = [(&paths.stdout, false), (&paths.stderr, true)];
        for (name, is_err) in outputs {
            if name.is_empty() || (is_err && paths.terminal) {
                continue;
            }
            let path = local_path(name)?;
            let port = ports.allocate();
            let listener = vsock.listen(port)?;
            relay.sockets.push(vsock.path(port));
            if is_err {
                relay.settings.std_err = port;
            } else {
                relay.settings.std_out = port;
            }
            relay
                .outputs
                .push(tokio::spawn(copy_out(listener, vsock.path(port), path)));
        }
        Ok(relay)
    }

    /// CloseIO: the process's stdin reaches end of file (the guest connection is closed).
    pub fn close_stdin(&mut self) {
        if let Some(tx) = self.close_stdin.take() {
            let _ = tx.send(());
        }
    }

    /// The output copies, for the exit's waiter to wait for (at most a while: it aborts what
    /// is left) without holding the relay.
    pub fn take_outputs(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.outputs)
    }
}

async fn copy_in(
    listener: UnixListener,
    socket: PathBuf,
    path: PathBuf,
    closed: oneshot::Receiver<()>,
) {
    let Ok((mut conn, _)) = listener.accept().await else {
        return;
    };
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let mut source = match open_reader(&path).await {
        Ok(s) => s,
        Err(e) => {
            log::warn!("stdin {}: {e}", path.display());
            return;
        }
    };
    tokio::select! {
        r = tokio::io::copy(&mut source, &mut conn) => {
            if let Err(e) = r {
                log::debug!("stdin {}: {e}", path.display());
            }
        }
        _ = closed => {}
    }
    let _ = conn.shutdown().await;
}

async fn copy_out(listener: UnixListener, socket: PathBuf, path: PathBuf) {
    let Ok((mut conn, _)) = listener.accept().await else {
        return;
    };
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let mut sink = match open_writer(&path).await {
        Ok(s) => s,
        Err(e) => {
            log::warn!("output {}: {e}", path.display());
            return;
        }
    };
    if let Err(e) = tokio::io::copy(&mut conn, &mut sink).await {
        log::debug!("output {}: {e}", path.display());
    }
    let _ = sink.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_fifos_or_files() {
        assert_eq!(
            local_path("/run/x/stdout").unwrap(),
            PathBuf::from("/run/x/stdout")
        );
        assert_eq!(
            local_path("file:///var/log/c.log").unwrap(),
            PathBuf::from("/var/log/c.log")
        );
        let e = local_path("binary:///usr/bin/logger?x=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("binary://"), "{e}");
    }
}
