//! What the guest does to a container's OCI spec before handing it to the runtime (spec
//! §6.3, §6.4): classify the container by its CRI annotations, set its cgroup path, write and
//! bind `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, resolve special mount sources,
//! apply annotations. Works on the spec as JSON so that fields the typed OCI structs do not
//! know survive untouched.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::GuestError;

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const VIRTUAL_POD_ID: &str = "io.microsoft.cri.virtual-pod-id";
pub const SKIP_POD_NETWORKING: &str = "io.microsoft.cri.skip-pod-networking";
pub const HOST_NETWORK: &str = "io.microsoft.virtualmachine.lcow.hostnetwork";
pub const PRIVILEGED: &str = "io.microsoft.virtualmachine.lcow.privileged";
pub const SHM_SIZE_KB: &str = "io.microsoft.lcow.shm.size-kb";
pub const RLIMIT_CORE: &str = "io.microsoft.lcow.rlimitcore";
pub const TEE_LOG_DIR_MOUNT: &str = "io.microsoft.container.lcow.tee-log-dir-mount";

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

pub fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec.get("annotations")?.get(key)?.as_str()
}

/// Whether the spec asks for a host-network pod (§6.8).
pub fn is_host_network(spec: &Value) -> bool {
    is_true(spec, HOST_NETWORK)
}

fn is_true(spec: &Value, key: &str) -> bool {
    annotation(spec, key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Classifies by annotations (§6.3 step 2).
pub fn classify(id: &str, spec: &Value) -> Result<Kind, GuestError> {
    if let Some(vpod) = annotation(spec, VIRTUAL_POD_ID).filter(|v| !v.is_empty()) {
        if vpod == id {
            return Ok(Kind::Sandbox);
        }
        return Ok(Kind::Workload {
            sandbox_id: vpod.to_string(),
        });
    }
    match annotation(spec, CONTAINER_TYPE) {
        None | Some("") => Ok(Kind::Standalone),
        Some("sandbox") => Ok(Kind::Sandbox),
        Some("container") => match annotation(spec, SANDBOX_ID) {
            Some(sid) if !sid.is_empty() => Ok(Kind::Workload {
                sandbox_id: sid.to_string(),
            }),
            _ => Err(GuestError::InvalidRequest(format!(
                "workload container {id} has no {SANDBOX_ID} annotation"
            ))),
        },
        Some(other) => Err(GuestError::InvalidRequest(format!(
            "unknown {CONTAINER_TYPE} {other:?}"
        ))),
    }
}

/// `^[a-zA-Z0-9_\-\.]{0,255}$`
pub fn valid_hostname(h: &str) -> bool {
    h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// `/etc/hosts` exactly as the original writes it.
pub fn hosts_content(hostname: &str) -> String {
    let name_line = match hostname.split_once('.') {
        Some((first, _)) => format!("127.0.0.1 {hostname} {first}\n"),
        None => format!("127.0.0.1 {hostname}\n"),
    };
    format!(
        "127.0.0.1 localhost\n{name_line}\n# The following lines are desirable for IPv6 capable hosts\n::1     ip6-localhost ip6-loopback\nfe00::0 ip6-localnet\nff00::0 ip6-mcastprefix\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"
    )
}

/// `resolv.conf` from search domains and servers (deduplicated, lower-cased, in order).
pub fn resolv_conf(search: &[String], servers: &[String]) -> Result<String, GuestError> {
    fn clean(list: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for item in list.iter().flat_map(|s| s.split(',')) {
            let item = item.trim().to_lowercase();
            if !item.is_empty() && !out.contains(&item) {
                out.push(item);
            }
        }
        out
    }
    let search = clean(search);
    if search.len() > 6 {
        return Err(GuestError::InvalidRequest(format!(
            "{} DNS search domains; at most 6 are allowed",
            search.len()
        )));
    }
    let mut text = String::new();
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in clean(servers) {
        text.push_str(&format!("nameserver {s}\n"));
    }
    Ok(text)
}

fn mounts_destination(spec: &Value, dst: &str) -> bool {
    spec.get("mounts")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|m| m.get("destination").and_then(Value::as_str) == Some(dst))
        })
}

fn push_mount(spec: &mut Value, mount: Value) {
    if !spec.get("mounts").is_some_and(Value::is_array) {
        spec["mounts"] = json!([]);
    }
    if let Some(m) = spec["mounts"].as_array_mut() {
        m.push(mount);
    }
}

