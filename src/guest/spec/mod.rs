//! What the guest does to a container's OCI spec before handing it to the runtime (spec
//! §6.3, §6.4), one concern per file: classification by CRI annotations (here), the pod's
//! `/etc` files ([`pod_files`]), mount sources and binds ([`mounts`]), annotations
//! ([`annotations`]), device nodes ([`devices`]), `process.user` ([`user`]), and capability
//! names and `execve(2)`'s string limits as runc and the kernel take them ([`process`]). Works
//! on the
//! spec as JSON so that fields the typed OCI structs do not know survive untouched.

pub mod annotations;
pub mod devices;
pub mod mounts;
pub mod pod_files;
pub mod process;
pub mod user;

use serde_json::{json, Value};

use super::GuestError;

pub use annotations::{apply_annotations, remove_namespace};
pub use mounts::{bind_log_dir, bind_sources, enforce_readonly_cgroupfs, rewrite_mount_sources};
pub use pod_files::{bind_network_files, hostname_for, resolv_conf, write_network_files};

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const VIRTUAL_POD_ID: &str = "io.microsoft.cri.virtual-pod-id";
pub const SKIP_POD_NETWORKING: &str = "io.microsoft.cri.skip-pod-networking";
pub const HOST_NETWORK: &str = "io.microsoft.virtualmachine.lcow.hostnetwork";
pub const PRIVILEGED: &str = "io.microsoft.virtualmachine.lcow.privileged";
pub const SHM_SIZE_KB: &str = "io.microsoft.lcow.shm.size-kb";
pub const RLIMIT_CORE: &str = "io.microsoft.lcow.rlimitcore";
pub const TEE_LOG_DIR_MOUNT: &str = "io.microsoft.container.lcow.tee-log-dir-mount";
pub const TEE_LOG_PATH: &str = "io.microsoft.container.lcow.tee-log-path";

/// How a container relates to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// No CRI annotations: a container on its own.
    Standalone,
    /// A pod's sandbox ("pause") container.
    Sandbox,
    /// A workload container of the pod `sandbox_id`.
    Workload { sandbox_id: String },
}

/// How much of a host's value an error quotes, in bytes.
const QUOTED: usize = 64;

/// A host's value for an error message: Go-quoted, and only its first 64 bytes (then `…`) when
/// longer, so that an error about a 10 MiB value is not 10 MiB.
pub fn quote_start(s: &str) -> String {
    if s.len() <= QUOTED {
        return format!("{s:?}");
    }
    let mut cut = QUOTED;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}…", &s[..cut])
}

pub fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec.get("annotations")?.get(key)?.as_str()
}

/// Whether the spec asks for a host-network pod (§6.8): Go `ParseBool`, default false.
pub fn is_host_network(spec: &Value) -> bool {
    annotations::bool_annotation(spec, HOST_NETWORK, false)
}

/// Whether `id` has the form a confidential guest requires of container and sandbox ids: 64
/// hex digits (SP §9.6).
pub fn is_confidential_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a container id before any path is built from it: runc's rule (`^[\w+-.]+$`, not `.`
/// or `..`), at most 1024 bytes.
pub fn check_container_id(id: &str) -> Result<(), GuestError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(GuestError::InvalidId(super::error::shown(id)))
    }
}

/// Classifies by annotations (§6.3 step 2), refusing what the original refuses: a
/// container type other than `sandbox` or `container` (empty included), and a workload
/// without a sandbox id.
pub fn classify(id: &str, spec: &Value) -> Result<Kind, GuestError> {
    let vpod = annotation(spec, VIRTUAL_POD_ID).filter(|v| !v.is_empty());
    if let Some(vpod) = vpod {
        // It names a directory under the bundle's parent (`virtual-pods/<id>`).
        if check_container_id(vpod).is_err() {
            return Err(GuestError::InvalidRequest(format!(
                "invalid virtual pod ID {vpod:?}: path traversal attempt"
            )));
        }
        if vpod == id {
            return Ok(Kind::Sandbox);
        }
    }
    match annotation(spec, CONTAINER_TYPE) {
        None => Ok(Kind::Standalone),
        Some("sandbox") => Ok(Kind::Sandbox),
        Some("container") => match vpod.or_else(|| annotation(spec, SANDBOX_ID)) {
            Some(sid) if !sid.is_empty() => {
                check_container_id(sid)?;
                Ok(Kind::Workload {
                    sandbox_id: sid.to_string(),
                })
            }
            _ => Err(GuestError::InvalidRequest(format!(
                "unsupported '{SANDBOX_ID}': '' (workload container {id} names no pod)"
            ))),
        },
        Some(other) => Err(GuestError::InvalidRequest(format!(
            "unsupported '{CONTAINER_TYPE}': '{other}'"
        ))),
    }
}

