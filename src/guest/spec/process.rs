//! What no kernel or runtime would ever take in a process: strings beyond `execve(2)`'s limits
//! and capability names the runtime does not know. Refused when the request arrives, before the
//! agent copies them into the policy's input, the bundle and the runtime's request (a 10 MiB
//! capability name once made a Create hold six copies of itself).

use serde_json::Value;

use crate::guest::GuestError;

/// Longest single argument or environment string `execve(2)` accepts, its NUL included:
/// `MAX_ARG_STRLEN`, 32 pages (include/uapi/linux/binfmts.h).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Most bytes of argument and environment strings (NULs included) plus their pointers that
/// `execve(2)` accepts under any stack limit: three quarters of `_STK_LIM` (8 MiB), as
/// fs/exec.c `bprm_stack_limits` caps it.
pub const MAX_ARG_TOTAL: usize = 6 << 20;

/// How much of a refused value an error quotes, in bytes.
const QUOTED: usize = 64;

/// The start of `s` for an error message.
fn quoted(s: &str) -> String {
    if s.len() <= QUOTED {
        return format!("{s:?}");
    }
    let mut cut = QUOTED;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}…", &s[..cut])
}

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

    /// A `KEY=value` entry.
    pub fn env(field: &'a str, entry: &'a str) -> Self {
        Self {
            field,
            len: entry.len(),
            shown: entry.split('=').next().unwrap_or_default(),
        }
    }
}

/// Checks that a process's argument and environment strings are within `execve(2)`'s limits
/// ([`MAX_ARG_STRLEN`] each, [`MAX_ARG_TOTAL`] together); `what` names the request's object.
///
/// Errors: [`GuestError::InvalidRequest`] naming the field, the string's start (an
/// environment variable's name) and its size.
pub fn check_exec_sizes<'a>(
    what: &str,
    strings: impl IntoIterator<Item = ExecString<'a>>,
) -> Result<(), GuestError> {
    let mut total = 0usize;
    let mut pointers = 0usize;
    for s in strings {
        if s.len + 1 > MAX_ARG_STRLEN {
            return Err(GuestError::InvalidRequest(format!(
                "{what}.{}: {} is {} bytes, longer than execve(2) accepts ({MAX_ARG_STRLEN} with its NUL)",
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
            "{what}: arguments and environment take {total} bytes, more than execve(2) accepts ({MAX_ARG_TOTAL})"
        )));
    }
    Ok(())
}

/// The strings of the array `v` (other members are left to the runtime's own checks).
fn strings(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Checks an OCI `process` object (`what` names it in errors): its `args` and `env` against
/// [`check_exec_sizes`], and every name in `capabilities` against the runtime's list (the
/// OCI runtime spec's `CAP_*` names; the runtime refuses any other).
///
/// Errors: [`GuestError::InvalidRequest`] naming the field and the value's start.
pub fn check_process(what: &str, process: &Value) -> Result<(), GuestError> {
    check_exec_sizes(
        what,
        strings(process.get("args"))
            .map(|a| ExecString::arg("args", a))
            .chain(strings(process.get("env")).map(|e| ExecString::env("env", e))),
    )?;
    let Some(caps) = process.get("capabilities").and_then(Value::as_object) else {
        return Ok(());
    };
    for (set, names) in caps {
        for name in strings(Some(names)) {
            // The runtime's own parser, so that the lists agree.
            let known = name.len() <= QUOTED
                && serde_json::from_value::<libcontainer::oci_spec::runtime::Capability>(
                    Value::String(name.to_string()),
                )
                .is_ok();
            if !known {
                return Err(GuestError::InvalidRequest(format!(
                    "{what}.capabilities.{set}: unknown capability {}",
                    quoted(name)
                )));
            }
        }
    }
    Ok(())
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
                .chain(env.iter().map(|e| ExecString::env("env", e))),
        )
    }

    #[test]
    fn strings_at_the_kernel_limits_pass_and_beyond_them_are_refused() {
        let longest = "a".repeat(MAX_ARG_STRLEN - 1);
        sizes(&[longest.as_str()], &[]).unwrap();
        let longer = "a".repeat(MAX_ARG_STRLEN);
        let m = message(sizes(&["sh", longer.as_str()], &[]));
        assert!(m.starts_with("p.args: \"aaaa"), "{m}");
        assert!(m.contains("is 131072 bytes"), "{m}");
        assert!(m.len() < 300, "{m}");
        // An environment entry is named by its variable, never quoted with its value.
        let env = format!("SECRET={longer}");
        let m = message(sizes(&["sh"], &[env.as_str()]));
        assert!(m.starts_with("p.env: \"SECRET\" is 131079 bytes"), "{m}");
        assert!(!m.contains("aaa"), "{m}");
        // Many strings, each allowed, together beyond the total.
        let piece = "b".repeat(100_000);
        let many: Vec<&str> = std::iter::repeat_n(piece.as_str(), 62).collect();
        sizes(&many, &[]).unwrap();
        let many: Vec<&str> = std::iter::repeat_n(piece.as_str(), 63).collect();
        let m = message(sizes(&["sh"], &many));
        assert!(m.contains("more than execve(2) accepts (6291456)"), "{m}");
    }

    #[test]
    fn capability_names_are_the_runtimes() {
        let process = |name: &str| json!({"args": ["sh"], "capabilities": {"bounding": ["CAP_CHOWN"], "permitted": [name]}});
        check_process("OciSpecification.process", &process("CAP_SYS_ADMIN")).unwrap();
        check_process(
            "OciSpecification.process",
            &process("CAP_CHECKPOINT_RESTORE"),
        )
        .unwrap();
        let m = message(check_process(
            "OciSpecification.process",
            &process("CAP_NOPE"),
        ));
        assert_eq!(
            m,
            "OciSpecification.process.capabilities.permitted: unknown capability \"CAP_NOPE\""
        );
        let huge = "A".repeat(10 << 20);
        let m = message(check_process("P", &process(&huge)));
        assert!(m.ends_with("AAAA\"…"), "{m}");
        assert!(m.len() < 200, "{m}");
        // No capabilities, or null sets: the runtime's defaults, nothing to check.
        check_process("P", &json!({"args": ["sh"]})).unwrap();
        check_process(
            "P",
            &json!({"args": ["sh"], "capabilities": {"bounding": null}}),
        )
        .unwrap();
    }
}
