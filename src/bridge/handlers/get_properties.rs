//! GetProperties: `ProcessList` and `Statistics` of a container; other types are ignored.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::json::{from_embedded, to_go_string};
use crate::protocol::messages::{
    GetPropertiesRequest, GetPropertiesResponse, ProcessDetails, Properties, PropertyQuery,
    ResponseBase,
};

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let get: GetPropertiesRequest = req.decode("GetProperties")?;
    if get.base.targets_uvm() {
        return Err(BridgeError::PropertiesOfUvm);
    }
    req.bridge.guest().enforce(
        crate::policy::EnforcementPoint::GetProperties,
        crate::policy::input::empty(),
        || "get properties denied due to policy".into(),
    )?;
    let query: PropertyQuery = if get.query.is_empty() {
        PropertyQuery::default()
    } else {
        from_embedded(&get.query).map_err(|source| BridgeError::InvalidJson {
            what: "Query",
            source,
        })?
    };
    let guest = req.bridge.guest();
    let container = guest.container(&get.base.container_id)?;
    let mut properties = Properties::default();
    for kind in &query.property_types {
        match kind.as_str() {
            "ProcessList" => {
                properties.process_list = guest
                    .container_pids(&container)
                    .await?
                    .into_iter()
                    .map(|pid| ProcessDetails { process_id: pid })
                    .collect();
            }
            "Statistics" => {
                properties.lcow_metrics = Some(guest.container_stats(&container).await?)
            }
            other => tracing::debug!(property = other, "ignoring unsupported property type"),
        }
    }
    let properties = to_go_string(&properties)
        .map_err(|e| BridgeError::InvalidRequest(format!("cannot encode properties: {e}")))?;
    Reply::new(&GetPropertiesResponse {
        base: ResponseBase::ok(&get.base.activity_id),
        properties,
    })
}
