//! The input object of each enforcement point, with the original's exact keys (SP §4.2–4.17).
//! Pure builders: no I/O, so every shape is unit-tested.

use serde_json::{json, Value};

/// Where read-only SCSI layers are mounted, as the policy's `mountPathRegex` (SP §4.3).
pub const SCSI_MOUNT_PATH_REGEX: &str = "/run/mounts/scsi/m[0-9]+";
/// Where VPMem layers are mounted. The original passes the SCSI pattern for VPMem too, so no
/// VPMem layer can ever pass the framework's anchored match (SP §13); we pass the path VPMem
/// layers really get (README, "Confidential containers").
pub const VPMEM_MOUNT_PATH_REGEX: &str = "/run/layers/p[0-9]+";
/// Where read-write disks (scratch) are mounted (SP §4.4).
pub const RW_MOUNT_PATH_REGEX: &str = "/run/gcs/c/[0-9a-fA-F]{64}";
/// Plan9 shares: root prefix and the pattern after `<root>/<cid>` (SP §4.14).
pub const PLAN9_ROOT_PREFIX: &str = "/run/gcs/c";
pub const PLAN9_MOUNT_PATH_PREFIX: &str = "/mounts/m[0-9]+";

/// `mount_device`: a read-only layer. `device_hash` is the dm-verity root hash the guest read
/// (empty when it read none).
pub fn mount_device(target: &str, device_hash: &str, mount_path_regex: &str) -> Value {
    json!({"target": target, "deviceHash": device_hash, "mountPathRegex": mount_path_regex})
}

/// `rw_mount_device`: a read-write disk.
pub fn rw_mount_device(
    target: &str,
    encrypted: bool,
    ensure_filesystem: bool,
    filesystem: &str,
) -> Value {
    json!({
        "target": target,
        "encrypted": encrypted,
        "ensureFilesystem": ensure_filesystem,
        "filesystem": filesystem,
        "mountPathRegex": RW_MOUNT_PATH_REGEX,
    })
}

/// `mount_blockdev`, `plan9_mount`'s target alone.
pub fn target(target: &str) -> Value {
    json!({"target": target})
}

/// Every unmount point: `unmount_device`, `rw_unmount_device`, `unmount_blockdev`,
/// `unmount_overlay`, `plan9_unmount`.
pub fn unmount(target: &str) -> Value {
    json!({"unmountTarget": target})
}

/// `scratch_mount`: `encrypted` is whether the read-write device holding the scratch was
/// mounted encrypted.
pub fn scratch_mount(target: &str, encrypted: bool) -> Value {
    json!({"target": target, "encrypted": encrypted})
}

/// `mount_overlay`: the layers in the order the host sent them (top first).
pub fn mount_overlay(container_id: &str, layer_paths: &[String], target: &str) -> Value {
    json!({"containerID": container_id, "layerPaths": layer_paths, "target": target})
}

/// `plan9_mount`.
pub fn plan9_mount(target: &str) -> Value {
    json!({
        "rootPrefix": PLAN9_ROOT_PREFIX,
        "mountPathPrefix": PLAN9_MOUNT_PATH_PREFIX,
        "target": target,
    })
}

/// `get_properties`, `dump_stacks`, `runtime_logging`, `host_network`.
pub fn empty() -> Value {
    json!({})
}

/// `shutdown_container`.
pub fn shutdown_container(container_id: &str) -> Value {
    json!({"containerID": container_id})
}

/// `signal_container_process`: `args` are the signalled process's own `args`.
pub fn signal_container_process(
    container_id: &str,
    signal: u32,
    is_init: bool,
    args: &[String],
) -> Value {
    json!({
        "containerID": container_id,
        "signal": signal,
        "isInitProcess": is_init,
        "argList": args,
    })
}

/// `exec_external`: `args` are `CommandArgs` as sent (empty when only a `CommandLine` came),
/// `env` the `Environment` map as `K=V`.
pub fn exec_external(args: &[String], env: &[String], working_dir: &str) -> Value {
    json!({"argList": args, "envList": env, "workingDir": working_dir})
}

/// The process-level facts of `create_container` and `exec_in_container`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFacts {
    pub args: Value,
    pub env: Value,
    pub working_dir: Value,
    pub no_new_privileges: bool,
    pub user: Value,
    pub groups: Value,
    pub umask: String,
    pub capabilities: Value,
}

impl ProcessFacts {
    /// From an OCI `process` (after user resolution); `user`, `groups`, `umask` from
    /// `guest::spec::user::policy_identity`. Each capability set is an array (a missing set is
    /// `[]`); a missing `capabilities` object stays `null`, which the Rego enforcer refuses with
    /// the original's plain error (the doors do not look).
    pub fn from_process(process: &Value, user: Value, groups: Value, umask: String) -> Self {
        let list = |k: &str| match process.get(k) {
            Some(v @ Value::Array(_)) => v.clone(),
            _ => json!([]),
        };
        let capabilities = match process.get("capabilities").filter(|c| c.is_object()) {
            Some(caps) => {
                let set = |k: &str| match caps.get(k) {
                    Some(v @ Value::Array(_)) => v.clone(),
                    _ => json!([]),
                };
                json!({
                    "bounding": set("bounding"),
                    "effective": set("effective"),
                    "inheritable": set("inheritable"),
                    "permitted": set("permitted"),
                    "ambient": set("ambient"),
                })
            }
            None => Value::Null,
        };
        Self {
            args: list("args"),
            env: list("env"),
            working_dir: process.get("cwd").cloned().unwrap_or_else(|| json!("")),
            no_new_privileges: process
                .get("noNewPrivileges")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            user,
            groups,
            umask,
            capabilities,
        }
    }
}

