//! containerd's OCI spec, made fit for the utility VM. containerd writes the spec for a runtime
//! on this machine (runc); the VM cannot see this machine's paths, so what names them is
//! translated the way hcsshim's host translates a spec for its Linux guest, or refused.

use serde_json::{json, Value};

use super::{CONTAINER_TYPE_ANNOTATION, SANDBOX_ID_ANNOTATION};

/// The agent's annotation for a pod whose network is the VM's own (hcsshim
/// `annotations.SkipPodNetworking`): no network namespace is added by the host first.
pub const SKIP_POD_NETWORKING: &str = "io.microsoft.cri.skip-pod-networking";

/// What a container is to the CRI (`io.kubernetes.cri.container-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `ctr run` and anything without the CRI's annotations.
    Standalone,
    /// A pod's sandbox (pause) container.
    Sandbox,
    /// A pod's workload container.
    Workload,
}

pub fn role(spec: &Value) -> Role {
    let annotation = |name: &str| {
        spec.pointer("/annotations")
            .and_then(|a| a.get(name))
            .and_then(Value::as_str)
    };
    match (
        annotation(CONTAINER_TYPE_ANNOTATION),
        annotation(SANDBOX_ID_ANNOTATION),
    ) {
        (Some("sandbox"), _) => Role::Sandbox,
        (Some("container"), Some(id)) if !id.is_empty() => Role::Workload,
        _ => Role::Standalone,
    }
}

fn is_bind(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("bind")
        || m.get("options")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

/// The pod files the CRI binds from its sandbox directory on this machine; in the VM the agent
/// writes its own (hostname, hosts, resolv.conf), as it does for hcsshim's pods.
const POD_FILES: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

/// A bind mount of a path of this machine, left in the spec for the shim to share into the VM
/// (`mounts[index]`, whose source the shim then points at the share in the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    pub index: usize,
    pub source: std::path::PathBuf,
    pub read_only: bool,
}

fn namespace<'a>(spec: &'a Value, kind: &str) -> Option<&'a Value> {
    spec.pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .and_then(|ns| {
            ns.iter()
                .find(|n| n.get("type").and_then(Value::as_str) == Some(kind))
        })
}

fn add_namespace(spec: &mut Value, entry: Value) {
    if !spec
        .pointer("/linux/namespaces")
        .is_some_and(Value::is_array)
    {
        spec["linux"]["namespaces"] = json!([]);
    }
    if let Some(ns) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        ns.push(entry);
    }
}

