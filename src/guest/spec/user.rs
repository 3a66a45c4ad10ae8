//! `process.user.username`: the image's `USER` string, which the host passes on because it
//! cannot resolve it (spec §6.3; hcsshim `ParseUserStr`/`SetUserStr`; OCI image spec
//! `config.User`). Every form Docker accepts — `name`, `uid`, `name:group`, `uid:gid`,
//! `uid:group`, `name:gid` — is resolved against the container's own `/etc/passwd` and
//! `/etc/group`, opened inside its root filesystem (symlinks cannot lead out of it).
//!
//! As the original: a numeric uid needs no entry (its gid is then 0 unless given), a numeric gid
//! needs no entry, an unknown name is an error naming it, ids must fit `u32`. As Docker (and
//! unlike the original, whose runc is handed an explicit `uid:gid`): when the string names no
//! group, the groups whose member list has the user become supplementary groups, before the
//! spec's own `additionalGids`.

use std::path::Path;

use serde_json::{json, Value};

use crate::guest::GuestError;
use crate::runtime::passwd::{self, GroupEntry, PasswdEntry};

/// What a `USER` string resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Groups listing the user as a member, when the string names no group.
    pub supplementary: Vec<u32>,
}

fn invalid(text: String) -> GuestError {
    GuestError::InvalidRequest(text)
}

/// Reads `rel` (e.g. `etc/passwd`) inside `rootfs`, bounded and never blocking on a FIFO;
/// `None` when it does not exist.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, GuestError> {
    let io = |source: std::io::Error| GuestError::Io {
        what: format!("read /{rel} of the container"),
        source,
    };
    let root = pathrs::Root::open(rootfs).map_err(|e| io(std::io::Error::other(e)))?;
    let flags = pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_NONBLOCK;
    let file = match root.open_subpath(rel, flags) {
        Ok(f) => f,
        Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => {
            return Ok(None)
        }
        Err(e) => return Err(io(std::io::Error::other(e))),
    };
    passwd::read_database(file).map(Some).map_err(io)
}

/// The one entry `pred` matches; more than one is an error, as in the original.
fn exactly_one<T>(
    entries: &[T],
    pred: impl Fn(&T) -> bool,
    what: impl Fn() -> String,
) -> Result<Option<&T>, GuestError> {
    let mut found = entries.iter().filter(|e| pred(e));
    let first = found.next();
    if first.is_some() && found.next().is_some() {
        return Err(invalid(format!("{} matches more than one entry", what())));
    }
    Ok(first)
}

fn id_of(field: Option<u32>, what: &str, name: &str, file: &str) -> Result<u32, GuestError> {
    field.ok_or_else(|| {
        invalid(format!(
            "the {file} entry of {name:?} has no valid {what} (a number 0..=4294967295)"
        ))
    })
}

