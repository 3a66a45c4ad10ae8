//! SignalProcess: a real signal to a container process. The null id is not special-cased, so
//! UVM processes cannot be signalled (as in the original).

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{ResponseBase, SignalProcessRequest};

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let signal: SignalProcessRequest = req.decode("SignalProcess")?;
    let guest = req.bridge.guest();
    let container = guest.container(&signal.base.container_id)?;
    guest.signal_container_process(&container, signal.process_id, signal.signal())?;
    Reply::new(&ResponseBase::ok(&signal.base.activity_id))
}
