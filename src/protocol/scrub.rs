//! What the agent may log of a request (`-scrub-logs`, on by default): environment variables
//! carry secrets, so their values are replaced, wherever they sit — `ProcessParameters`'
//! `Environment` map, an OCI process's `env` list — including inside the string-embedded JSON
//! documents of the protocol (`ContainerConfig`, `ProcessParameters`).

use serde_json::Value;

pub const SCRUBBED: &str = "<scrubbed>";

/// The payload as text for the log, with environment values scrubbed.
pub fn scrub_payload(payload: &[u8]) -> String {
    match serde_json::from_slice::<Value>(payload) {
        Ok(mut v) => {
            scrub(&mut v);
            v.to_string()
        }
        // Not JSON: nothing can be told apart, so nothing of it is logged.
        Err(_) => format!("<{} bytes of non-JSON payload>", payload.len()),
    }
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), &mut *value) {
                    ("Environment", Value::Object(env)) => {
                        for value in env.values_mut() {
                            *value = Value::from(SCRUBBED);
                        }
                    }
                    ("env", Value::Array(list)) => {
                        for item in list.iter_mut() {
                            let name = item
                                .as_str()
                                .map(|s| s.split('=').next().unwrap_or("").to_string())
                                .unwrap_or_default();
                            *item = Value::from(format!("{name}={SCRUBBED}"));
                        }
                    }
                    _ => scrub(value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        // A string holding a JSON document is scrubbed inside.
        Value::String(s) if s.starts_with('{') => {
            if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                scrub(&mut inner);
                *s = inner.to_string();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_are_scrubbed_everywhere() {
        let params = serde_json::json!({"CommandLine": "sh", "Environment": {"PASSWORD": "hunter2", "PATH": "/bin"},
            "OciProcess": {"args": ["sh"], "env": ["TOKEN=abc123", "NOEQ"]}});
        let create = serde_json::json!({"ContainerConfig": serde_json::json!({"OciSpecification":
            {"process": {"env": ["API_KEY=s3cr3t"]}}}).to_string()});
        let exec = serde_json::json!({"ContainerId": "c", "Settings": {"ProcessParameters": params.to_string()}});
        for payload in [exec, create] {
            let text = scrub_payload(payload.to_string().as_bytes());
            for secret in ["hunter2", "abc123", "s3cr3t"] {
                assert!(!text.contains(secret), "{text}");
            }
            assert!(text.contains(SCRUBBED), "{text}");
        }
        let text = scrub_payload(
            br#"{"Settings":{"ProcessParameters":"{\"Environment\":{\"A\":\"x1y2\"}}"}}"#,
        );
        assert!(text.contains("A") && !text.contains("x1y2"), "{text}");
        assert_eq!(scrub_payload(b"\x00\x01"), "<2 bytes of non-JSON payload>");
    }
}