/// Resolves a `USER` string against the databases' text (`None`: the file does not exist).
pub fn parse_user_str(
    user: &str,
    passwd_text: Option<&str>,
    group_text: Option<&str>,
) -> Result<Credentials, GuestError> {
    let parts: Vec<&str> = user.split(':').collect();
    if parts.len() > 2 {
        return Err(invalid(format!(
            "invalid user {user:?}: expected user, uid, user:group or uid:gid"
        )));
    }
    let users: Vec<PasswdEntry> = passwd_text.map(passwd::parse_passwd).unwrap_or_default();
    let groups: Vec<GroupEntry> = group_text.map(passwd::parse_group).unwrap_or_default();
    let out_of_range = |what: &str, v: i128| {
        invalid(format!(
            "{what} ({v}) in user {user:?} exceeds uint32 bounds"
        ))
    };

    let (uid, mut gid, matched) = match passwd::numeric_id(parts[0]) {
        Err(v) => return Err(out_of_range("UID", v)),
        Ok(Some(uid)) => {
            // A uid needs no entry; an ambiguous one counts as none, as in the original.
            match exactly_one(&users, |u| u.uid == Some(uid), String::new) {
                // The entry's gid counts only when the string names no group.
                Ok(Some(entry)) if parts.len() == 2 => (uid, 0, Some(entry.name.clone())),
                Ok(Some(entry)) => (
                    uid,
                    id_of(entry.gid, "gid", &entry.name, "/etc/passwd")?,
                    Some(entry.name.clone()),
                ),
                _ => (uid, 0, None),
            }
        }
        Ok(None) => {
            let name = parts[0];
            let entry = exactly_one(&users, |u| u.name == name, || format!("user {name:?}"))?
                .ok_or_else(|| {
                    invalid(match passwd_text {
                        Some(_) => {
                            format!("user {name:?} not found in the container's /etc/passwd")
                        }
                        None => format!(
                            "user {name:?} cannot be resolved: the container has no /etc/passwd"
                        ),
                    })
                })?;
            let gid = if parts.len() == 2 {
                0
            } else {
                id_of(entry.gid, "gid", name, "/etc/passwd")?
            };
            (
                id_of(entry.uid, "uid", name, "/etc/passwd")?,
                gid,
                Some(name.to_string()),
            )
        }
    };

    let mut supplementary = Vec::new();
    match parts.get(1) {
        None => {
            if let Some(name) = &matched {
                for g in groups
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                {
                    if let Some(id) = g.gid {
                        if !supplementary.contains(&id) {
                            supplementary.push(id);
                        }
                    }
                }
            }
        }
        Some(group) => {
            match passwd::numeric_id(group) {
                Err(v) => return Err(out_of_range("GID", v)),
                Ok(Some(id)) => gid = id,
                Ok(None) => {
                    let entry =
                    exactly_one(&groups, |g| g.name == *group, || format!("group {group:?}"))?
                        .ok_or_else(|| {
                            invalid(match group_text {
                                Some(_) => {
                                    format!("group {group:?} not found in the container's /etc/group")
                                }
                                None => format!(
                                    "group {group:?} cannot be resolved: the container has no /etc/group"
                                ),
                            })
                        })?;
                    gid = id_of(entry.gid, "gid", group, "/etc/group")?;
                }
            }
        }
    }
    Ok(Credentials {
        uid,
        gid,
        supplementary,
    })
}

/// Resolves `process.user.username` against the container root `rootfs` and clears it:
/// `uid`, `gid`, and `additionalGids` = membership groups then the spec's own. Returns whether
/// there was a name to resolve.
pub fn resolve_username(process: &mut Value, rootfs: &Path) -> Result<bool, GuestError> {
    let Some(name) = process
        .pointer("/user/username")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return Ok(false);
    };
    // Numeric ids need no database: one that cannot be read counts as absent, as in Go.
    let numeric = name
        .split(':')
        .all(|p| matches!(passwd::numeric_id(p), Ok(Some(_))));
    let read = |rel| read_in_root(rootfs, rel).or_else(|e| if numeric { Ok(None) } else { Err(e) });
    let passwd_text = read("etc/passwd")?;
    let group_text = read("etc/group")?;
    let creds = parse_user_str(&name, passwd_text.as_deref(), group_text.as_deref())?;
    let mut gids = creds.supplementary;
    if let Some(extra) = process
        .pointer("/user/additionalGids")
        .and_then(Value::as_array)
    {
        for g in extra.iter().filter_map(Value::as_u64) {
            if let Ok(g) = u32::try_from(g) {
                if !gids.contains(&g) {
                    gids.push(g);
                }
            }
        }
    }
    let user = &mut process["user"];
    user["uid"] = json!(creds.uid);
    user["gid"] = json!(creds.gid);
    if gids.is_empty() {
        if let Some(u) = user.as_object_mut() {
            u.remove("additionalGids");
        }
    } else {
        user["additionalGids"] = json!(gids);
    }
    if let Some(u) = user.as_object_mut() {
        u.remove("username");
    }
    Ok(true)
}

