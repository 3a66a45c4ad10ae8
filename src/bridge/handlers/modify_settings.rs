//! ModifySettings: validate the resource and request type, then route by resource.

use super::{Reply, Request};
use crate::bridge::BridgeError;
use crate::guest::storage::StorageResource;
use crate::guest::GuestError;
use crate::protocol::messages::{ModifySettingsRequest, ResponseBase};

/// Resource types the Linux guest handles, with the request types each accepts (`None`: any).
const RESOURCES: &[(&str, Option<&[&str]>)] = &[
    ("MappedVirtualDisk", Some(&["Add", "Remove"])),
    ("SCSIDevice", Some(&["Remove"])),
    ("MappedDirectory", Some(&["Add", "Remove"])),
    ("VPMemDevice", Some(&["Add", "Remove"])),
    ("CombinedLayers", Some(&["Add", "Remove"])),
    ("Network", Some(&["Add", "Remove"])),
    ("VPCIDevice", Some(&["Add"])),
    ("ContainerConstraints", None),
    ("SecurityPolicy", Some(&["Add"])),
    ("SecurityPolicyFragment", Some(&["Add"])),
    ("PodCgroupMemoryLimit", Some(&["Update"])),
];

/// Checks the resource and request types as the original does, in its order: unknown
/// resource first, then container-scoped requests, then the request type.
pub fn validate(req: &ModifySettingsRequest) -> Result<(), BridgeError> {
    let resource = req.request.resource_type.as_str();
    let Some((_, request_types)) = RESOURCES.iter().find(|(name, _)| *name == resource) else {
        return Err(BridgeError::InvalidResourceType(resource.to_string()));
    };
    if !req.base.targets_uvm() && resource != "ContainerConstraints" {
        return Err(BridgeError::ResourceNotForContainers(resource.to_string()));
    }
    let request_type = req.request.request_type();
    if let Some(allowed) = request_types {
        if !allowed.contains(&request_type) {
            return Err(BridgeError::UnsupportedRequestType(
                request_type.to_string(),
            ));
        }
    }
    Ok(())
}

fn settings<T: serde::de::DeserializeOwned + Default>(
    req: &ModifySettingsRequest,
) -> Result<T, BridgeError> {
    match &req.request.settings {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|source| BridgeError::InvalidJson {
            what: "Settings",
            source,
        }),
    }
}

pub async fn handle(req: &Request<'_>) -> Result<Reply, BridgeError> {
    let modify: ModifySettingsRequest = req.decode("ModifySettings")?;
    if crate::bridge::fault::enabled()
        && modify.request.resource_type == crate::bridge::fault::RESOURCE_TYPE
    {
        let fault = modify
            .request
            .settings
            .as_ref()
            .and_then(|s| s.get("Fault"))
            .and_then(|f| f.as_str())
            .unwrap_or_default();
        crate::bridge::fault::inject(fault, req.header.id).map_err(BridgeError::InvalidRequest)?;
        return Reply::new(&ResponseBase::ok(&req.base.activity_id));
    }
    // In a confidential guest the id is checked before anything else, as the original does.
    req.bridge
        .guest()
        .check_confidential_container_id(&modify.base.container_id)?;
    validate(&modify)?;
    if !modify.base.targets_uvm() {
        req.bridge.guest().container(&modify.base.container_id)?;
    }
    let add = modify.request.request_type() == "Add";
    let resource = match modify.request.resource_type.as_str() {
        "CombinedLayers" => Some(StorageResource::Layers(settings(&modify)?)),
        "MappedVirtualDisk" => Some(StorageResource::Disk(settings(&modify)?)),
        "SCSIDevice" => Some(StorageResource::DiskEject(settings(&modify)?)),
        "VPMemDevice" => Some(StorageResource::Pmem(settings(&modify)?)),
        "MappedDirectory" => Some(StorageResource::Share(settings(&modify)?)),
        _ => None,
    };
    if modify.request.resource_type == "ContainerConstraints" {
        let guest = req.bridge.guest();
        if modify.base.targets_uvm() {
            return Err(BridgeError::InvalidRequest(
                "ContainerConstraints needs a container id".into(),
            ));
        }
        let container = guest.container(&modify.base.container_id)?;
        guest
            .update_container_constraints(&container, modify.request.settings.as_ref())
            .await?;
        return Reply::new(&ResponseBase::ok(&req.base.activity_id));
    }
    if modify.request.resource_type == "VPCIDevice" {
        let device: crate::devices::VpciDevice = settings(&modify)?;
        let found = crate::devices::add(&device)
            .await
            .map_err(GuestError::Device)?;
        tracing::info!(device = %found.display(), "VPCI device present");
        return Reply::new(&ResponseBase::ok(&req.base.activity_id));
    }
    if modify.request.resource_type == "SecurityPolicy" {
        let options: crate::guest::security::ConfidentialOptions = settings(&modify)?;
        req.bridge
            .guest()
            .set_security_policy(options, std::path::Path::new("/dev"))
            .await?;
        return Reply::new(&ResponseBase::ok(&req.base.activity_id));
    }
    if modify.request.resource_type == "SecurityPolicyFragment" {
        let fragment: crate::guest::security::SecurityPolicyFragment = settings(&modify)?;
        req.bridge.guest().inject_fragment(fragment).await?;
        return Reply::new(&ResponseBase::ok(&req.base.activity_id));
    }
    if modify.request.resource_type == "PodCgroupMemoryLimit" {
        req.bridge.guest().update_pods_limit().await?;
        return Reply::new(&ResponseBase::ok(&req.base.activity_id));
    }
    if modify.request.resource_type == "Network" {
        let adapter: crate::network::adapter::Adapter = settings(&modify)?;
        let guest = req.bridge.guest();
        if add {
            guest.add_network_adapter(adapter).await?;
        } else {
            guest.remove_network_adapter(&adapter)?;
        }
        return Reply::new(&ResponseBase::ok(&req.base.activity_id));
    }
    if let Some(resource) = resource {
        req.bridge.guest().modify_storage(resource, add).await?;
        return Reply::new(&ResponseBase::ok(&req.base.activity_id));
    }
    Err(GuestError::NotImplemented {
        what: format!("ModifySettings {}", modify.request.resource_type),
    }
    .into())
}
