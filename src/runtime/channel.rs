//! Message framing between the agent and the runtime helper: one JSON document per
//! `SOCK_SEQPACKET` message, with up to 3 fds attached.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Largest message either side sends (stats documents are the biggest, a few KiB).
pub const MAX_MESSAGE: usize = 256 * 1024;

pub fn send(sock: RawFd, payload: &[u8], fds: &[OwnedFd]) -> Result<(), Errno> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    let sent = sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent != payload.len() {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// Receives one message. `Ok(None)` means the peer is gone.
pub fn recv(sock: RawFd, buf: &mut [u8]) -> Result<Option<(usize, Vec<OwnedFd>)>, Errno> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(crate::sys::adopt_received_fds(&received));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(Errno::EMSGSIZE);
    }
    let n = msg.bytes;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((n, fds)))
}
