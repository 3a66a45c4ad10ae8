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
#[cfg(test)]
mod tests {
    use super::*;

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
