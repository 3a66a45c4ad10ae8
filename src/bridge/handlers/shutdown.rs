//! ShutdownGraceful / ShutdownForced: SIGTERM or SIGKILL to a container's init, or, for the
//! null container id, power the UVM off.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::guest::GuestError;
use crate::protocol::messages::{RequestBase, ResponseBase};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Graceful,
    Forced,
}

pub async fn handle(req: &Request<'_>, mode: Mode) -> Result<Reply, BridgeError> {
    let base: RequestBase = req.decode("Shutdown")?;
    if base.targets_uvm() {
        tracing::info!(?mode, "UVM shutdown requested");
        let mut reply = Reply::new(&ResponseBase::ok(&base.activity_id))?;
        reply.shutdown_after = true;
        return Ok(reply);
    }
    let container = req.bridge.guest().container(&base.container_id)?;
    Err(GuestError::NotImplemented {
        what: format!("shutdown of container {:?}", container.id),
    }
    .into())
}