/// Adds bind mounts of `<root>/{hostname,hosts,resolv.conf}` unless the spec already mounts
/// that destination.
pub fn bind_network_files(spec: &mut Value, root: &Path) {
    let ro = spec
        .pointer("/root/readonly")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for (file, dst) in [
        ("hostname", "/etc/hostname"),
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        if mounts_destination(spec, dst) {
            continue;
        }
        let mut options = vec!["bind"];
        if ro {
            options.push("ro");
        }
        push_mount(
            spec,
            json!({"destination": dst, "type": "bind", "source": root.join(file), "options": options}),
        );
    }
}

/// Writes `hostname`, `hosts` and `resolv.conf` into `root`, each skipped when the spec
/// mounts that `/etc` file itself.
pub fn write_network_files(
    spec: &Value,
    root: &Path,
    hostname: &str,
    resolv: &str,
) -> Result<(), GuestError> {
    let io = |what: &str, path: PathBuf, source| GuestError::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    std::fs::create_dir_all(root).map_err(|e| io("create", root.to_path_buf(), e))?;
    for (file, dst, content) in [
        ("hostname", "/etc/hostname", format!("{hostname}\n")),
        ("hosts", "/etc/hosts", hosts_content(hostname)),
        ("resolv.conf", "/etc/resolv.conf", resolv.to_string()),
    ] {
        if !mounts_destination(spec, dst) {
            let path = root.join(file);
            std::fs::write(&path, content).map_err(|e| io("write", path, e))?;
        }
    }
    Ok(())
}

