//! stdio of processes: dialing the host's relay ports, and the relays between those
//! connections and a process's pipes or pty (spec §7).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::debug;

use super::GuestError;
use crate::protocol::messages::{ProcessParameters, VsockStdioRelaySettings};
use crate::transport::{Dialer, Stream};

/// The host connections of one process; `None` where the stream was not requested.
#[derive(Debug, Default)]
pub struct StdioConnections {
    pub stdin: Option<Stream>,
    pub stdout: Option<Stream>,
    pub stderr: Option<Stream>,
}

/// The requested streams with no host behind them: what a process gets when the security
/// policy denies it stdio (`allow_stdio_access: false`, spec §7.5). Its stdin ends at once and
/// what it writes is discarded (a tee log still receives it); the host's ports are never dialled.
pub fn null(params: &ProcessParameters) -> StdioConnections {
    let pick = |wanted: bool| wanted.then_some(Stream::Null);
    StdioConnections {
        stdin: pick(params.create_std_in_pipe),
        stdout: pick(params.create_std_out_pipe),
        stderr: pick(params.create_std_err_pipe),
    }
}

/// Dials the requested streams in the order stdin, stdout, stderr, before the process starts
/// and before ExecuteProcess is answered. A failure closes what was already connected.
pub async fn dial(
    dialer: &Dialer,
    params: &ProcessParameters,
    ports: VsockStdioRelaySettings,
) -> Result<StdioConnections, GuestError> {
    let mut out = StdioConnections::default();
    let wanted = [
        (params.create_std_in_pipe, ports.std_in, "stdin"),
        (params.create_std_out_pipe, ports.std_out, "stdout"),
        (params.create_std_err_pipe, ports.std_err, "stderr"),
    ];
    for (i, (requested, port, name)) in wanted.into_iter().enumerate() {
        if !requested {
            continue;
        }
        if port == 0 {
            return Err(GuestError::InvalidRequest(format!(
                "{name} requested without a relay port"
            )));
        }
        let stream = dialer
            .dial(port)
            .await
            .map_err(|source| GuestError::StdioDial {
                stream: name,
                port,
                source,
            })?;
        match i {
            0 => out.stdin = Some(stream),
            1 => out.stdout = Some(stream),
            _ => out.stderr = Some(stream),
        }
    }
    Ok(out)
}

/// Opens a pty pair; both ends close on exec.
pub fn open_pty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd), GuestError> {
    let pty = nix::pty::openpty(None, None).map_err(|e| GuestError::Io {
        what: "openpty".into(),
        source: e.into(),
    })?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| GuestError::Io {
            what: "pty cloexec".into(),
            source: e.into(),
        })?;
    }
    if rows > 0 && cols > 0 {
        let _ = crate::sys::set_window_size(pty.master.as_fd(), rows, cols);
    }
    Ok((pty.master, pty.slave))
}

/// A pty master shared by the relay and ResizeConsole.
#[derive(Debug, Clone)]
pub struct PtyMaster(Arc<AsyncFd<OwnedFd>>);

impl PtyMaster {
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), GuestError> {
        crate::sys::set_window_size(self.0.get_ref().as_fd(), rows, cols).map_err(|e| {
            GuestError::Io {
                what: "resize console".into(),
                source: e.into(),
            }
        })
    }
}

/// Relays a pty: host stdin → master, master → host stdout. No handshake in tty mode: when
/// reading the master ends (EIO once every slave holder is gone), all connections close.
/// stderr is never used; if dialed it is closed at the end. Resolves `done` when the output is
/// drained.
/// A file that a container init's output is also appended to (the tee log, spec §6.3 step 7);
/// the streams share it. A failed write to it is logged once and the relay goes on.
pub type TeeLog = Option<Arc<std::fs::File>>;

fn tee(log: &TeeLog, data: &[u8], failed: &mut bool) {
    use std::io::Write;
    if let (Some(file), false) = (log, *failed) {
        if let Err(e) = (&**file).write_all(data) {
            tracing::warn!(error = %e, "cannot append to the tee log");
            *failed = true;
        }
    }
}

