//! WaitForProcess: answers when the process has exited and its output has drained. Always
//! handled in its own task, so it never blocks other requests.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{ResponseBase, WaitForProcessRequest, WaitForProcessResponse};

/// Bytes of ids a waiting request may keep once its payload is released.
const MAX_KEPT_IDS: usize = 4096;

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let wait: WaitForProcessRequest = req.decode("WaitForProcess")?;
    // The wait may last for ever; its payload need not, as long as what it keeps of it is
    // small (a request with megabytes of ids keeps its share of the budget while it lives).
    if wait.base.container_id.len() + wait.base.activity_id.len() <= MAX_KEPT_IDS {
        req.release_payload();
    }
    let guest = req.bridge.guest();
    let exit_code = if wait.base.targets_uvm() {
        guest
            .wait_external(wait.process_id, wait.timeout_in_ms)
            .await?
    } else {
        let container = guest.container(&wait.base.container_id)?;
        guest
            .wait_container_process(&container, wait.process_id, wait.timeout_in_ms)
            .await?
    };
    Reply::new(&WaitForProcessResponse {
        base: ResponseBase::ok(&wait.base.activity_id),
        exit_code,
    })
}