/// Container-level facts of `create_container` (SP §4.9).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerFacts<'a> {
    pub container_id: &'a str,
    /// The sandbox (pod) id the container belongs to: its own id for a sandbox or a standalone
    /// container.
    pub sandbox_id: &'a str,
    /// `spec.mounts` after the guest rewrote their sources.
    pub mounts: Value,
    /// `spec.linux.devices` as the host sent them.
    pub devices: Value,
    pub privileged: bool,
    pub seccomp_profile_sha256: String,
    pub is_sandbox: bool,
}

/// `create_container`.
pub fn create_container(c: &ContainerFacts<'_>, p: &ProcessFacts) -> Value {
    let mounts: Vec<Value> = c
        .mounts
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| {
                    json!({
                        "destination": m.get("destination").cloned().unwrap_or(json!("")),
                        "source": m.get("source").cloned().unwrap_or(json!("")),
                        "options": m.get("options").cloned().unwrap_or(Value::Null),
                        "type": m.get("type").cloned().unwrap_or(json!("")),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let devices: Vec<Value> = c
        .devices
        .as_array()
        .map(|list| {
            list.iter()
                .map(|d| {
                    json!({
                        "path": d.get("path").cloned().unwrap_or(json!("")),
                        "type": d.get("type").cloned().unwrap_or(json!("")),
                        "major": d.get("major").cloned().unwrap_or(json!(0)),
                        "minor": d.get("minor").cloned().unwrap_or(json!(0)),
                        "fileMode": d.get("fileMode").cloned().unwrap_or(Value::Null),
                        "uid": d.get("uid").cloned().unwrap_or(Value::Null),
                        "gid": d.get("gid").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "containerID": c.container_id,
        "argList": p.args,
        "envList": p.env,
        "workingDir": p.working_dir,
        "sandboxDir": format!("{PLAN9_ROOT_PREFIX}/{}/sandboxMounts", c.sandbox_id),
        "hugePagesDir": format!("{PLAN9_ROOT_PREFIX}/{}/hugepages", c.sandbox_id),
        "mounts": mounts,
        "devices": devices,
        "privileged": c.privileged,
        "noNewPrivileges": p.no_new_privileges,
        "user": p.user,
        "groups": p.groups,
        "umask": p.umask,
        "capabilities": p.capabilities,
        "seccompProfileSHA256": c.seccomp_profile_sha256,
        "isSandboxContainer": c.is_sandbox,
    })
}

/// `exec_in_container`.
pub fn exec_in_container(container_id: &str, p: &ProcessFacts) -> Value {
    json!({
        "containerID": container_id,
        "argList": p.args,
        "envList": p.env,
        "workingDir": p.working_dir,
        "noNewPrivileges": p.no_new_privileges,
        "user": p.user,
        "groups": p.groups,
        "umask": p.umask,
        "capabilities": p.capabilities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ProcessFacts {
        let process = json!({
            "args": ["/pause"], "cwd": "/", "noNewPrivileges": true,
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]},
        });
        ProcessFacts::from_process(
            &process,
            json!({"id": "0", "name": "root"}),
            json!([{"id": "0", "name": "root"}]),
            "0022".into(),
        )
    }

    #[test]
    fn create_has_the_originals_keys_and_normalises_missing_lists() {
        let c = ContainerFacts {
            container_id: "c1",
            sandbox_id: "sb",
            mounts: json!([{"destination": "/proc", "source": "proc", "type": "proc"}]),
            devices: json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]),
            privileged: false,
            seccomp_profile_sha256: String::new(),
            is_sandbox: false,
        };
        let input = create_container(&c, &facts());
        assert_eq!(input["envList"], json!([]), "a missing env is []");
        assert_eq!(input["sandboxDir"], "/run/gcs/c/sb/sandboxMounts");
        assert_eq!(input["hugePagesDir"], "/run/gcs/c/sb/hugepages");
        assert_eq!(
            input["mounts"][0],
            json!({"destination": "/proc", "source": "proc", "options": null, "type": "proc"})
        );
        assert_eq!(input["devices"][0]["fileMode"], Value::Null);
        assert_eq!(input["capabilities"]["inheritable"], json!([]));
        assert_eq!(input["capabilities"]["ambient"], json!([]));
        let mut keys: Vec<_> = input.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "argList",
                "capabilities",
                "containerID",
                "devices",
                "envList",
                "groups",
                "hugePagesDir",
                "isSandboxContainer",
                "mounts",
                "noNewPrivileges",
                "privileged",
                "sandboxDir",
                "seccompProfileSHA256",
                "umask",
                "user",
                "workingDir"
            ]
        );
    }

    #[test]
    fn a_process_without_capabilities_has_null_capabilities() {
        let f = ProcessFacts::from_process(
            &json!({"args": ["sh"]}),
            json!({}),
            json!([]),
            "0022".into(),
        );
        assert_eq!(f.capabilities, Value::Null);
    }

    #[test]
    fn small_inputs() {
        assert_eq!(
            mount_device("/run/mounts/scsi/m1", "ab", SCSI_MOUNT_PATH_REGEX),
            json!({"target": "/run/mounts/scsi/m1", "deviceHash": "ab", "mountPathRegex": "/run/mounts/scsi/m[0-9]+"})
        );
        assert_eq!(unmount("/x"), json!({"unmountTarget": "/x"}));
        assert_eq!(
            signal_container_process("c", 15, true, &["sh".into()]),
            json!({"containerID": "c", "signal": 15, "isInitProcess": true, "argList": ["sh"]})
        );
        assert_eq!(
            plan9_mount("/run/gcs/c/c1/mounts/m2")["mountPathPrefix"],
            "/mounts/m[0-9]+"
        );
    }
}
