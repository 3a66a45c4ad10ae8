//! Mount sources and binds of a container spec (spec §6.4): the special `sandbox://`,
//! `sandbox-tmp://`, `hugepages://` and `uvm://` sources, the pod's log directory, a read-only
//! cgroupfs, and the bind sources the storage layer must keep alive.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{annotation, push_mount, TEE_LOG_DIR_MOUNT};
use crate::guest::GuestError;

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

/// Pins every mount source below `under` (the sandbox's directories, which the pod's
/// workloads can write) to an agent-owned bind mount `pin_dir/m<N>`, and points the spec
/// there (`safe_fs::pin`): what the runtime later mounts is what was checked, whatever a
/// neighbour does to the shared directory meanwhile. Only the first `count` mounts (those the
/// host asked for) are considered.
pub fn pin_sources(
    spec: &mut Value,
    under: &Path,
    pin_dir: &Path,
    count: usize,
) -> Result<(), GuestError> {
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    let mut n = 0;
    for m in mounts.iter_mut().take(count) {
        let Some(src) = m.get("source").and_then(Value::as_str).map(PathBuf::from) else {
            continue;
        };
        if !src.starts_with(under) || src == under {
            continue;
        }
        let target = pin_dir.join(format!("m{n}"));
        n += 1;
        crate::safe_fs::pin(&src, &target).map_err(|e| GuestError::Io {
            what: format!("pin mount source {}", src.display()),
            source: e,
        })?;
        m["source"] = Value::String(target.to_string_lossy().into_owned());
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

/// `io.microsoft.container.lcow.tee-log-path` = `<rel>`: the file under the pod's log
/// directory that the init's stdout and stderr are also appended to (spec §6.3 step 7). It
/// must stay inside that directory (`log path … is not within sandbox's log dir`).
pub fn tee_log_path(spec: &Value, sandbox_root: &Path) -> Result<Option<PathBuf>, GuestError> {
    use std::path::Component;
    let Some(rel) = annotation(spec, super::TEE_LOG_PATH).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let logs = sandbox_root.join("logs");
    let mut path = logs.clone();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => path.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !path.pop() || !path.starts_with(&logs) {
                    break;
                }
            }
            Component::Prefix(_) => {}
        }
    }
    if !path.starts_with(&logs) || path == logs {
        return Err(GuestError::InvalidRequest(format!(
            "{}: log path {rel:?} is not within sandbox's log dir",
            super::TEE_LOG_PATH
        )));
    }
    Ok(Some(path))
}

