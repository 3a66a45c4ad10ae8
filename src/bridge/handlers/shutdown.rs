//! ShutdownGraceful / ShutdownForced: SIGTERM or SIGKILL to a container's init, or, for the
//! null container id, power the UVM off.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{RequestBase, ResponseBase};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Graceful,
    Forced,
}

pub async fn handle(req: &Request<'_>, mode: Mode) -> Result<Reply, BridgeError> {
    let base: RequestBase = req.decode("Shutdown")?;
    let mut reply = Reply::new(&ResponseBase::ok(&base.activity_id))?;
    if base.targets_uvm() {
        tracing::info!(?mode, "UVM shutdown requested");
        reply.shutdown_after = true;
        return Ok(reply);
    }
    let guest = req.bridge.guest();
    let container = guest.container(&base.container_id)?;
    guest.shutdown_container(&container, mode == Mode::Forced)?;
    Ok(reply)
}
