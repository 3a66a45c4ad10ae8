//! ExecuteProcess: a process in the UVM, a container's init, or an exec in a container.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::json::from_embedded;
use crate::protocol::messages::{
    ExecuteProcessRequest, ExecuteProcessResponse, ProcessParameters, ResponseBase,
};

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let mut exec: ExecuteProcessRequest = req.decode("ExecuteProcess")?;
    // The embedded text goes once decoded (a 10 MiB command line is not kept twice).
    let embedded = std::mem::take(&mut exec.settings.process_parameters);
    let params: ProcessParameters =
        from_embedded(&embedded).map_err(|source| BridgeError::InvalidJson {
            what: "ProcessParameters",
            source,
        })?;
    drop(embedded);
    let guest = req.bridge.guest();
    let ports = exec.settings.vsock_stdio_relay_settings;
    let pid = if exec.base.targets_uvm() || params.create_in_utility_vm {
        guest.exec_external(&params, ports).await?
    } else {
        let container = guest.container(&exec.base.container_id)?;
        if params.oci_process.is_none() {
            guest.start_container(&container, &params, ports).await?
        } else {
            guest.exec_in_container(&container, &params, ports).await?
        }
    };
    Reply::new(&ExecuteProcessResponse {
        base: ResponseBase::ok(&exec.base.activity_id),
        process_id: pid,
    })
}
