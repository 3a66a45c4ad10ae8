//! `VPCIDevice` (spec §5.7): a PCI device the host assigned to the VM (a GPU, an SR-IOV VF) over
//! vmbus. The guest only waits until the kernel has enumerated it; containers get its device
//! nodes later through their specs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::json::null_default;
use crate::uevent::{wait_until, WaitError};

/// The host gives up on the request after 5 minutes; so does the guest (the original waits
/// forever).
pub const DEVICE_DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VpciDevice {
    #[serde(rename = "VMBusGUID", deserialize_with = "null_default")]
    pub vmbus_guid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("VMBusGUID {0:?} is not a GUID")]
    BadGuid(String),
    #[error("{0}")]
    Timeout(String),
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The device's PCI directory (`<vmbus>/pci<...>/<domain:bus:...>`) under `sys`, once there.
pub fn locate(sys: &Path, guid: &str) -> Option<PathBuf> {
    let vmbus = sys.join("bus/vmbus/devices").join(guid.to_lowercase());
    std::fs::read_dir(vmbus)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pci"))
        .find_map(|bus| {
            std::fs::read_dir(bus.path())
                .ok()?
                .flatten()
                .find(|d| d.file_name().to_string_lossy().contains(':'))
                .map(|d| d.path())
        })
}

/// Waits (woken by uevents, at most `deadline`, holding no thread) for the PCI device of vmbus
/// instance `guid` under `sys`; its sysfs directory. For a container's `windows.devices` the
/// original waits 60 s. Errors: `BadGuid` for an id that is not a GUID, `Timeout`.
pub async fn wait_for(sys: &Path, guid: &str, deadline: Duration) -> Result<PathBuf, DeviceError> {
    if !is_guid(guid) {
        return Err(DeviceError::BadGuid(guid.to_string()));
    }
    wait_until::<_, std::convert::Infallible>(&format!("VPCI device {guid}"), deadline, || {
        Ok(locate(sys, guid))
    })
    .await
    .map_err(|e| match e {
        WaitError::Timeout { .. } => DeviceError::Timeout(e.to_string()),
        WaitError::Probe(never) => match never {},
    })
}

/// `VPCIDevice` Add: waits (woken by uevents, up to [`DEVICE_DEADLINE`]) for the device to be
/// enumerated.
pub async fn add(device: &VpciDevice) -> Result<PathBuf, DeviceError> {
    wait_for(Path::new("/sys"), &device.vmbus_guid, DEVICE_DEADLINE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn devices_are_found_under_their_vmbus_instance() {
        let sys = tempfile::tempdir().unwrap();
        let guid = "5d5a4b3c-1111-2222-3333-444455556666";
        assert_eq!(locate(sys.path(), guid), None);
        let dev = sys
            .path()
            .join(format!("bus/vmbus/devices/{guid}/pci1111:00/1111:00:00.0"));
        std::fs::create_dir_all(&dev).unwrap();
        assert_eq!(locate(sys.path(), &guid.to_uppercase()), Some(dev));
        assert!(matches!(
            add(&VpciDevice {
                vmbus_guid: "../../etc".into()
            })
            .await,
            Err(DeviceError::BadGuid(_))
        ));
        assert!(is_guid(guid) && !is_guid("5d5a4b3c-1111-2222-3333-44445555666"));
    }
}
