//! ResizeConsole: TIOCSWINSZ on a container process's pty. The null id is not supported.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{ResizeConsoleRequest, ResponseBase};

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let resize: ResizeConsoleRequest = req.decode("ResizeConsole")?;
    let guest = req.bridge.guest();
    let container = guest.container(&resize.base.container_id)?;
    guest.resize_console(&container, resize.process_id, resize.height, resize.width)?;
    Reply::new(&ResponseBase::ok(&resize.base.activity_id))
}
