//! What the kernel and runc make of a process that the runtime would otherwise treat
//! differently:
//! - capability names runc does not know, which it ignores and libcontainer would refuse (or
//!   grant, for spellings runc ignores): dropped before the runtime sees them;
//! - argument and environment strings beyond `execve(2)`'s limits: a container's process fails
//!   at its exec as under runc ("argument list too long"), and a UVM process is refused when
//!   asked for, before anything copies its strings (the original's spawn fails there too).

use serde_json::Value;

use super::quote_start as quoted;
use crate::guest::GuestError;

/// Longest single argument or environment string `execve(2)` accepts, its NUL included:
/// `MAX_ARG_STRLEN`, 32 pages (include/uapi/linux/binfmts.h): 128 KiB with 4 KiB pages.
pub fn max_arg_strlen() -> usize {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096);
    32 * page
}

/// An upper bound of the bytes of argument and environment strings (NULs included) plus their
/// pointers that `execve(2)` accepts: three quarters of `_STK_LIM` (8 MiB), the cap of fs/exec.c
/// `bprm_stack_limits`, reached with an `RLIMIT_STACK` of 24 MiB or more (the default 8 MiB
/// allows 2 MiB). The program's path, which the kernel counts too, is left out.
pub const MAX_ARG_TOTAL: usize = 6 << 20;

/// The capability sets of an OCI `process.capabilities` (runtime-spec config.md).
const CAPABILITY_SETS: [&str; 5] = [
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

/// How many distinct dropped names a warning quotes.
const MAX_NAMED: usize = 16;

/// Longest capability name looked up (the longest kernel name, `CAP_CHECKPOINT_RESTORE`, has 22
/// bytes; the runtime also takes lower case and repeated `CAP_` prefixes).
const MAX_CAPABILITY_NAME: usize = 64;

/// One string of a process's arguments or environment, as [`check_exec_sizes`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct ExecString<'a> {
    /// The request's field (`args`, `env`, `CommandArgs`, `Environment`).
    pub field: &'a str,
    /// The string's length in bytes, without its NUL.
    pub len: usize,
    /// What an error may quote: an argument's start, an environment variable's name only (its
    /// value may be a secret).
    pub shown: &'a str,
}

impl<'a> ExecString<'a> {
    pub fn arg(field: &'a str, arg: &'a str) -> Self {
        Self {
            field,
            len: arg.len(),
            shown: arg,
        }
    }
}

/// Checks that a process's argument and environment strings are within `execve(2)`'s limits
/// ([`max_arg_strlen`] each, [`MAX_ARG_TOTAL`] together); `what` names the request's object.
///
/// Errors: [`GuestError::InvalidRequest`] naming the field, the string's start (an
/// environment variable's name) and its size.
pub fn check_exec_sizes<'a>(
    what: &str,
    strings: impl IntoIterator<Item = ExecString<'a>>,
) -> Result<(), GuestError> {
    let max = max_arg_strlen();
    let mut total = 0usize;
    let mut pointers = 0usize;
    for s in strings {
        if s.len + 1 > max {
            return Err(GuestError::InvalidRequest(format!(
                "{what}.{}: {} is {} bytes: argument list too long (execve(2) takes {max} with its NUL)",
                s.field,
                quoted(s.shown),
                s.len
            )));
        }
        total = total.saturating_add(s.len + 1);
        pointers += 1;
    }
    let total = total.saturating_add(std::mem::size_of::<usize>() * pointers.max(1));
    if total > MAX_ARG_TOTAL {
        return Err(GuestError::InvalidRequest(format!(
            "{what}: arguments and environment take {total} bytes: argument list too long (execve(2) takes at most {MAX_ARG_TOTAL})"
        )));
    }
    Ok(())
}

/// Whether runc knows `name`: one of the kernel's capabilities spelled as the OCI runtime spec
/// spells it (`CAP_KILL`; upper case, one `CAP_` prefix). oci-spec's parser, which libcontainer
/// uses, takes other spellings too (`cap_kill`, `KILL`); runc ignores those.
fn runc_knows(name: &str) -> bool {
    use libcontainer::oci_spec::runtime::Capability;
    name.len() <= MAX_CAPABILITY_NAME
        && serde_json::from_value::<Capability>(Value::String(name.to_string()))
            .ok()
            .and_then(|c| serde_json::to_value(c).ok())
            .is_some_and(|canonical| canonical == name)
}

