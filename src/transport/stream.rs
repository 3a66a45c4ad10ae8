//! One byte-stream type over every transport the agent uses.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::FdStream;

/// A connected stream to the host.
#[derive(Debug)]
pub enum Stream {
    Vsock(tokio_vsock::VsockStream),
    Unix(tokio::net::UnixStream),
    Fd(FdStream),
    /// No host behind it: reads end at once, writes are discarded (the original's `/dev/null`
    /// transport, for processes the security policy denies stdio, spec §7.5).
    Null,
}

impl Stream {
    /// Half-closes the write side (`shutdown(SHUT_WR)`).
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Self::Vsock(s) => s.shutdown(std::net::Shutdown::Write),
            Self::Unix(s) => {
                use std::os::fd::AsFd;
                nix::sys::socket::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(&s.as_fd()),
                    nix::sys::socket::Shutdown::Write,
                )
                .map_err(io::Error::from)
            }
            Self::Fd(_) | Self::Null => Ok(()),
        }
    }
}

impl Stream {
    /// Turns the connection into a plain blocking fd, for handing to a child process.
    pub fn into_blocking_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        let fd: std::os::fd::OwnedFd = match self {
            Self::Vsock(s) => s.into(),
            Self::Unix(s) => s.into_std()?.into(),
            Self::Fd(_) => {
                return Err(io::Error::other(
                    "stdin/stdout cannot be handed to a process",
                ))
            }
            Self::Null => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?
                .into(),
        };
        use std::os::fd::AsRawFd;
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(fd)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Fd(s) => Pin::new(s).poll_read(cx, buf),
            Self::Null => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Fd(s) => Pin::new(s).poll_write(cx, buf),
            Self::Null => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Fd(s) => Pin::new(s).poll_flush(cx),
            Self::Null => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Fd(s) => Pin::new(s).poll_shutdown(cx),
            Self::Null => Poll::Ready(Ok(())),
        }
    }
}