pub fn relay_pty(
    master: OwnedFd,
    io: StdioConnections,
    log: TeeLog,
) -> Result<(PtyMaster, oneshot::Receiver<()>), GuestError> {
    let flags =
        nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).map_err(|e| {
            GuestError::Io {
                what: "pty flags".into(),
                source: e.into(),
            }
        })?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| {
        GuestError::Io {
            what: "pty flags".into(),
            source: e.into(),
        }
    })?;
    let master = PtyMaster(Arc::new(crate::sys::register_async_fd(master).map_err(
        |source| GuestError::Io {
            what: "register pty".into(),
            source,
        },
    )?));
    let (done_tx, done_rx) = oneshot::channel();
    let StdioConnections {
        stdin,
        stdout,
        stderr,
    } = io;
    let input = stdin.map(|mut stdin| {
        let m = master.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 || write_all_fd(&m.0, &buf[..n]).await.is_err() {
                    break;
                }
            }
        })
    });
    let m = master.clone();
    tokio::spawn(async move {
        let mut stdout = stdout;
        let mut buf = vec![0u8; 32 * 1024];
        let mut tee_failed = false;
        loop {
            let n = match read_fd(&m.0, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            tee(&log, &buf[..n], &mut tee_failed);
            if let Some(out) = stdout.as_mut() {
                if out.write_all(&buf[..n]).await.is_err() {
                    stdout = None;
                }
            }
        }
        if let Some(mut out) = stdout {
            let _ = out.shutdown().await;
        }
        if let Some(task) = input {
            task.abort();
        }
        drop(stderr);
        debug!("pty relay finished");
        let _ = done_tx.send(());
    });
    Ok((master, done_rx))
}

async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard
            .try_io(|f| nix::unistd::read(f.get_ref().as_raw_fd(), buf).map_err(io::Error::from))
        {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|f| nix::unistd::write(f.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// How long output may keep draining after the process exited before the relay is abandoned
/// (a background child can hold the pty or pipe open forever).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// Default bound of the clean-close handshake: how long a finished output stream waits for the
/// host to close its side after the guest half-closed. The original waits forever; a host that
/// never closes must not hold a WaitForProcess response hostage (`-stdio-handshake-timeout-ms`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's ends of a container process's three pipes.
#[derive(Debug)]
pub struct Pipes {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Creates the three pipes of a container process: the agent's ends, and the process's ends
/// (stdin read end, stdout and stderr write ends) for the runtime.
pub fn make_pipes() -> Result<(Pipes, [OwnedFd; 3]), GuestError> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| GuestError::Io {
            what: "create pipe".into(),
            source: e.into(),
        })
    };
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    Ok((
        Pipes {
            stdin: in_w,
            stdout: out_r,
            stderr: err_r,
        },
        [in_r, out_w, err_w],
    ))
}

