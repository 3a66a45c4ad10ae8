//! The text of a refusal (SP §3.5–3.6): `policyDecision< base64(json) >policyDecision`, the
//! JSON encoded as Go's `encoding/json` does (keys sorted, `<`, `>` and `&` escaped), with the
//! environment's values redacted and the default capability sets shown by name.

use base64::Engine as _;
use serde_json::{json, Value};

use super::{DEFAULT_PRIVILEGED_CAPABILITIES, DEFAULT_UNPRIVILEGED_CAPABILITIES};

/// The reason when the policy gives none (its `reason` is undefined or fails).
pub const NO_REASON: &str = "Security policy is either not valid or did not provide a reason for denial. Please check security policy or re-generate with tooling.";
/// The reason of a refusal caused by an error in the policy or its answer.
pub const INVALID: &str =
    "Security policy is not valid. Please check security policy or re-generate with tooling.";

/// A refusal because the policy said `allowed: false`; `input` carries `rule`.
pub fn with_reason(input: &Value, reason: Value, max: usize) -> String {
    let reason = match reason {
        Value::Object(mut r) => {
            if let Some(Value::Array(objects)) = r.get_mut("error_objects") {
                for o in objects.iter_mut() {
                    if let Some(caps) = o.get_mut("capabilities") {
                        named_caps(caps);
                    }
                }
            }
            Value::Object(r)
        }
        other => other,
    };
    encode(
        json!({"decision": "deny", "input": display(input), "reason": reason}),
        max,
    )
}

/// Longest `policyError` a decision carries: regorus's messages quote the offending source
/// line, which may be megabytes long.
const MAX_POLICY_ERROR: usize = 1024;

/// A refusal because the policy (or its answer) is in error; `input` has no `rule`.
pub fn with_error(input: &Value, error: &str, max: usize) -> String {
    let error = if error.len() > MAX_POLICY_ERROR {
        let mut cut = MAX_POLICY_ERROR;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}... ({} bytes)", &error[..cut], error.len())
    } else {
        error.to_string()
    };
    encode(
        json!({"decision": "deny", "input": display(input), "reason": INVALID, "policyError": error}),
        max,
    )
}

/// The input as a decision shows it: every `envList` value redacted, default capability sets
/// by name.
fn display(input: &Value) -> Value {
    let mut shown = input.clone();
    if let Some(Value::Array(env)) = shown.get_mut("envList") {
        for entry in env.iter_mut() {
            if let Some(text) = entry.as_str() {
                let name = text.split_once('=').map_or(text, |(k, _)| k);
                *entry = Value::String(format!("{name}=<<redacted>>"));
            }
        }
    }
    if let Some(caps) = shown.get_mut("capabilities") {
        named_caps(caps);
    }
    shown
}

/// Replaces a capabilities object equal to a default set by `[privileged]` or
/// `[unprivileged]` (order-sensitive, as the original compares).
fn named_caps(caps: &mut Value) {
    let is = |k: &str, list: &[&str]| {
        caps.get(k).and_then(Value::as_array).is_some_and(|a| {
            a.iter()
                .map(Value::as_str)
                .eq(list.iter().map(|s| Some(*s)))
        })
    };
    let privileged = ["bounding", "effective", "inheritable", "permitted"]
        .iter()
        .all(|k| is(k, DEFAULT_PRIVILEGED_CAPABILITIES))
        && is("ambient", &[]);
    let unprivileged = ["bounding", "effective", "permitted"]
        .iter()
        .all(|k| is(k, DEFAULT_UNPRIVILEGED_CAPABILITIES))
        && is("inheritable", &[])
        && is("ambient", &[]);
    if privileged {
        *caps = Value::String("[privileged]".into());
    } else if unprivileged {
        *caps = Value::String("[unprivileged]".into());
    }
}

