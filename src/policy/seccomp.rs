//! `seccompProfileSHA256` (SP §9.2): the lowercase hex SHA-256 of the spec's `linux.seccomp` as
//! Go's `encoding/json` re-encodes the runtime-spec structure, not of the bytes the host sent:
//! fields in the structure's order, empty optional fields left out, unknown fields dropped, `<`,
//! `>` and `&` escaped. The policy tooling computes the same digest from the same structure.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// runtime-spec `LinuxSeccomp`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    architectures: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    flags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    listener_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    listener_metadata: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    syscalls: Vec<Syscall>,
}

/// runtime-spec `LinuxSyscall`: `names` is always written (`null` when absent).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<Arg>,
}

/// runtime-spec `LinuxSeccompArg`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    value: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    value_two: u64,
    #[serde(default)]
    op: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The digest of `seccomp` (`linux.seccomp`); `""` when the spec has none. A profile that does
/// not decode as the runtime-spec structure is an error (the original cannot decode such a
/// spec either).
pub fn profile_sha256(seccomp: Option<&Value>) -> Result<String, String> {
    use sha2::Digest;
    let Some(seccomp) = seccomp.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let profile: Profile = serde_json::from_value(seccomp.clone())
        .map_err(|e| format!("invalid linux.seccomp: {e}"))?;
    let bytes = crate::protocol::json::to_go_json(&profile)
        .map_err(|e| format!("encode linux.seccomp: {e}"))?;
    Ok(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encoded(v: Value) -> String {
        let p: Profile = serde_json::from_value(v).unwrap();
        crate::protocol::json::to_go_string(&p).unwrap()
    }

    #[test]
    fn reencoded_in_the_structures_order_without_empty_fields() {
        let host = json!({
            "syscalls": [{"action": "SCMP_ACT_ALLOW", "names": ["read", "write"],
                          "args": [{"op": "SCMP_CMP_EQ", "value": 1, "index": 0, "valueTwo": 0}]},
                         {"action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
            "architectures": [],
            "unknownField": true,
            "defaultAction": "SCMP_ACT_ERRNO",
        });
        assert_eq!(
            encoded(host),
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},{"names":null,"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#
        );
    }

    #[test]
    fn no_profile_is_the_empty_digest_and_a_profile_is_hex_sha256() {
        assert_eq!(profile_sha256(None).unwrap(), "");
        assert_eq!(profile_sha256(Some(&Value::Null)).unwrap(), "");
        // sha256 of {"defaultAction":"SCMP_ACT_ALLOW"}, computed with sha256sum.
        assert_eq!(
            profile_sha256(Some(&json!({"defaultAction": "SCMP_ACT_ALLOW"}))).unwrap(),
            SHA_OF_ALLOW
        );
        assert!(profile_sha256(Some(&json!({"defaultAction": 3}))).is_err());
    }

    const SHA_OF_ALLOW: &str = "1e91071efd3cec07b4e3e6cb9e0405055162ec9674f62869fe7f1564d5dce24f";
}
