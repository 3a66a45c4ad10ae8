//! WaitForProcess: answers when the process has exited and its output has drained. Always
//! handled in its own task, so it never blocks other requests.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::messages::{ResponseBase, WaitForProcessRequest, WaitForProcessResponse};

/// Bytes of ids a waiting request may keep once its payload is released. Real ids are a GUID
/// and a container id of at most 64 characters or so.
const MAX_KEPT_IDS: usize = 4096;

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let wait: WaitForProcessRequest = req.decode("WaitForProcess")?;
    // The wait may last for ever; its payload need not. Ids too long to be real are refused
    // rather than kept: a wait that held them (and its share of the large-payload budget) for
    // as long as the process lives would hold up every large request after it.
    let ids = wait.base.container_id.len() + wait.base.activity_id.len();
    if ids > MAX_KEPT_IDS {
        return Err(BridgeError::InvalidRequest(format!(
            "WaitForProcess: ContainerId and ActivityId are {ids} bytes long (at most {MAX_KEPT_IDS})"
        )));
    }
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