/// True when the container gets a PID namespace of its own (an entry without a path).
pub fn owns_pid_namespace(spec: &Value) -> bool {
    spec.pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.get("type").and_then(Value::as_str) == Some("pid")
                    && n.get("path")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
            })
        })
}

/// Whether `spec.mounts` has an entry for `dst`.
pub(crate) fn mounts_destination(spec: &Value, dst: &str) -> bool {
    spec.get("mounts")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|m| m.get("destination").and_then(Value::as_str) == Some(dst))
        })
}

/// Appends `mount` to `spec.mounts`, making the list if needed.
pub(crate) fn push_mount(spec: &mut Value, mount: Value) {
    if !spec.get("mounts").is_some_and(Value::is_array) {
        spec["mounts"] = json!([]);
    }
    if let Some(m) = spec["mounts"].as_array_mut() {
        m.push(mount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids_are_checked() {
        let spec = json!({"annotations": {CONTAINER_TYPE: "container", SANDBOX_ID: "../../etc"}});
        assert!(matches!(
            classify("w", &spec),
            Err(GuestError::InvalidId(_))
        ));
    }

    #[test]
    fn container_ids_as_runc() {
        for good in ["c", "5310babfb4770d141c", "a.b_c-d+e", "..a"] {
            assert!(check_container_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../etc",
            "a/b",
            "a b",
            "a\0",
            "é",
            &"x".repeat(1025),
        ] {
            assert!(check_container_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classification() {
        let spec = |a: Value| json!({"annotations": a});
        assert_eq!(classify("c", &spec(json!({}))).unwrap(), Kind::Standalone);
        assert_eq!(
            classify("s", &spec(json!({CONTAINER_TYPE: "sandbox"}))).unwrap(),
            Kind::Sandbox
        );
        assert_eq!(
            classify(
                "w",
                &spec(json!({CONTAINER_TYPE: "container", SANDBOX_ID: "s"}))
            )
            .unwrap(),
            Kind::Workload {
                sandbox_id: "s".into()
            }
        );
        assert!(classify("w", &spec(json!({CONTAINER_TYPE: "container"}))).is_err());
        assert!(classify(
            "w",
            &spec(json!({CONTAINER_TYPE: "container", SANDBOX_ID: ""}))
        )
        .is_err());
        assert!(classify("x", &spec(json!({CONTAINER_TYPE: ""}))).is_err());
        assert!(classify("x", &spec(json!({CONTAINER_TYPE: "Sandbox"})))
            .unwrap_err()
            .to_string()
            .contains("unsupported"));
        assert_eq!(
            classify("v", &spec(json!({VIRTUAL_POD_ID: "v"}))).unwrap(),
            Kind::Sandbox
        );
        for hostile in [
            "../x",
            "/abs",
            "a/../../b",
            "..",
            ".",
            "a//b",
            "a/",
            "../../../../../etc",
        ] {
            assert!(classify(hostile, &spec(json!({VIRTUAL_POD_ID: hostile})))
                .unwrap_err()
                .to_string()
                .contains("path traversal"));
        }
        assert_eq!(
            classify(
                "w",
                &spec(json!({VIRTUAL_POD_ID: "v", CONTAINER_TYPE: "container"}))
            )
            .unwrap(),
            Kind::Workload {
                sandbox_id: "v".into()
            }
        );
    }

    #[test]
    fn pid_namespace_ownership() {
        assert!(!owns_pid_namespace(
            &json!({"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}})
        ));
        assert!(!owns_pid_namespace(&json!({"linux": {"namespaces": []}})));
    }
}
