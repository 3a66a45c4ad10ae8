//! Devices of a container: `linux.devices` rebuilt from the UVM's real nodes (spec §6.4), and
//! the device cgroup as runc sets it (spec §10.7): deny everything, then allow runc's default
//! nodes (libcgroups adds them: null, zero, full, random, urandom, tty, console, ptmx, pts,
//! tun, and `mknod` of any node), the spec's own rules and the spec's device nodes.

use serde_json::{json, Value};

use crate::guest::GuestError;

/// Rebuilds each `linux.devices` entry from the real device node (`lstat`, so a symlink is
/// not a device), as the original does for unprivileged workloads (`DeviceFromPath`): a
/// missing path or anything but a device node fails the create; a FIFO, or a node numbered
/// 0:0, is dropped. The cgroup rule of each node is added by [`default_deny`].
pub(crate) fn rebuild_devices(spec: &mut Value) -> Result<(), GuestError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Some(devices) = spec
        .pointer_mut("/linux/devices")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    let mut rebuilt = Vec::with_capacity(devices.len());
    for d in devices.iter() {
        let Some(path) = d.get("path").and_then(Value::as_str) else {
            rebuilt.push(d.clone());
            continue;
        };
        let meta = std::fs::symlink_metadata(path).map_err(|source| GuestError::Io {
            what: format!("device {path:?}"),
            source,
        })?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else if meta.file_type().is_fifo() {
            continue;
        } else {
            return Err(GuestError::InvalidRequest(format!(
                "device {path:?}: not a device node"
            )));
        };
        let rdev = meta.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        if major == 0 && minor == 0 {
            continue;
        }
        let mut d = d.clone();
        d["type"] = json!(kind);
        d["major"] = json!(major);
        d["minor"] = json!(minor);
        d["fileMode"] = json!(meta.mode() & 0o7777);
        d["uid"] = json!(meta.uid());
        d["gid"] = json!(meta.gid());
        rebuilt.push(d);
    }
    *devices = rebuilt;
    Ok(())
}

/// Makes the device cgroup start from deny-all (libcgroups' cgroup v2 program starts there on
/// its own, but on v1 the parent's `a *:* rwm` would stay), and allows each `linux.devices`
/// node (`rwm`), as runc does. `allow_all` (a privileged workload) keeps its single rule.
pub fn default_deny(spec: &mut Value, allow_all: bool) {
    if allow_all {
        return;
    }
    let nodes: Vec<Value> = spec
        .pointer("/linux/devices")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter(|d| d.get("major").is_some() && d.get("minor").is_some())
                .map(|d| {
                    json!({"allow": true, "type": d.get("type").cloned().unwrap_or(json!("c")),
                           "major": d["major"], "minor": d["minor"], "access": "rwm"})
                })
                .collect()
        })
        .unwrap_or_default();
    if !spec["linux"].is_object() {
        spec["linux"] = json!({});
    }
    if !spec["linux"]["resources"].is_object() {
        spec["linux"]["resources"] = json!({});
    }
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    if let Some(own) = spec["linux"]["resources"]["devices"].as_array() {
        rules.extend(own.iter().cloned());
    }
    rules.extend(nodes);
    spec["linux"]["resources"]["devices"] = Value::Array(rules);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_rebuilt_as_device_from_path() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = dir.path().join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let mut spec = json!({"linux": {"devices": [{"path": "/dev/null", "type": "b", "major": 9, "minor": 9}, {"path": fifo}]}});
        rebuild_devices(&mut spec).unwrap();
        assert_eq!(spec["linux"]["devices"].as_array().unwrap().len(), 1);
        assert_eq!(spec["linux"]["devices"][0]["type"], "c");
        assert_eq!(spec["linux"]["devices"][0]["minor"], 3);
        for bad in [
            link.clone(),
            dir.path().to_path_buf(),
            dir.path().join("missing"),
        ] {
            let mut spec = json!({"linux": {"devices": [{"path": bad}]}});
            assert!(rebuild_devices(&mut spec).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deny_all_first_then_the_specs_rules_and_nodes() {
        let mut spec = json!({"linux": {"resources": {"devices": [{"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"}]},
                                        "devices": [{"path": "/dev/x", "type": "b", "major": 7, "minor": 3}]}});
        default_deny(&mut spec, false);
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"},
                   {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"},
                   {"allow": true, "type": "b", "major": 7, "minor": 3, "access": "rwm"}])
        );
        let mut spec = json!({});
        default_deny(&mut spec, false);
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
        let mut spec =
            json!({"linux": {"resources": {"devices": [{"allow": true, "access": "rwm"}]}}});
        default_deny(&mut spec, true);
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
    }
}