/// Rewrites `spec` for the guest, `hostname` being this machine's name and `sandbox_pid` the
/// guest pid of a workload's pod sandbox:
/// - the CRI's binds of its pod files, and binds of this machine's own `/etc/hosts`,
///   `/etc/resolv.conf` and `/etc/hostname` (`ctr run --net-host`), are dropped: the agent
///   writes the VM's. The CRI's `/dev/shm` bind becomes the pod's shared tmpfs
///   (`sandbox-tmp://shm` for a workload, a tmpfs of the sandbox's own);
/// - a pod whose network is the node's (no network namespace) is marked to use the VM's;
/// - a container that is not a pod's workload always has a UTS namespace of its own, named
///   as the spec says or else after this machine: with runc it would share this machine's
///   name, and the VM's own is the kernel's "(none)". (runc refuses a hostname without its
///   own UTS namespace; here the node's namespace is the VM's, which no container may rename.)
///   A workload without a UTS namespace joins its sandbox's.
///
/// Every other bind mount is returned, to be shared into the VM.
///
/// Errors: a bind mount whose source is not an absolute path, and a network namespace given
/// by path (a CNI network on this machine), which the VM cannot join.
pub fn for_guest(
    spec: &mut Value,
    hostname: &str,
    sandbox_pid: Option<u32>,
) -> Result<Vec<HostBind>, String> {
    let mut binds = Vec::new();
    let role = role(spec);
    if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
        let mut kept = Vec::with_capacity(mounts.len());
        for mut m in std::mem::take(mounts) {
            let destination = m.get("destination").and_then(Value::as_str).unwrap_or("");
            if !is_bind(&m) {
                kept.push(m);
                continue;
            }
            let source = m.get("source").and_then(Value::as_str).unwrap_or("");
            if POD_FILES.contains(&destination)
                && (role != Role::Standalone || source == destination)
            {
                continue;
            }
            if role != Role::Standalone && destination == "/dev/shm" {
                m = if role == Role::Workload {
                    json!({"destination": "/dev/shm", "type": "bind", "source": "sandbox-tmp://shm",
                           "options": ["rbind", "rw"]})
                } else {
                    json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                           "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
                };
                kept.push(m);
                continue;
            }
            if !source.starts_with('/') {
                return Err(format!(
                    "mount of {source:?} on {destination}: a bind mount's source must be an \
                     absolute path of this machine"
                ));
            }
            let read_only = m
                .get("options")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|o| o == "ro"));
            binds.push(HostBind {
                index: kept.len(),
                source: source.into(),
                read_only,
            });
            kept.push(m);
        }
        *mounts = kept;
    }
    let network = namespace(spec, "network").cloned();
    if let Some(path) = network
        .as_ref()
        .and_then(|n| n.get("path"))
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    {
        if role != Role::Workload || !path.starts_with("/proc/") {
            return Err(format!(
                "network namespace {path}: pod networks of this machine (CNI) are not supported; \
                 run the pod with host networking (the VM's network)"
            ));
        }
    }
    if role == Role::Sandbox && network.is_none() {
        spec["annotations"][SKIP_POD_NETWORKING] = json!("true");
    }
    match namespace(spec, "uts").cloned() {
        None if role == Role::Workload => {
            if let Some(pid) = sandbox_pid {
                add_namespace(
                    spec,
                    json!({"type": "uts", "path": format!("/proc/{pid}/ns/uts")}),
                );
            }
        }
        Some(uts) if role != Role::Workload && uts.get("path").is_some_and(|p| p != "") => {
            return Err("a UTS namespace of this machine cannot be joined from the VM".into());
        }
        None => add_namespace(spec, json!({"type": "uts"})),
        Some(_) => {}
    }
    if role != Role::Workload
        && spec
            .get("hostname")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    {
        spec["hostname"] = json!(hostname);
    }
    Ok(binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(kind: &str) -> Value {
        json!({"annotations": {CONTAINER_TYPE_ANNOTATION: kind, SANDBOX_ID_ANNOTATION: "pod"}})
    }

    #[test]
    fn host_bind_mounts_are_returned_to_be_shared() {
        let mut ok =
            json!({"mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}]});
        assert_eq!(for_guest(&mut ok, "node", None).unwrap(), vec![]);
        assert_eq!(ok["hostname"], "node");
        let mut binds = json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"]},
            {"destination": "/x", "type": "none", "source": "/etc", "options": ["rbind", "ro"]},
            // A standalone container's bind of a file onto /etc/hosts is the user's: kept.
            {"destination": "/etc/hosts", "type": "bind", "source": "/srv/hosts"}
        ]});
        let found = for_guest(&mut binds, "node", None).unwrap();
        let expected = [
            (1, "/srv/data", false),
            (2, "/etc", true),
            (3, "/srv/hosts", false),
        ];
        assert_eq!(found.len(), expected.len());
        for (b, (index, source, read_only)) in found.iter().zip(expected) {
            assert_eq!(
                (b.index, b.source.to_str().unwrap(), b.read_only),
                (index, source, read_only)
            );
        }
        let mut relative =
            json!({"mounts": [{"destination": "/d", "type": "bind", "source": "data"}]});
        let problem = for_guest(&mut relative, "node", None).unwrap_err();
        assert!(
            problem.contains("\"data\"") && problem.contains("absolute"),
            "{problem}"
        );
        // This machine's own (`ctr run --net-host`) is dropped: the VM's network is not it.
        let mut net_host = json!({"mounts": [{"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf"}]});
        assert_eq!(for_guest(&mut net_host, "node", None).unwrap(), vec![]);
        assert_eq!(net_host["mounts"], json!([]));
    }

    #[test]
    fn the_cris_pod_files_and_shm_become_the_guests() {
        let cri_mounts = json!([
            {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/containerd/sb/hosts", "options": ["rbind", "rw"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/var/lib/containerd/sb/resolv.conf", "options": ["rbind"]},
            {"destination": "/etc/hostname", "type": "bind", "source": "/var/lib/containerd/sb/hostname", "options": ["rbind"]},
            {"destination": "/dev/shm", "type": "bind", "source": "/run/containerd/sb/shm", "options": ["rbind"]},
            {"destination": "/proc", "type": "proc", "source": "proc"}
        ]);
        let mut workload = annotated("container");
        workload["mounts"] = cri_mounts.clone();
        workload["linux"] = json!({"namespaces": [{"type": "network", "path": "/proc/42/ns/net"}]});
        for_guest(&mut workload, "node", Some(42)).unwrap();
        let mounts = workload["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        assert_eq!(mounts[0]["source"], "sandbox-tmp://shm");
        assert!(
            workload.get("hostname").is_none(),
            "a workload keeps its pod's hostname"
        );
        assert_eq!(
            workload["linux"]["namespaces"][1],
            json!({"type": "uts", "path": "/proc/42/ns/uts"})
        );

        let mut sandbox = annotated("sandbox");
        sandbox["mounts"] = cri_mounts;
        for_guest(&mut sandbox, "node", None).unwrap();
        assert_eq!(sandbox["mounts"][0]["type"], "tmpfs");
        // A host-network pod (no UTS namespace of its own in the CRI's spec) gets one, named.
        assert_eq!(sandbox["linux"]["namespaces"], json!([{"type": "uts"}]));
        assert_eq!(sandbox["hostname"], "node");
        assert_eq!(sandbox["annotations"][SKIP_POD_NETWORKING], "true");
    }

    #[test]
    fn a_network_namespace_of_this_machine_is_refused() {
        let mut sandbox = annotated("sandbox");
        sandbox["linux"] =
            json!({"namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}]});
        let problem = for_guest(&mut sandbox, "node", None).unwrap_err();
        assert!(
            problem.contains("/var/run/netns/cni-1") && problem.contains("host networking"),
            "{problem}"
        );
        // A new namespace (no path) is the pod's own, in the VM.
        let mut own = annotated("sandbox");
        own["linux"] = json!({"namespaces": [{"type": "network"}]});
        for_guest(&mut own, "node", None).unwrap();
        assert!(own["annotations"].get(SKIP_POD_NETWORKING).is_none());
    }
}
