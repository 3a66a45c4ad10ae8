//! Devices of a container: `linux.devices` rebuilt from the UVM's real nodes (spec §6.4), and
//! the device cgroup as runc sets it (spec §10.7): deny everything, then allow runc's default
//! nodes (libcgroups adds them: null, zero, full, random, urandom, tty, console, ptmx, pts,
//! tun, and `mknod` of any node), the spec's own rules and the spec's device nodes.

use std::path::Path;

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

/// Raw block volumes (spec §6.4): a mount whose destination is `blockdev://<path>` has as its
/// source the symlink a `MappedVirtualDisk` with `BlockDev` made; the disk node it names gets a
/// device cgroup rule (`rwm`, or `r` with `ro`) and the mount's destination becomes `<path>`,
/// where the runtime binds the node.
///
/// Errors: a source that is not a symlink (where a share may be) to a block device node.
pub fn block_device_mounts(spec: &mut Value) -> Result<(), GuestError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    let mut rules = Vec::new();
    for m in mounts.iter_mut() {
        let Some(dst) = m
            .get("destination")
            .and_then(Value::as_str)
            .and_then(|d| d.strip_prefix("blockdev://"))
            .map(str::to_string)
        else {
            continue;
        };
        let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
        crate::storage::checked_share_path(Path::new(source))
            .map_err(|e| GuestError::InvalidRequest(format!("block device mount {dst:?}: {e}")))?;
        let node = std::fs::read_link(source).map_err(|e| GuestError::Io {
            what: format!("failed to readlink {source}"),
            source: e,
        })?;
        let meta = std::fs::symlink_metadata(&node).map_err(|e| GuestError::Io {
            what: format!("failed to get device from path {}", node.display()),
            source: e,
        })?;
        if !meta.file_type().is_block_device() {
            return Err(GuestError::InvalidRequest(format!(
                "block device mount {dst:?}: {} is not a block device",
                node.display()
            )));
        }
        let read_only = m
            .get("options")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|o| o == "ro"));
        let rdev = meta.rdev();
        rules.push(
            json!({"allow": true, "type": "b", "major": nix::sys::stat::major(rdev),
                          "minor": nix::sys::stat::minor(rdev),
                          "access": if read_only { "r" } else { "rwm" }}),
        );
        m["destination"] = json!(dst);
    }
    if !rules.is_empty() {
        push_device_rules(spec, rules);
    }
    Ok(())
}

/// Appends cgroup rules to `linux.resources.devices`, making the list if needed.
fn push_device_rules(spec: &mut Value, rules: impl IntoIterator<Item = Value>) {
    if !spec["linux"]["resources"].is_object() {
        spec["linux"]["resources"] = json!({});
    }
    if !spec["linux"]["resources"]["devices"].is_array() {
        spec["linux"]["resources"]["devices"] = json!([]);
    }
    if let Some(devices) = spec["linux"]["resources"]["devices"].as_array_mut() {
        devices.extend(rules);
    }
}

/// Puts device nodes in `linux.devices`, replacing entries of the same path.
fn put_device_nodes(spec: &mut Value, nodes: Vec<Value>) {
    if !spec["linux"]["devices"].is_array() {
        spec["linux"]["devices"] = json!([]);
    }
    if let Some(devices) = spec["linux"]["devices"].as_array_mut() {
        for node in nodes {
            match devices
                .iter_mut()
                .find(|d| d.get("path") == node.get("path"))
            {
                Some(existing) => *existing = node,
                None => devices.push(node),
            }
        }
    }
}

/// How long a container's assigned devices are waited for (the original's 60 s).
pub const ASSIGNED_DEVICE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The device nodes under `dev` that belong to the PCI device whose sysfs directory is `pci`:
/// those whose `<sys>/dev/{char,block}/<major>:<minor>` resolves below it (a driver may make
/// several).
pub fn nodes_of_pci_device(sys: &Path, dev: &Path, pci: &Path) -> Vec<Value> {
    let Ok(pci) = std::fs::canonicalize(pci) else {
        return Vec::new();
    };
    host_devices(dev)
        .into_iter()
        .filter(|d| {
            let kind = if d["type"] == "b" { "block" } else { "char" };
            let link = sys.join(format!("dev/{kind}/{}:{}", d["major"], d["minor"]));
            std::fs::canonicalize(link).is_ok_and(|p| p.starts_with(&pci))
        })
        .collect()
}