/// The hostname a sandbox or standalone container gets: its spec's, or the UVM's.
pub fn hostname_for(spec: &Value) -> Result<String, GuestError> {
    let name = match spec
        .get("hostname")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
    {
        Some(h) => h.to_string(),
        None => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !valid_hostname(&name) {
        return Err(GuestError::InvalidRequest(format!(
            "invalid hostname {name:?}"
        )));
    }
    Ok(name)
}

/// Resolves the special mount sources of §6.4 relative to the sandbox root; refuses escapes.
pub fn rewrite_mount_sources(spec: &mut Value, sandbox_root: &Path) -> Result<(), GuestError> {
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for m in mounts.iter_mut() {
        let Some(src) = m.get("source").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        let rewritten = if let Some(rel) = src.strip_prefix("sandbox://") {
            Some(under(&sandbox_root.join("sandboxMounts"), rel, true)?)
        } else if let Some(rel) = src.strip_prefix("sandbox-tmp://") {
            Some(under(&sandbox_root.join("sandboxTmpfsMounts"), rel, true)?)
        } else if let Some(rel) = src.strip_prefix("hugepages://") {
            Some(hugepages_source(sandbox_root, rel)?)
        } else if let Some(path) = src.strip_prefix("uvm://") {
            if !Path::new(path).exists() {
                return Err(GuestError::InvalidRequest(format!(
                    "uvm:// mount source {path:?} does not exist"
                )));
            }
            Some(PathBuf::from(path))
        } else {
            None
        };
        if let Some(path) = rewritten {
            m["source"] = Value::String(path.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// `hugepages://<size>/<path>`: `<root>/hugepages/<size>` is a hugetlbfs of that page size
/// (mounted on first use), and the source is `<path>` inside it.
fn hugepages_source(sandbox_root: &Path, rel: &str) -> Result<PathBuf, GuestError> {
    let rel = rel.trim_start_matches('/');
    let (size, rest) = rel.split_once('/').unwrap_or((rel, ""));
    if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(GuestError::InvalidRequest(format!(
            "invalid hugepage size {size:?}"
        )));
    }
    let mount_point = under(&sandbox_root.join("hugepages"), size, true)?;
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&*mount_point.to_string_lossy()));
    if !mounted {
        let data = format!("pagesize={size}");
        nix::mount::mount(
            Some("none"),
            &mount_point,
            Some("hugetlbfs"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| GuestError::Io {
            what: format!("mount hugetlbfs {}", mount_point.display()),
            source: e.into(),
        })?;
    }
    under(&mount_point, rest, true)
}

/// `io.microsoft.container.lcow.tee-log-dir-mount`: bind the pod's log directory into the
/// container at the given destination.
pub fn bind_log_dir(spec: &mut Value, sandbox_root: &Path) {
    if let Some(dst) = annotation(spec, TEE_LOG_DIR_MOUNT)
        .filter(|d| d.starts_with('/'))
        .map(str::to_string)
    {
        push_mount(
            spec,
            json!({"destination": dst, "type": "bind", "source": sandbox_root.join("logs"), "options": ["rbind", "rw"]}),
        );
    }
}

/// `base/rel`, refusing `..` or absolute components that would leave `base`.
fn under(base: &Path, rel: &str, create: bool) -> Result<PathBuf, GuestError> {
    use std::path::Component;
    let rel = Path::new(rel.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(GuestError::InvalidRequest(format!(
            "mount source {} escapes {}",
            rel.display(),
            base.display()
        )));
    }
    let path = base.join(rel);
    if create {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o777)
            .create(&path);
    }
    Ok(path)
}

/// Applies the annotations of §6.4 that change the spec.
pub fn apply_annotations(spec: &mut Value) -> Result<(), GuestError> {
    if let Some(kb) = annotation(spec, SHM_SIZE_KB).map(str::to_string) {
        let size: u64 = kb.parse().map_err(|_| {
            GuestError::InvalidRequest(format!("{SHM_SIZE_KB} {kb:?} is not a number"))
        })?;
        if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
            mounts.retain(|m| m.get("destination").and_then(Value::as_str) != Some("/dev/shm"));
        }
        push_mount(
            spec,
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={size}k")]}),
        );
    }
    if let Some(core) = annotation(spec, RLIMIT_CORE).map(str::to_string) {
        let (soft, hard) = core
            .split_once(';')
            .and_then(|(s, h)| Some((s.parse::<u64>().ok()?, h.parse::<u64>().ok()?)))
            .ok_or_else(|| {
                GuestError::InvalidRequest(format!("{RLIMIT_CORE} {core:?} is not <soft>;<hard>"))
            })?;
        if !spec
            .pointer("/process/rlimits")
            .is_some_and(Value::is_array)
        {
            spec["process"]["rlimits"] = json!([]);
        }
        if let Some(r) = spec
            .pointer_mut("/process/rlimits")
            .and_then(Value::as_array_mut)
        {
            r.retain(|l| l.get("type").and_then(Value::as_str) != Some("RLIMIT_CORE"));
            r.push(json!({"type": "RLIMIT_CORE", "soft": soft, "hard": hard}));
        }
    }
    if is_true(spec, PRIVILEGED) {
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        rebuild_devices(spec)?;
    }
    if is_true(spec, HOST_NETWORK) {
        remove_namespace(spec, "network");
    }
    Ok(())
}

/// Rebuilds each `linux.devices` entry from the real device node, as the original does for
/// unprivileged containers; a missing node fails the create.
fn rebuild_devices(spec: &mut Value) -> Result<(), GuestError> {
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

pub fn remove_namespace(spec: &mut Value, kind: &str) {
    if let Some(ns) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        ns.retain(|n| n.get("type").and_then(Value::as_str) != Some(kind));
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

/// Makes `/sys/fs/cgroup` read-only inside the container when the spec mounts it `ro`
/// (libcontainer alone leaves it writable): the path is added to `linux.readonlyPaths`.
pub fn enforce_readonly_cgroupfs(spec: &mut Value) {
    let ro = spec
        .get("mounts")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter().any(|m| {
                m.get("destination").and_then(Value::as_str) == Some("/sys/fs/cgroup")
                    && m.get("options")
                        .and_then(Value::as_array)
                        .is_some_and(|o| o.iter().any(|o| o == "ro"))
            })
        });
    if !ro {
        return;
    }
    if !spec
        .pointer("/linux/readonlyPaths")
        .is_some_and(Value::is_array)
    {
        spec["linux"]["readonlyPaths"] = json!([]);
    }
    if let Some(paths) = spec
        .pointer_mut("/linux/readonlyPaths")
        .and_then(Value::as_array_mut)
    {
        if !paths.iter().any(|p| p == "/sys/fs/cgroup") {
            paths.push(json!("/sys/fs/cgroup"));
        }
    }
}

/// Resolves `process.user.username` against the container rootfs's `/etc/passwd` (static
/// glibc cannot do NSS look-ups) and clears it.
pub fn resolve_username(process: &mut Value, rootfs: &Path) -> Result<(), GuestError> {
    let Some(name) = process
        .pointer("/user/username")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let passwd =
        std::fs::read_to_string(rootfs.join("etc/passwd")).map_err(|source| GuestError::Io {
            what: "read /etc/passwd of the container".into(),
            source,
        })?;
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == name)
        .ok_or_else(|| {
            GuestError::InvalidRequest(format!(
                "user {name:?} not found in the container's /etc/passwd"
            ))
        })?;
    let uid: u32 = entry[2]
        .parse()
        .map_err(|_| GuestError::InvalidRequest(format!("bad uid for {name}")))?;
    let gid: u32 = entry[3]
        .parse()
        .map_err(|_| GuestError::InvalidRequest(format!("bad gid for {name}")))?;
    process["user"]["uid"] = json!(uid);
    process["user"]["gid"] = json!(gid);
    if let Some(user) = process.get_mut("user").and_then(Value::as_object_mut) {
        user.remove("username");
    }
    Ok(())
}

