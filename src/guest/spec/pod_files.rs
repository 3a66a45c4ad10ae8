//! The pod's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` (spec §6.3): their content,
//! where they are written and how they are bound into containers.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{mounts_destination, push_mount};
use crate::guest::GuestError;

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
    crate::safe_fs::mkdir_all(root, 0o755).map_err(|e| io("create", root.to_path_buf(), e))?;
    for (file, dst, content) in [
        ("hostname", "/etc/hostname", format!("{hostname}\n")),
        ("hosts", "/etc/hosts", hosts_content(hostname)),
        ("resolv.conf", "/etc/resolv.conf", resolv.to_string()),
    ] {
        if !mounts_destination(spec, dst) {
            let path = root.join(file);
            crate::safe_fs::write_file(&path, content.as_bytes(), 0o644)
                .map_err(|e| io("write", path, e))?;
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
#[cfg(test)]
mod tests {
    use super::*;

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
}
