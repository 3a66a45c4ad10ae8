//! Start: a no-op in the original; the container really starts when its init is executed.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{RequestBase, ResponseBase};

pub fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let base: RequestBase = req.decode("Start")?;
    Reply::new(&ResponseBase::ok(&base.activity_id))
}
