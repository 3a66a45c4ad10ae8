//! WaitForProcess: answers when the process has exited and its output has drained. Always
//! handled in its own task, so it never blocks other requests.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{ResponseBase, WaitForProcessRequest, WaitForProcessResponse};

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let wait: WaitForProcessRequest = req.decode("WaitForProcess")?;
    // The wait may last for ever; its payload need not.
    req.release_payload();
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
