//! DeleteContainerState: remove a stopped container's state, mounts and cgroup.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{RequestBase, ResponseBase};

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let base: RequestBase = req.decode("DeleteContainerState")?;
    req.bridge
        .guest()
        .delete_container_state(&base.container_id)
        .await?;
    Reply::new(&ResponseBase::ok(&base.activity_id))
}