/// Removes from the five sets of `process.capabilities` every name runc does not know, which
/// runc ignores with a warning ("ignoring unknown or unavailable capabilities",
/// libcontainer/capabilities in runc): libcontainer would refuse the whole container for a
/// name it cannot parse, and grant the capability for a spelling runc ignores. Members that are
/// not strings, and other keys, are left to the runtime. Returns how many names were removed
/// and the first [`MAX_NAMED`] distinct ones, each cut to its first 64 bytes, for the caller's
/// warning (a 16 MiB request can hold millions of names).
pub fn drop_unknown_capabilities(
    process: &mut Value,
) -> (usize, std::collections::BTreeSet<String>) {
    let mut dropped = (0, std::collections::BTreeSet::new());
    let Some(caps) = process
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    else {
        return dropped;
    };
    for set in CAPABILITY_SETS {
        if let Some(names) = caps.get_mut(set).and_then(Value::as_array_mut) {
            names.retain(|n| match n.as_str() {
                Some(name) if !runc_knows(name) => {
                    dropped.0 += 1;
                    if dropped.1.len() < MAX_NAMED {
                        dropped.1.insert(quoted(name));
                    }
                    false
                }
                _ => true,
            });
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(r: Result<(), GuestError>) -> String {
        match r {
            Err(GuestError::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn sizes<'a>(args: &'a [&'a str], env: &'a [&'a str]) -> Result<(), GuestError> {
        check_exec_sizes(
            "p",
            args.iter()
                .map(|a| ExecString::arg("args", a))
                .chain(env.iter().map(|e| ExecString {
                    field: "env",
                    len: e.len(),
                    shown: e.split('=').next().unwrap_or_default(),
                })),
        )
    }

    #[test]
    fn strings_at_the_kernel_limits_pass_and_beyond_them_are_refused() {
        let max = max_arg_strlen();
        let longest = "a".repeat(max - 1);
        sizes(&[longest.as_str()], &[]).unwrap();
        let longer = "a".repeat(max);
        let m = message(sizes(&["sh", longer.as_str()], &[]));
        assert!(m.starts_with("p.args: \"aaaa"), "{m}");
        assert!(m.contains(&format!("is {max} bytes")), "{m}");
        assert!(m.len() < 300, "{m}");
        // An environment entry is named by its variable, never quoted with its value.
        let env = format!("SECRET={longer}");
        let m = message(sizes(&["sh"], &[env.as_str()]));
        let want = format!("p.env: \"SECRET\" is {} bytes", max + 7);
        assert!(m.starts_with(&want), "{m}");
        assert!(!m.contains("aaa"), "{m}");
        // Many strings, each allowed, together beyond the total.
        let piece = "b".repeat(100_000);
        let many: Vec<&str> = std::iter::repeat_n(piece.as_str(), 62).collect();
        sizes(&many, &[]).unwrap();
        let many: Vec<&str> = std::iter::repeat_n(piece.as_str(), 63).collect();
        let m = message(sizes(&["sh"], &many));
        assert!(
            m.contains("argument list too long (execve(2) takes at most 6291456)"),
            "{m}"
        );
        // The total exactly: 48 strings of `len` bytes and their NULs and pointers.
        let len = MAX_ARG_TOTAL / 48 - 1 - 8;
        let piece = "c".repeat(len);
        let at: Vec<&str> = std::iter::repeat_n(piece.as_str(), 48).collect();
        assert_eq!(48 * (len + 1 + 8), MAX_ARG_TOTAL);
        sizes(&at, &[]).unwrap();
        let one_more = "c".repeat(len + 1);
        let mut over = at.clone();
        over[0] = &one_more;
        let m = message(sizes(&over, &[]));
        assert!(m.contains("take 6291457 bytes"), "{m}");
        // An environment entry without `=` counts whole, and is quoted whole (it is its name).
        let bare = "D".repeat(max);
        let m = message(sizes(&["sh"], &[bare.as_str()]));
        assert!(m.starts_with("p.env: \"DDDD"), "{m}");
    }

    #[test]
    fn capability_names_runc_does_not_know_are_dropped() {
        let huge = "A".repeat(10 << 20);
        let mut process = json!({"args": ["sh"], "capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE", "CAP_NOPE"],
            "effective": ["cap_kill", "KILL", 1, null],
            "permitted": [huge],
            "ambient": "not a list",
            "x-extra": ["CAP_NOPE"],
        }});
        let (count, named) = drop_unknown_capabilities(&mut process);
        assert_eq!(count, 4);
        let named: Vec<&String> = named.iter().collect();
        assert!(named[0].starts_with("\"AAAA") && named[0].ends_with('…'));
        assert!(named[0].len() < 80);
        assert_eq!(named[1..], ["\"CAP_NOPE\"", "\"KILL\"", "\"cap_kill\""]);
        assert_eq!(
            process["capabilities"],
            json!({"bounding": ["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"], "effective": [1, null],
                   "permitted": [], "ambient": "not a list", "x-extra": ["CAP_NOPE"]})
        );
        // Many names: all dropped, a few named.
        let many: Vec<String> = (0..1000).map(|i| format!("CAP_X{i}")).collect();
        let mut process = json!({"capabilities": {"bounding": many, "ambient": ["CAP_X1"]}});
        let (count, named) = drop_unknown_capabilities(&mut process);
        assert_eq!((count, named.len()), (1001, MAX_NAMED));
        assert_eq!(process["capabilities"]["bounding"], json!([]));
        let mut none = json!({"args": ["sh"]});
        assert_eq!(drop_unknown_capabilities(&mut none).0, 0);
        assert_eq!(none, json!({"args": ["sh"]}));
    }
}
