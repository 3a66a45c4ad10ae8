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
            Self::Fd(_) => Ok(()),
        }
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Fd(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Vsock(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Fd(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
