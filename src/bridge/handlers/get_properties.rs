//! GetProperties: `ProcessList` and `Statistics` of a container.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::guest::GuestError;
use crate::protocol::json::from_embedded;
use crate::protocol::messages::{GetPropertiesRequest, PropertyQuery};

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let get: GetPropertiesRequest = req.decode("GetProperties")?;
    if get.base.targets_uvm() {
        return Err(BridgeError::PropertiesOfUvm);
    }
    let _query: PropertyQuery = if get.query.is_empty() {
        PropertyQuery::default()
    } else {
        from_embedded(&get.query).map_err(|source| BridgeError::InvalidJson {
            what: "Query",
            source,
        })?
    };
    let container = req.bridge.guest().container(&get.base.container_id)?;
    Err(GuestError::NotImplemented {
        what: format!("properties of container {:?}", container.id),
    }
    .into())
}
