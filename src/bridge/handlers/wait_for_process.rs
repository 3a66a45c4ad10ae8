//! WaitForProcess: answers when the process has exited and its output has drained.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::guest::GuestError;
use crate::protocol::messages::WaitForProcessRequest;

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let wait: WaitForProcessRequest = req.decode("WaitForProcess")?;
    if !wait.base.targets_uvm() {
        req.bridge.guest().container(&wait.base.container_id)?;
    }
    // No process can be started yet, so none can be found.
    Err(GuestError::ProcessNotFound {
        pid: wait.process_id,
    }
    .into())
}