/// Absolute sources of the spec's bind mounts (type `bind`, or a `bind`/`rbind` option).
pub fn bind_sources(spec: &Value) -> Vec<PathBuf> {
    let Some(mounts) = spec.get("mounts").and_then(Value::as_array) else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter(|m| {
            m.get("type").and_then(Value::as_str) == Some("bind")
                || m.get("options").and_then(Value::as_array).is_some_and(|o| {
                    o.iter()
                        .any(|o| matches!(o.as_str(), Some("bind" | "rbind")))
                })
        })
        .filter_map(|m| m.get("source").and_then(Value::as_str))
        .filter(|s| s.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            classify("v", &spec(json!({VIRTUAL_POD_ID: "v"}))).unwrap(),
            Kind::Sandbox
        );
    }

    #[test]
    fn hosts_file_byte_exact() {
        assert!(hosts_content("peerctr")
            .starts_with("127.0.0.1 localhost\n127.0.0.1 peerctr\n\n# The following"));
        assert!(hosts_content("a.b.c").contains("127.0.0.1 a.b.c a\n"));
        assert!(hosts_content("x").ends_with("ff02::2 ip6-allrouters\n"));
    }

    #[test]
    fn resolv_conf_merging() {
        let r = resolv_conf(
            &[
                "Default.svc.cluster.local,svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            &["10.96.0.10".into()],
        )
        .unwrap();
        assert_eq!(
            r,
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n"
        );
        assert_eq!(resolv_conf(&[], &[]).unwrap(), "");
        assert!(resolv_conf(&["a,b,c,d,e,f,g".into()], &[]).is_err());
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("my-host_1.example"));
        assert!(!valid_hostname("bad host"));
        assert!(!valid_hostname(&"a".repeat(256)));
    }

    #[test]
    fn network_files_are_bound_unless_mounted() {
        let mut spec = json!({"mounts": [{"destination": "/etc/hosts", "source": "/x"}], "root": {"readonly": true}});
        bind_network_files(&mut spec, Path::new("/run/gcs/c/s"));
        let m = spec["mounts"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1]["destination"], "/etc/hostname");
        assert_eq!(m[1]["options"], json!(["bind", "ro"]));
    }

    #[test]
    fn special_sources_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = json!({"mounts": [{"destination": "/d", "source": "sandbox://data/x"}]});
        rewrite_mount_sources(&mut spec, dir.path()).unwrap();
        assert_eq!(
            spec["mounts"][0]["source"],
            dir.path()
                .join("sandboxMounts/data/x")
                .to_string_lossy()
                .as_ref()
        );
        let mut bad = json!({"mounts": [{"destination": "/d", "source": "sandbox://../../etc"}]});
        assert!(rewrite_mount_sources(&mut bad, dir.path()).is_err());
        let mut bad = json!({"mounts": [{"destination": "/d", "source": "uvm:///does/not/exist"}]});
        assert!(rewrite_mount_sources(&mut bad, dir.path()).is_err());
    }

    #[test]
    fn annotations() {
        let mut spec = json!({"annotations": {SHM_SIZE_KB: "1024", RLIMIT_CORE: "1;2", HOST_NETWORK: "true"},
            "linux": {"namespaces": [{"type": "network"}, {"type": "pid"}]}, "process": {}});
        apply_annotations(&mut spec).unwrap();
        assert_eq!(spec["mounts"][0]["options"][4], "size=1024k");
        assert_eq!(
            spec["process"]["rlimits"][0],
            json!({"type": "RLIMIT_CORE", "soft": 1, "hard": 2})
        );
        assert_eq!(spec["linux"]["namespaces"], json!([{"type": "pid"}]));
        assert!(owns_pid_namespace(&spec));
        let mut spec = json!({"linux": {"devices": [{"path": "/dev/does-not-exist"}]}});
        assert!(apply_annotations(&mut spec).is_err());
        let mut spec = json!({"linux": {"devices": [{"path": "/dev/null"}]}});
        apply_annotations(&mut spec).unwrap();
        assert_eq!(spec["linux"]["devices"][0]["type"], "c");
        assert_eq!(spec["linux"]["devices"][0]["major"], 1);
    }

    #[test]
    fn pid_namespace_ownership() {
        assert!(!owns_pid_namespace(
            &json!({"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}})
        ));
        assert!(!owns_pid_namespace(&json!({"linux": {"namespaces": []}})));
    }

    #[test]
    fn username_resolution() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/sh\n",
        )
        .unwrap();
        let mut p = json!({"user": {"username": "web"}});
        resolve_username(&mut p, dir.path()).unwrap();
        assert_eq!(p["user"], json!({"uid": 33, "gid": 44}));
        let mut p = json!({"user": {"username": "nobody"}});
        assert!(resolve_username(&mut p, dir.path()).is_err());
    }
}
