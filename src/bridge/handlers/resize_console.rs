//! ResizeConsole: TIOCSWINSZ on a container process's pty. The null id is not supported.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::guest::GuestError;
use crate::protocol::messages::ResizeConsoleRequest;

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let resize: ResizeConsoleRequest = req.decode("ResizeConsole")?;
    req.bridge.guest().container(&resize.base.container_id)?;
    Err(GuestError::ProcessNotFound {
        pid: resize.process_id,
    }
    .into())
}