/// `io.microsoft.container.lcow.tee-log-dir-mount`: bind the pod's log directory into the
/// container at the given destination; a relative one (the annotation's documented example)
/// is taken from the container's root, as the runtime takes relative destinations.
pub fn bind_log_dir(spec: &mut Value, sandbox_root: &Path) {
    if let Some(dst) = annotation(spec, TEE_LOG_DIR_MOUNT)
        .filter(|d| {
            !d.is_empty()
                && !Path::new(d)
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
        })
        .map(|d| format!("/{}", d.trim_start_matches('/')))
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
    // No component may be a symlink: a workload could plant one in a shared sandbox mount to
    // make another workload's source the UVM's root.
    if create {
        crate::safe_fs::mkdir_all(&path, 0o777).map_err(|e| {
            GuestError::InvalidRequest(format!(
                "mount source {}: {e} (symlinks are not followed)",
                path.display()
            ))
        })?;
    }
    Ok(path)
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
/// Makes the init's `process.cwd` exist before the create (§6.5), as runc's init does inside
/// the container: in the rootfs, or — when a bind mount covers it — in that bind's source,
/// resolved inside its root either way (symlinks in the image cannot lead out). Other errors
/// are ignored as the original ignores them; a path through a file is refused in runc's words
/// (`mkdir /x/y: not a directory`). A cwd under another kind of mount (a tmpfs) is left to the
/// runtime, which does not create it.
pub fn prepare_cwd(spec: &Value, rootfs: &Path) -> Result<(), GuestError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(cwd) = spec
        .pointer("/process/cwd")
        .and_then(Value::as_str)
        .filter(|c| c.starts_with('/') && *c != "/")
    else {
        return Ok(());
    };
    let cwd_path = Path::new(cwd);
    // The deepest mount whose destination holds the cwd.
    let covering = spec
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let dst = m.get("destination").and_then(Value::as_str)?;
            let rest = cwd_path.strip_prefix(dst).ok()?;
            Some((dst, m, rest.to_path_buf()))
        })
        .max_by_key(|(dst, _, _)| dst.len());
    // `base` is where `rel` starts inside the container.
    let (root, base, rel) = match covering {
        None => (rootfs.to_path_buf(), PathBuf::from("/"), PathBuf::from(cwd)),
        Some((dst, m, rest)) => {
            let is_bind = m.get("type").and_then(Value::as_str) == Some("bind")
                || m.get("options").and_then(Value::as_array).is_some_and(|o| {
                    o.iter()
                        .any(|o| matches!(o.as_str(), Some("bind" | "rbind")))
                });
            match m.get("source").and_then(Value::as_str) {
                Some(src) if is_bind && src.starts_with('/') => {
                    (PathBuf::from(src), PathBuf::from(dst), rest)
                }
                _ => return Ok(()),
            }
        }
    };
    if rel.as_os_str().is_empty() {
        return Ok(());
    }
    let Ok(root) = pathrs::Root::open(&root) else {
        return Ok(());
    };
    if root
        .mkdir_all(&rel, &std::fs::Permissions::from_mode(0o755))
        .is_ok()
    {
        return Ok(());
    }
    // As Go's MkdirAll: the first component that exists and is not a directory is named.
    let mut prefix = PathBuf::new();
    for part in rel.components() {
        prefix.push(part);
        let Ok(handle) = root.resolve(&prefix) else {
            break;
        };
        let flags = pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_DIRECTORY;
        if handle.reopen(flags).is_err() {
            return Err(GuestError::InvalidRequest(format!(
                "unable to start container process: mkdir {}: not a directory",
                base.join(prefix.strip_prefix("/").unwrap_or(&prefix))
                    .display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_log_paths_stay_in_the_log_dir() {
        let root = Path::new("/run/gcs/c/pod");
        let spec = |v: &str| json!({"annotations": {crate::guest::spec::TEE_LOG_PATH: v}});
        assert_eq!(
            tee_log_path(&spec("c1/out.log"), root).unwrap(),
            Some(root.join("logs/c1/out.log"))
        );
        assert_eq!(
            tee_log_path(&spec("/abs.log"), root).unwrap(),
            Some(root.join("logs/abs.log"))
        );
        assert_eq!(
            tee_log_path(&spec("a/../b.log"), root).unwrap(),
            Some(root.join("logs/b.log"))
        );
        for bad in ["../x.log", "a/../../x", "..", "."] {
            assert!(tee_log_path(&spec(bad), root).is_err(), "{bad}");
        }
        assert_eq!(tee_log_path(&json!({}), root).unwrap(), None);
        let mut s = json!({"annotations": {TEE_LOG_DIR_MOUNT: "logs"}});
        bind_log_dir(&mut s, root);
        assert_eq!(s["mounts"][0]["destination"], "/logs");
        let mut s = json!({"annotations": {TEE_LOG_DIR_MOUNT: "../x"}});
        bind_log_dir(&mut s, root);
        assert!(s.get("mounts").is_none());
    }

    #[test]
    fn cwd_made_inside_the_root_or_the_covering_bind() {
        let root = tempfile::tempdir().unwrap();
        let vol = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("evil")).unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("file"), "").unwrap();
        let spec = |cwd: &str| {
            json!({"process": {"cwd": cwd}, "mounts": [
                {"destination": "/data", "type": "bind", "source": vol.path(), "options": ["rbind"]},
                {"destination": "/tmpfs", "type": "tmpfs", "source": "tmpfs"}]})
        };
        prepare_cwd(&spec("/evil/x-gcs-test"), root.path()).unwrap();
        assert!(
            root.path().join("etc/x-gcs-test").is_dir(),
            "made inside the root"
        );
        assert!(!Path::new("/etc/x-gcs-test").exists());
        prepare_cwd(&spec("/data/a/b"), root.path()).unwrap();
        assert!(vol.path().join("a/b").is_dir());
        assert!(!root.path().join("data").exists());
        prepare_cwd(&spec("/tmpfs/t"), root.path()).unwrap();
        assert!(!root.path().join("tmpfs").exists());
        let e = prepare_cwd(&spec("/file/sub"), root.path()).unwrap_err();
        assert!(
            e.to_string().contains("mkdir /file: not a directory"),
            "{e}"
        );
        let e = prepare_cwd(&spec("/file"), root.path()).unwrap_err();
        assert!(
            e.to_string().contains("mkdir /file: not a directory"),
            "{e}"
        );
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
}