fn text_of(decision: &Value) -> String {
    // Objects are sorted maps (serde_json without `preserve_order`), as Go sorts keys.
    let bytes = crate::protocol::json::to_go_json(decision).unwrap_or_default();
    format!(
        "policyDecision< {} >policyDecision",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Encodes the decision, dropping `reason.error_objects`, then `input`, then `reason` while the
/// text is longer than `max` (0: never), and listing what went in `truncated` (SP §3.6).
fn encode(mut decision: Value, max: usize) -> String {
    let mut text = text_of(&decision);
    if max == 0 || text.len() <= max {
        return text;
    }
    decision["truncated"] = json!([]);
    /// Drops one part of a decision; whether it was there.
    type Drop = fn(&mut Value) -> bool;
    let steps: [(&str, Drop); 3] = [
        ("reason.error_objects", |d| {
            d.get_mut("reason")
                .and_then(Value::as_object_mut)
                .is_some_and(|r| r.remove("error_objects").is_some())
        }),
        ("input", |d| {
            d.as_object_mut()
                .is_some_and(|o| o.remove("input").is_some())
        }),
        ("reason", |d| {
            d.as_object_mut()
                .is_some_and(|o| o.remove("reason").is_some())
        }),
    ];
    for (name, drop) in steps {
        if drop(&mut decision) {
            if let Some(list) = decision["truncated"].as_array_mut() {
                list.push(Value::String(name.into()));
            }
            text = text_of(&decision);
            if text.len() <= max {
                break;
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> (String, Value) {
        let inner = text
            .strip_prefix("policyDecision< ")
            .and_then(|t| t.strip_suffix(" >policyDecision"))
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .unwrap();
        (
            String::from_utf8(bytes.clone()).unwrap(),
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[test]
    fn env_values_are_redacted_and_escaped_as_go_does() {
        let input =
            json!({"rule": "create_container", "envList": ["PATH=/bin", "SECRET=x=y", "BARE"]});
        let (raw, d) = decoded(&with_reason(&input, json!({"errors": ["e"]}), 0));
        assert_eq!(
            d["input"]["envList"],
            json!([
                "PATH=<<redacted>>",
                "SECRET=<<redacted>>",
                "BARE=<<redacted>>"
            ])
        );
        assert!(
            raw.contains(r"PATH=\u003c\u003credacted\u003e\u003e"),
            "{raw}"
        );
        // Keys sorted, no spaces.
        assert!(
            raw.starts_with(r#"{"decision":"deny","input":{"envList""#),
            "{raw}"
        );
    }

    #[test]
    fn default_capability_sets_are_shown_by_name() {
        let unpriv = json!({
            "bounding": DEFAULT_UNPRIVILEGED_CAPABILITIES, "effective": DEFAULT_UNPRIVILEGED_CAPABILITIES,
            "permitted": DEFAULT_UNPRIVILEGED_CAPABILITIES, "inheritable": [], "ambient": [],
        });
        let priv_ = json!({
            "bounding": DEFAULT_PRIVILEGED_CAPABILITIES, "effective": DEFAULT_PRIVILEGED_CAPABILITIES,
            "permitted": DEFAULT_PRIVILEGED_CAPABILITIES, "inheritable": DEFAULT_PRIVILEGED_CAPABILITIES,
            "ambient": [],
        });
        let input = json!({"capabilities": unpriv});
        let reason = json!({"errors": [], "error_objects": [{"capabilities": priv_}]});
        let (_, d) = decoded(&with_reason(&input, reason, 0));
        assert_eq!(d["input"]["capabilities"], "[unprivileged]");
        assert_eq!(
            d["reason"]["error_objects"][0]["capabilities"],
            "[privileged]"
        );
        let other = json!({"capabilities": {"bounding": ["CAP_KILL"], "effective": [], "permitted": [], "inheritable": [], "ambient": []}});
        let (_, d) = decoded(&with_error(&other, "boom", 0));
        assert_eq!(d["input"]["capabilities"]["bounding"], json!(["CAP_KILL"]));
        assert_eq!(d["policyError"], "boom");
        assert_eq!(d["reason"], INVALID);
    }

    #[test]
    fn long_decisions_drop_error_objects_then_input_then_reason() {
        let big = "x".repeat(4000);
        let input = json!({"argList": [big.clone()]});
        let reason = json!({"errors": ["short"], "error_objects": [big.clone()]});
        let text = with_reason(&input, reason.clone(), 3072);
        let (_, d) = decoded(&text);
        assert_eq!(d["truncated"], json!(["reason.error_objects", "input"]));
        assert_eq!(d["reason"]["errors"], json!(["short"]));
        assert!(text.len() <= 3072);
        let reason = json!({"errors": [big]});
        let (_, d) = decoded(&with_reason(&json!({}), reason, 3072));
        assert_eq!(d["truncated"], json!(["input", "reason"]));
        assert!(d.get("reason").is_none());
    }
}
