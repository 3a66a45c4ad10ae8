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
/// `None` when it does not exist. The root is on a disk: read beside the agent's one async
/// worker (`crate::worker`).
fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, GuestError> {
    crate::worker::block(|| read_in_root_here(rootfs, rel))
}

fn read_in_root_here(rootfs: &Path, rel: &str) -> Result<Option<String>, GuestError> {
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

/// At most this much of a bad id's JSON is shown in its error.
const SHOWN_VALUE: usize = 64;

/// A JSON value as an error shows it, cut at [`SHOWN_VALUE`] bytes.
fn shown_value(v: &Value) -> String {
    let mut text = v.to_string();
    if text.len() > SHOWN_VALUE {
        let mut cut = SHOWN_VALUE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// `v` as a user or group id: an integer from 0 to 4294967295 (OCI's `uint32`), else an
/// error naming `what` (e.g. `process.user.uid`) and the value.
fn id_value(v: &Value, what: &str) -> Result<u32, GuestError> {
    v.as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| {
            invalid(format!(
                "{what} must be an integer from 0 to 4294967295, got {}",
                shown_value(v)
            ))
        })
}

/// A process's `user.uid` or `user.gid` (`field`): absent or `null` is 0 (the OCI default, as
/// Go decodes a missing field).
///
/// # Errors
/// `InvalidRequest` when present and not an integer from 0 to 4294967295 (a negative, a
/// fraction, a string, a number past `u32`): such an id is never read as root.
pub fn user_id(process: &Value, field: &str) -> Result<u32, GuestError> {
    match process.get("user").and_then(|u| u.get(field)) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => id_value(v, &format!("process.user.{field}")),
    }
}

/// A process's `user.additionalGids`, in order: absent or `null` is none.
///
/// # Errors
/// `InvalidRequest` when it is not an array, or a member is not an integer from 0 to
/// 4294967295 (never dropped silently).
pub fn additional_gids(process: &Value) -> Result<Vec<u32>, GuestError> {
    match process.get("user").and_then(|u| u.get("additionalGids")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| id_value(g, "process.user.additionalGids members"))
            .collect(),
        Some(other) => Err(invalid(format!(
            "process.user.additionalGids must be an array of group ids, got {}",
            shown_value(other)
        ))),
    }
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
    for g in additional_gids(process)? {
        if !gids.contains(&g) {
            gids.push(g);
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
///
/// # Errors
/// A `uid`, `gid` or `additionalGids` member that is not an integer from 0 to 4294967295
/// ([`user_id`], [`additional_gids`]).
pub fn policy_identity(
    process: &Value,
    rootfs: &Path,
) -> Result<(Value, Value, String), GuestError> {
    let uid = user_id(process, "uid")?;
    let gid = user_id(process, "gid")?;
    let extra = additional_gids(process)?;
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
        .find(|e| e.uid == Some(uid))
        .map(|e| e.name.clone())
        .unwrap_or_default();
    let group = |id: u32| {
        let name = groups
            .iter()
            .find(|e| e.gid == Some(id))
            .map(|e| e.name.clone())
            .unwrap_or_default();
        json!({"id": id.to_string(), "name": name})
    };
    let mut list = vec![group(gid)];
    list.extend(extra.into_iter().map(group));
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
        // A group id that is not one is an error, not dropped.
        let mut p = json!({"user": {"username": "alice", "additionalGids": [7, "50"]}});
        assert_eq!(
            resolve_username(&mut p, dir.path()).unwrap_err().to_string(),
            "process.user.additionalGids members must be an integer from 0 to 4294967295, got \"50\""
        );
    }

    #[test]
    fn policy_ids_are_read_exactly_and_never_default_to_root_when_malformed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        let identity = |p: Value| {
            policy_identity(&p, dir.path()).map_err(|e| {
                assert!(matches!(e, GuestError::InvalidRequest(_)), "{e:?}");
                e.to_string()
            })
        };
        assert_eq!(
            identity(
                json!({"user": {"uid": 1000, "gid": 1000, "additionalGids": [50, 4294967295_u64]}})
            ),
            Ok((
                json!({"id": "1000", "name": "alice"}),
                json!([{"id": "1000", "name": "alice"}, {"id": "50", "name": "staff"},
                       {"id": "4294967295", "name": ""}]),
                "0022".to_string()
            ))
        );
        // Absent fields are OCI's zero values.
        assert_eq!(
            identity(json!({"args": ["sh"]})),
            Ok((
                json!({"id": "0", "name": "root"}),
                json!([{"id": "0", "name": "root"}]),
                "0022".to_string()
            ))
        );
        let range = "must be an integer from 0 to 4294967295, got";
        for (user, text) in [
            (json!({"uid": -1}), format!("process.user.uid {range} -1")),
            (
                json!({"uid": 4294967296_u64}),
                format!("process.user.uid {range} 4294967296"),
            ),
            (
                json!({"uid": "1000"}),
                format!("process.user.uid {range} \"1000\""),
            ),
            (
                json!({"uid": 1000.5}),
                format!("process.user.uid {range} 1000.5"),
            ),
            (
                json!({"uid": 1, "gid": true}),
                format!("process.user.gid {range} true"),
            ),
            (json!({"gid": [0]}), format!("process.user.gid {range} [0]")),
            (
                json!({"additionalGids": [50, -3]}),
                format!("process.user.additionalGids members {range} -3"),
            ),
            (
                json!({"additionalGids": [1.5]}),
                format!("process.user.additionalGids members {range} 1.5"),
            ),
            (
                json!({"additionalGids": "50"}),
                "process.user.additionalGids must be an array of group ids, got \"50\"".into(),
            ),
            (
                json!({"uid": "x".repeat(100)}),
                format!("process.user.uid {range} \"{}...", "x".repeat(63)),
            ),
        ] {
            assert_eq!(identity(json!({"user": user})), Err(text));
        }
    }
}
