//! Create: validate the container settings, then create the container.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::protocol::json::from_embedded;
use crate::protocol::messages::{
    ContainerSettings, CreateRequest, CreateResponse, ResponseBase, SchemaVersion,
};

const MIN_SCHEMA: SchemaVersion = SchemaVersion { major: 2, minor: 1 };

/// Decodes and checks what the original dereferences without checking.
pub fn settings(req: &CreateRequest) -> Result<ContainerSettings, BridgeError> {
    let settings: ContainerSettings =
        from_embedded(&req.container_config).map_err(|source| BridgeError::InvalidJson {
            what: "ContainerConfig",
            source,
        })?;
    if settings.schema_version < MIN_SCHEMA {
        return Err(BridgeError::InvalidSchemaVersion {
            major: settings.schema_version.major,
            minor: settings.schema_version.minor,
        });
    }
    let spec = match &settings.oci_specification {
        Some(v) if v.is_object() => v,
        _ => {
            return Err(BridgeError::InvalidRequest(
                "OciSpecification is missing or not an object".into(),
            ))
        }
    };
    for key in ["process", "root", "linux"] {
        if !spec.get(key).is_some_and(|v| v.is_object()) {
            return Err(BridgeError::InvalidRequest(format!(
                "OciSpecification.{key} is missing"
            )));
        }
    }
    // Objects the guest writes into must be objects when present.
    for pointer in ["/linux/resources", "/process/user", "/annotations"] {
        if spec
            .pointer(pointer)
            .is_some_and(|v| !v.is_null() && !v.is_object())
        {
            return Err(BridgeError::InvalidRequest(format!(
                "OciSpecification{} is not an object",
                pointer.replace('/', ".")
            )));
        }
    }
    Ok(settings)
}

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let mut create: CreateRequest = req.decode("Create")?;
    let settings = settings(&create)?;
    // The embedded text goes once decoded (the spec is not kept twice while the container is
    // made).
    drop(std::mem::take(&mut create.container_config));
    req.bridge
        .guest()
        .create_container(
            &create.base.container_id,
            &create.base.activity_id,
            settings,
        )
        .await?;
    Reply::new(&CreateResponse {
        base: ResponseBase::ok(&create.base.activity_id),
        selected_protocol_version: 0,
    })
}
