//! ExecuteProcess: a process in the UVM, a container's init, or an exec in a container.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::guest::GuestError;
use crate::protocol::json::from_embedded;
use crate::protocol::messages::{ExecuteProcessRequest, ProcessParameters};

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let exec: ExecuteProcessRequest = req.decode("ExecuteProcess")?;
    let params: ProcessParameters =
        from_embedded(&exec.settings.process_parameters).map_err(|source| {
            BridgeError::InvalidJson {
                what: "ProcessParameters",
                source,
            }
        })?;
    if exec.base.targets_uvm() || params.create_in_utility_vm {
        return Err(GuestError::NotImplemented {
            what: "running processes in the UVM".into(),
        }
        .into());
    }
    let container = req.bridge.guest().container(&exec.base.container_id)?;
    Err(GuestError::NotImplemented {
        what: format!("processes in container {:?}", container.id),
    }
    .into())
}
