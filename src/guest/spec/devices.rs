//! Device nodes of `linux.devices` (spec §6.4): rebuilt from the UVM's real nodes.

use serde_json::{json, Value};

use crate::guest::GuestError;

/// Rebuilds each `linux.devices` entry from the real device node, as the original does for
/// unprivileged containers; a missing node fails the create.
pub(crate) fn rebuild_devices(spec: &mut Value) -> Result<(), GuestError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Some(devices) = spec
        .pointer_mut("/linux/devices")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for d in devices.iter_mut() {
        let Some(path) = d.get("path").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        let meta = std::fs::metadata(&path).map_err(|source| GuestError::Io {
            what: format!("device {path}"),
            source,
        })?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(GuestError::InvalidRequest(format!(
                "{path} is not a device"
            )));
        };
        let rdev = meta.rdev();
        d["type"] = json!(kind);
        d["major"] = json!(nix::sys::stat::major(rdev));
        d["minor"] = json!(nix::sys::stat::minor(rdev));
        d["fileMode"] = json!(meta.mode() & 0o7777);
        d["uid"] = json!(meta.uid());
        d["gid"] = json!(meta.gid());
    }
    Ok(())
}