fn nonblocking(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>, GuestError> {
    let io = |source| GuestError::Io {
        what: "pipe".into(),
        source,
    };
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| io(e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| io(e.into()))?;
    crate::sys::register_async_fd(fd).map_err(io)
}

/// How a container init's stdout and stderr reconnect when the host goes away (spec §7.4): a
/// write failing with EPIPE, ECONNRESET or ENOTCONN makes the relay redial the same port every
/// 100 ms until it connects or the container is torn down, then resend the last
/// [`RESEND_BYTES`] written. Meanwhile the pipe is not read: the process blocks on it, as with a
/// slow host (nothing is buffered without bound).
#[derive(Debug, Clone)]
pub struct Reconnect {
    pub dialer: Dialer,
    pub stdout_port: u32,
    pub stderr_port: u32,
    pub teardown: tokio::sync::watch::Receiver<bool>,
}

/// How much of what an init wrote is sent again after a reconnect.
pub const RESEND_BYTES: usize = 128 * 1024;

/// Relays pipes (spec §7.2). Streams the host did not request get their agent-side end closed
/// at once, so the process reads EOF or gets EPIPE. Output: pipe → socket until every writer
/// is gone, then the clean-close handshake (half-close, wait for the host's EOF, bounded by
/// [`HANDSHAKE_TIMEOUT`], close). Input: socket → pipe; the host's half-close closes the pipe,
/// and so does the process's exit (`exited`). Resolves the returned receiver when both outputs
/// are done.
pub fn relay_pipes(
    pipes: Pipes,
    io: StdioConnections,
    exited: tokio::sync::watch::Receiver<bool>,
    handshake: Duration,
    log: TeeLog,
    reconnect: Option<Reconnect>,
) -> Result<oneshot::Receiver<()>, GuestError> {
    let StdioConnections {
        stdin,
        stdout,
        stderr,
    } = io;
    if let Some(mut sock) = stdin {
        let pipe = nonblocking(pipes.stdin)?;
        let mut exited = exited;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = tokio::select! {
                    r = sock.read(&mut buf) => match r { Ok(n) if n > 0 => n, _ => break },
                    _ = exited.wait_for(|e| *e) => break,
                };
                if write_all_fd(&pipe, &buf[..n]).await.is_err() {
                    break;
                }
            }
            // Dropping the pipe is the process's EOF.
        });
    }
    let mut outputs = Vec::new();
    for (pipe, sock, name) in [
        (pipes.stdout, stdout, "stdout"),
        (pipes.stderr, stderr, "stderr"),
    ] {
        let Some(sock) = sock else { continue };
        let pipe = nonblocking(pipe)?;
        let redial = reconnect.as_ref().map(|r| {
            let port = if name == "stdout" {
                r.stdout_port
            } else {
                r.stderr_port
            };
            (r.clone(), port)
        });
        outputs.push(tokio::spawn(relay_output(
            pipe,
            sock,
            name,
            handshake,
            log.clone(),
            redial,
        )));
    }
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        for task in outputs {
            let _ = task.await;
        }
        let _ = done_tx.send(());
    });
    Ok(done_rx)
}

/// Redials `port` every 100 ms until it connects (then sends `history`) or the container is torn
/// down (`None`).
async fn redial_until_connected(
    r: &Reconnect,
    port: u32,
    name: &'static str,
    history: &std::collections::VecDeque<u8>,
) -> Option<Stream> {
    tracing::warn!(stream = name, port, "host went away; redialing");
    let mut teardown = r.teardown.clone();
    loop {
        if *teardown.borrow() {
            return None;
        }
        // One attempt at a time, each raced against the teardown (so is the resend, to a host
        // that accepts and never reads).
        let attempt = async {
            let mut sock = r.dialer.dial_once(port).await.ok()?;
            let (a, b) = history.as_slices();
            sock.write_all(a).await.ok()?;
            sock.write_all(b).await.ok()?;
            Some(sock)
        };
        tokio::select! {
            sock = attempt => if let Some(sock) = sock {
                tracing::info!(stream = name, port, resent = history.len(), "reconnected");
                return Some(sock);
            },
            _ = teardown.wait_for(|t| *t) => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = teardown.wait_for(|t| *t) => return None,
        }
    }
}

async fn relay_output(
    pipe: AsyncFd<OwnedFd>,
    mut sock: Stream,
    name: &'static str,
    handshake: Duration,
    log: TeeLog,
    redial: Option<(Reconnect, u32)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut host_gone = false;
    let mut tee_failed = false;
    let mut sent = std::collections::VecDeque::<u8>::new();
    loop {
        let n = match read_fd(&pipe, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tee(&log, &buf[..n], &mut tee_failed);
        if host_gone {
            // Keep draining after the host went away, so the process never blocks.
            continue;
        }
        if let Some((_, _)) = &redial {
            sent.extend(&buf[..n]);
            let excess = sent.len().saturating_sub(RESEND_BYTES);
            sent.drain(..excess);
        }
        let Err(e) = sock.write_all(&buf[..n]).await else {
            continue;
        };
        let reconnectable = matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected
        );
        match (&redial, reconnectable) {
            (Some((r, port)), true) => match redial_until_connected(r, *port, name, &sent).await {
                Some(new) => sock = new,
                None => host_gone = true,
            },
            _ => host_gone = true,
        }
    }
    if host_gone {
        return;
    }
    let _ = sock.flush().await;
    if sock.shutdown_write().is_err() {
        return;
    }
    let mut byte = [0u8; 1];
    match tokio::time::timeout(handshake, sock.read(&mut byte)).await {
        Ok(_) => {}
        Err(_) => tracing::warn!(
            stream = name,
            "host did not close its end of the relay; closing ours"
        ),
    }
}