/// Adds device nodes to `linux.devices` (replacing entries of the same path), each with an
/// `rwm` cgroup rule.
fn add_nodes_with_rules(spec: &mut Value, nodes: Vec<Value>) {
    let rules: Vec<Value> = nodes
        .iter()
        .map(|node| {
            json!({"allow": true, "type": node["type"], "major": node["major"],
                   "minor": node["minor"], "access": "rwm"})
        })
        .collect();
    put_device_nodes(spec, nodes);
    push_device_rules(spec, rules);
}

/// Where the UVM's programs are looked for (the agent's `PATH`, then the usual directories).
fn find_program(name: &str, path: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .chain(["/bin", "/sbin", "/usr/bin", "/usr/sbin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `windows.devices` of a workload (spec §6.3; the original's `AddAssignedDevice` and
/// `addNvidiaDeviceHook`):
/// - `vpci` / `vpci-instance-id`: the PCI device of that vmbus instance is waited for (uevents,
///   [`ASSIGNED_DEVICE_DEADLINE`]), then for its `/dev` nodes, which join `linux.devices` with
///   `rwm` rules;
/// - `gpu`: a `createRuntime` hook running `generichook nvidia-container-cli … configure
///   --device=<bus> --pid={{pid}} <rootfs>` (the GPU tools come from the UVM's base image; a
///   missing `generichook` is an error), the `io.microsoft.container.gpu.capabilities` as
///   `--<cap>` flags, and a `c *:* rwm` rule;
/// - anything else is logged and skipped, as the original does.
///
/// `sys` and `dev` are `/sys` and `/dev` (fake trees in tests); `path` the agent's `PATH`.
/// Devices are waited for asynchronously (uevents, no thread held), up to 60 s each.
pub async fn assigned_devices(
    spec: &mut Value,
    bundle: &Path,
    sys: &Path,
    dev: &Path,
    path: &str,
) -> Result<(), GuestError> {
    let Some(entries) = spec
        .pointer("/windows/devices")
        .and_then(Value::as_array)
        .cloned()
    else {
        return Ok(());
    };
    let mut gpu_buses = Vec::new();
    for d in &entries {
        let id = d.get("id").and_then(Value::as_str).unwrap_or_default();
        let id_type = d.get("idType").and_then(Value::as_str).unwrap_or_default();
        match id_type {
            "vpci" | "vpci-instance-id" => {
                let pci = crate::devices::wait_for(sys, id, ASSIGNED_DEVICE_DEADLINE)
                    .await
                    .map_err(|e| {
                        GuestError::InvalidRequest(format!(
                            "failed to find device pci path for device {id}: {e}"
                        ))
                    })?;
                let deadline = std::time::Instant::now() + ASSIGNED_DEVICE_DEADLINE;
                let nodes = loop {
                    let nodes = nodes_of_pci_device(sys, dev, &pci);
                    if !nodes.is_empty() {
                        break nodes;
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(GuestError::InvalidRequest(format!(
                            "failed to find dev node for device {id} with path {}",
                            pci.display()
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                };
                add_nodes_with_rules(spec, nodes);
            }
            "gpu" => {
                let pci = crate::devices::wait_for(sys, id, ASSIGNED_DEVICE_DEADLINE)
                    .await
                    .map_err(|e| {
                        GuestError::InvalidRequest(format!(
                            "failed to find nvidia gpu bus location: {e}"
                        ))
                    })?;
                gpu_buses.push(
                    pci.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            }
            other => tracing::warn!(id, id_type = other, "unknown device type"),
        }
    }
    if gpu_buses.is_empty() {
        return Ok(());
    }
    let hook = find_program("generichook", path).ok_or_else(|| {
        GuestError::InvalidRequest(
            "failed to find generichook for container device support (the UVM's base image provides it)".into(),
        )
    })?;
    let debug = bundle.join("nvidia-container.log");
    let mut args = vec![
        hook.to_string_lossy().into_owned(),
        "nvidia-container-cli".to_string(),
        format!("--debug={}", debug.display()),
        "--no-pivot".to_string(),
        "configure".to_string(),
        "--ldconfig=@/sbin/ldconfig".to_string(),
    ];
    if let Some(caps) = super::annotation(spec, "io.microsoft.container.gpu.capabilities") {
        args.extend(caps.split(',').map(|c| format!("--{c}")));
    }
    args.extend(gpu_buses.iter().map(|b| format!("--device={b}")));
    args.push("--pid={{pid}}".to_string());
    args.push(
        spec.pointer("/root/path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    );
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    env.push("NVC_INSECURE_MODE=1".to_string());
    env.push(format!("GENERIC_HOOK_LOG_DEBUG_FILE={}", debug.display()));
    if !spec["hooks"].is_object() {
        spec["hooks"] = json!({});
    }
    if !spec["hooks"]["createRuntime"].is_array() {
        spec["hooks"]["createRuntime"] = json!([]);
    }
    if let Some(list) = spec["hooks"]["createRuntime"].as_array_mut() {
        list.push(json!({"path": hook, "args": args, "env": env}));
    }
    push_device_rules(spec, [json!({"allow": true, "type": "c", "access": "rwm"})]);
    Ok(())
}

/// Every device node under `dev` (the UVM's `/dev`) as `linux.devices` entries, as the
/// original's `HostDevices()` finds them for a privileged container: `pts`, `shm`, `fd`,
/// `mqueue`, `.lxc`, `.lxd-mounts` and `.udev` are skipped, as are `console`, FIFOs, symlinks and
/// nodes numbered 0:0. At most 4096 entries (a UVM has far fewer).
pub fn host_devices(dev: &Path) -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const SKIPPED_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
    let mut found = Vec::new();
    let mut dirs = vec![dev.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let name = entry.file_name();
            let ft = meta.file_type();
            if ft.is_dir() {
                if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                    dirs.push(path);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if name == "console" {
                continue;
            }
            let rdev = meta.rdev();
            let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
            if major == 0 && minor == 0 {
                continue;
            }
            found.push(json!({"path": path, "type": kind, "major": major, "minor": minor,
                              "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid()}));
            if found.len() >= 4096 {
                return found;
            }
        }
    }
    found
}

/// Adds the UVM's device nodes ([`host_devices`]) to a privileged container's
/// `linux.devices`, replacing entries of the same path.
pub fn add_host_devices(spec: &mut Value, dev: &Path) {
    put_device_nodes(spec, host_devices(dev));
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
    use std::path::PathBuf;

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

    /// A fake vmbus PCI device with a DRM node, as sysfs and /dev show one.
    fn fake_gpu(root: &Path, guid: &str) -> (PathBuf, PathBuf) {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let sys = root.join("sys");
        let dev = root.join("dev");
        let pci = sys.join(format!("bus/vmbus/devices/{guid}/pci7a3c:00/7a3c:00:00.0"));
        std::fs::create_dir_all(pci.join("drm/card0")).unwrap();
        std::fs::create_dir_all(sys.join("dev/char")).unwrap();
        std::fs::create_dir_all(sys.join("devices/virtual/mem/null")).unwrap();
        std::os::unix::fs::symlink(pci.join("drm/card0"), sys.join("dev/char/226:0")).unwrap();
        std::os::unix::fs::symlink(
            sys.join("devices/virtual/mem/null"),
            sys.join("dev/char/1:3"),
        )
        .unwrap();
        std::fs::create_dir_all(dev.join("dri")).unwrap();
        let mode = Mode::from_bits_truncate(0o666);
        mknod(
            &dev.join("dri/card0"),
            SFlag::S_IFCHR,
            mode,
            makedev(226, 0),
        )
        .unwrap();
        mknod(&dev.join("null"), SFlag::S_IFCHR, mode, makedev(1, 3)).unwrap();
        (sys, dev)
    }

    #[tokio::test]
    async fn vpci_devices_bring_their_nodes_and_rules() {
        let root = tempfile::tempdir().unwrap();
        let guid = "5d5a4b3c-1111-2222-3333-444455556666";
        let (sys, dev) = fake_gpu(root.path(), guid);
        let mut spec = json!({"root": {"path": "/run/gcs/c/w/rootfs"}, "linux": {},
            "windows": {"devices": [{"id": guid, "idType": "vpci-instance-id"}, {"id": "x", "idType": "mystery"}]}});
        assigned_devices(&mut spec, Path::new("/run/gcs/c/w"), &sys, &dev, "")
            .await
            .unwrap();
        let devices = spec["linux"]["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 1, "{devices:?}");
        assert!(devices[0]["path"].as_str().unwrap().ends_with("dri/card0"));
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "type": "c", "major": 226, "minor": 0, "access": "rwm"}])
        );
        assert!(spec.get("hooks").is_none());
        // Not a GUID: a clear error, no wait.
        let mut bad = json!({"windows": {"devices": [{"id": "../../etc", "idType": "vpci"}]}});
        let e = assigned_devices(&mut bad, Path::new("/b"), &sys, &dev, "")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("is not a GUID"), "{e}");
    }

    #[tokio::test]
    async fn gpus_get_the_nvidia_hook() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let guid = "5d5a4b3c-1111-2222-3333-444455556666";
        let (sys, dev) = fake_gpu(root.path(), guid);
        let mut spec = json!({"root": {"path": "/run/gcs/c/w/rootfs"}, "linux": {},
            "annotations": {"io.microsoft.container.gpu.capabilities": "utility,compute"},
            "windows": {"devices": [{"id": guid, "idType": "gpu"}]}});
        let e = assigned_devices(
            &mut spec.clone(),
            Path::new("/b"),
            &sys,
            &dev,
            "/nonexistent",
        )
        .await
        .unwrap_err();
        if !Path::new("/bin/generichook").exists() && !Path::new("/usr/bin/generichook").exists() {
            assert!(e.to_string().contains("generichook"), "{e}");
        }
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("generichook"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            bin.join("generichook"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assigned_devices(
            &mut spec,
            Path::new("/run/gcs/c/w"),
            &sys,
            &dev,
            bin.to_str().unwrap(),
        )
        .await
        .unwrap();
        let hook = &spec["hooks"]["createRuntime"][0];
        let args: Vec<&str> = hook["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(hook["path"], json!(bin.join("generichook")));
        assert_eq!(
            &args[1..],
            [
                "nvidia-container-cli",
                "--debug=/run/gcs/c/w/nvidia-container.log",
                "--no-pivot",
                "configure",
                "--ldconfig=@/sbin/ldconfig",
                "--utility",
                "--compute",
                "--device=7a3c:00:00.0",
                "--pid={{pid}}",
                "/run/gcs/c/w/rootfs"
            ]
        );
        assert!(hook["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "NVC_INSECURE_MODE=1"));
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "type": "c", "access": "rwm"}])
        );
    }

    #[test]
    fn raw_block_volumes() {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("sdq");
        mknod(
            &node,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            makedev(8, 160),
        )
        .unwrap();
        let link = dir.path().join("m3");
        std::os::unix::fs::symlink(&node, &link).unwrap();
        let mut spec = json!({"mounts": [
            {"destination": "blockdev:///dev/raw", "type": "bind", "source": link, "options": ["rbind"]},
            {"destination": "blockdev:///dev/raw-ro", "type": "bind", "source": link, "options": ["rbind", "ro"]},
            {"destination": "/data", "type": "bind", "source": "/x"}]});
        block_device_mounts(&mut spec).unwrap();
        assert_eq!(spec["mounts"][0]["destination"], "/dev/raw");
        assert_eq!(spec["mounts"][1]["destination"], "/dev/raw-ro");
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "type": "b", "major": 8, "minor": 160, "access": "rwm"},
                   {"allow": true, "type": "b", "major": 8, "minor": 160, "access": "r"}])
        );
        // Not a symlink to a block device; a source over the system.
        for source in [
            node.clone(),
            dir.path().to_path_buf(),
            PathBuf::from("/etc/x"),
        ] {
            let mut spec =
                json!({"mounts": [{"destination": "blockdev:///dev/raw", "source": source}]});
            assert!(block_device_mounts(&mut spec).is_err(), "{source:?}");
        }
        let plain = dir.path().join("plain");
        std::os::unix::fs::symlink(dir.path(), &plain).unwrap();
        let mut spec = json!({"mounts": [{"destination": "blockdev:///dev/raw", "source": plain}]});
        assert!(block_device_mounts(&mut spec).is_err());
    }

    #[test]
    fn host_devices_as_the_original_finds_them() {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let dev = tempfile::tempdir().unwrap();
        let node = |rel: &str, kind: SFlag, major: u64, minor: u64| {
            let p = dev.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            mknod(
                &p,
                kind,
                Mode::from_bits_truncate(0o660),
                makedev(major, minor),
            )
            .unwrap();
        };
        node("null", SFlag::S_IFCHR, 1, 3);
        node("sda", SFlag::S_IFBLK, 8, 0);
        node("dri/card0", SFlag::S_IFCHR, 226, 0);
        node("console", SFlag::S_IFCHR, 5, 1);
        node("pts/0", SFlag::S_IFCHR, 136, 0);
        node("shm/x", SFlag::S_IFCHR, 1, 5);
        node("zero-zero", SFlag::S_IFCHR, 0, 0);
        nix::unistd::mkfifo(&dev.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink("null", dev.path().join("link")).unwrap();
        let mut found: Vec<String> = host_devices(dev.path())
            .iter()
            .map(|d| {
                let p = d["path"].as_str().unwrap();
                p.strip_prefix(dev.path().to_str().unwrap())
                    .unwrap()
                    .to_string()
            })
            .collect();
        found.sort();
        assert_eq!(found, ["/dri/card0", "/null", "/sda"]);
        let mut spec = json!({"linux": {"devices": [{"path": dev.path().join("null"), "type": "c", "major": 9, "minor": 9}]}});
        add_host_devices(&mut spec, dev.path());
        let devices = spec["linux"]["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 3);
        assert!(devices.iter().any(|d| d["major"] == 1 && d["minor"] == 3));
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
