//! DeleteContainerState: remove a stopped container's state, mounts and cgroup.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::guest::GuestError;
use crate::protocol::messages::RequestBase;

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let base: RequestBase = req.decode("DeleteContainerState")?;
    let container = req.bridge.guest().container(&base.container_id)?;
    Err(GuestError::NotImplemented {
        what: format!("deleting container {:?}", container.id),
    }
    .into())
}
