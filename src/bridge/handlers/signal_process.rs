//! SignalProcess: a real signal to a container process. The null id is not special-cased.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::guest::GuestError;
use crate::protocol::messages::SignalProcessRequest;

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let signal: SignalProcessRequest = req.decode("SignalProcess")?;
    req.bridge.guest().container(&signal.base.container_id)?;
    Err(GuestError::ProcessNotFound {
        pid: signal.process_id,
    }
    .into())
}