/// The process's user, groups and umask as the policy sees them (SP §9.1): `user` =
/// `{"id": "<uid>", "name": "<name or empty>"}`, `groups` = the primary group then
/// `additionalGids`, each `{"id", "name"}`, names from the container's `/etc/passwd` and
/// `/etc/group` (empty when absent), `umask` as four octal digits (default `0022`). Call it after
/// [`resolve_username`].
pub fn policy_identity(
    process: &Value,
    rootfs: &Path,
) -> Result<(Value, Value, String), GuestError> {
    let uid = process
        .pointer("/user/uid")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let gid = process
        .pointer("/user/gid")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let passwd = read_in_root(rootfs, "etc/passwd")
        .ok()
        .flatten()
        .map(|t| passwd::parse_passwd(&t))
        .unwrap_or_default();
    let groups = read_in_root(rootfs, "etc/group")
        .ok()
        .flatten()
        .map(|t| passwd::parse_group(&t))
        .unwrap_or_default();
    let user_name = passwd
        .iter()
        .find(|e| e.uid.map(u64::from) == Some(uid))
        .map(|e| e.name.clone())
        .unwrap_or_default();
    let group = |id: u64| {
        let name = groups
            .iter()
            .find(|e| e.gid.map(u64::from) == Some(id))
            .map(|e| e.name.clone())
            .unwrap_or_default();
        json!({"id": id.to_string(), "name": name})
    };
    let mut list = vec![group(gid)];
    if let Some(extra) = process
        .pointer("/user/additionalGids")
        .and_then(Value::as_array)
    {
        list.extend(extra.iter().filter_map(Value::as_u64).map(group));
    }
    let umask = process
        .pointer("/user/umask")
        .and_then(Value::as_u64)
        .map_or_else(|| "0022".to_string(), |m| format!("{m:04o}"));
    Ok((
        json!({"id": uid.to_string(), "name": user_name}),
        Value::Array(list),
        umask,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:alice\nalice:x:1000:\nnogroup:x:65534:\n";

    fn resolve(user: &str) -> Result<(u32, u32, Vec<u32>), String> {
        parse_user_str(user, Some(PASSWD), Some(GROUP))
            .map(|c| (c.uid, c.gid, c.supplementary))
            .map_err(|e| e.to_string())
    }

    /// The failing inputs of issue 11, and the other forms.
    #[test]
    fn every_docker_user_form() {
        assert_eq!(resolve("1000"), Ok((1000, 1000, vec![50])));
        assert_eq!(resolve("4242"), Ok((4242, 0, vec![])));
        assert_eq!(resolve("1000:50"), Ok((1000, 50, vec![])));
        assert_eq!(resolve("alice:staff"), Ok((1000, 50, vec![])));
        assert_eq!(resolve("4242:4343"), Ok((4242, 4343, vec![])));
        assert_eq!(resolve("nobody:nogroup"), Ok((65534, 65534, vec![])));
        assert_eq!(resolve("alice"), Ok((1000, 1000, vec![50])));
        assert_eq!(resolve("root"), Ok((0, 0, vec![])));
        assert_eq!(resolve("alice:4343"), Ok((1000, 4343, vec![])));
        assert_eq!(resolve("4242:staff"), Ok((4242, 50, vec![])));
        assert_eq!(resolve("65532"), Ok((65532, 0, vec![])));
    }

    #[test]
    fn bad_users_name_their_cause() {
        assert!(resolve("bob")
            .unwrap_err()
            .contains("user \"bob\" not found"));
        assert!(resolve("alice:wheel")
            .unwrap_err()
            .contains("group \"wheel\" not found"));
        assert!(resolve("a:b:c").unwrap_err().contains("invalid user"));
        assert!(resolve("4294967296")
            .unwrap_err()
            .contains("exceeds uint32"));
        assert!(resolve("-1").unwrap_err().contains("UID (-1)"));
        assert!(resolve("1:-5").unwrap_err().contains("GID (-5)"));
        let e = parse_user_str("alice", None, None).unwrap_err().to_string();
        assert!(e.contains("no /etc/passwd"), "{e}");
        assert_eq!(
            parse_user_str("1000:50", None, None).unwrap(),
            Credentials {
                uid: 1000,
                gid: 50,
                supplementary: vec![]
            }
        );
        let dup = "a:x:1:1::/:\na:x:2:2::/:\n";
        assert!(parse_user_str("a", Some(dup), None)
            .unwrap_err()
            .to_string()
            .contains("more than one"));
        let bad = "a:x:notanumber:1::/:\n";
        assert!(parse_user_str("a", Some(bad), None)
            .unwrap_err()
            .to_string()
            .contains("no valid uid"));
    }

    #[test]
    fn spec_is_rewritten_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        // An absolute symlink resolves inside the root, never to this machine's file.
        std::fs::write(dir.path().join("in-root-group"), GROUP).unwrap();
        std::os::unix::fs::symlink("/in-root-group", dir.path().join("etc/group")).unwrap();
        let mut p =
            json!({"user": {"uid": 0, "gid": 0, "username": "alice", "additionalGids": [7, 50]}});
        assert!(resolve_username(&mut p, dir.path()).unwrap());
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [50, 7]})
        );
        let mut p = json!({"user": {"uid": 0, "gid": 0}});
        assert!(!resolve_username(&mut p, dir.path()).unwrap());
    }
}
