//! Security policies for tests and benchmarks (issue 16): installing one, test policies,
//! generated-style policies, dm-verity layers, and reading a refusal's decision.

use serde_json::{json, Value};

use super::{modify, Agent};
use gcs::protocol::NULL_CONTAINER_ID;

/// `SecurityPolicy` Add of the Rego `text` (`kind`: EnforcerType).
pub async fn install_as(agent: &Agent, kind: &str, text: &str) -> Result<(), String> {
    use base64::Engine as _;
    let settings = json!({
        "EnforcerType": kind,
        "EncodedSecurityPolicy": base64::engine::general_purpose::STANDARD.encode(text),
        "EncodedUVMReference": "cmVm",
    });
    agent
        .client
        .modify_settings(NULL_CONTAINER_ID, modify("SecurityPolicy", "Add", settings))
        .await
        .map_err(|e| e.to_string())
}

pub async fn install(agent: &Agent, text: &str) -> Result<(), String> {
    install_as(agent, "", text).await
}

/// A test policy file of `tests/policy/policies`.
pub fn policy_file(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/policy/policies")
            .join(name),
    )
    .unwrap()
}

/// The allow-all policy with some rules replaced (`name`, Rego body after `:=` or a whole
/// rule set), and a reason naming the rule that refused.
pub fn allow_all_but(replaced: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for line in policy_file("allow_all.rego").lines() {
        let name = line.split(" := ").next().unwrap_or_default();
        if replaced.iter().any(|(n, _)| *n == name) {
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    for (_, rules) in replaced {
        text.push_str(rules);
        text.push('\n');
    }
    text.push_str("reason := {\"errors\": [sprintf(\"refused %s\", [input.rule])], \"error_objects\": null}\n");
    text
}

/// A response error as the client shows it: a plain failure (`0x80004005`) with `message`.
pub fn failure(message: &str) -> String {
    format!("guest RPC failure: {message} (0x80004005)")
}

/// Asserts that `err` (as the client shows it) is exactly a plain failure whose message is
/// `context` followed by the policy's decision text (`context` is empty for a bare decision,
/// else e.g. `overlay creation denied by policy: `), and that the decision is `decision`.
pub fn assert_refusal(err: &str, context: &str, decision: &Value) {
    let text = err
        .strip_prefix("guest RPC failure: ")
        .and_then(|t| t.strip_suffix(" (0x80004005)"))
        .unwrap_or_else(|| panic!("not a plain failure: {err}"));
    let inner = text
        .strip_prefix(context)
        .and_then(|t| t.strip_prefix("policyDecision< "))
        .and_then(|t| t.strip_suffix(" >policyDecision"))
        .unwrap_or_else(|| panic!("not {context:?} and a decision: {err}"));
    assert!(
        inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        "{err}"
    );
    assert_eq!(&decision_of(err), decision, "{err}");
}

/// A refusal's decision: `rule` asked with `input` (without its `rule` key), refused with the
/// reason of [`allow_all_but`] (or `errors` from a framework).
pub fn denied(rule: &str, input: Value, errors: &[&str]) -> Value {
    let mut input = input;
    input["rule"] = json!(rule);
    json!({"decision": "deny", "input": input,
           "reason": {"errors": errors, "error_objects": null}})
}

/// The decision inside a refusal's text.
pub fn decision_of(err: &str) -> Value {
    use base64::Engine as _;
    let inner = err
        .split("policyDecision< ")
        .nth(1)
        .and_then(|t| t.split(" >policyDecision").next())
        .unwrap_or_else(|| panic!("no decision in {err}"));
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(inner)
            .unwrap(),
    )
    .unwrap()
}

/// What `veritysetup format` made of a layer image.
#[derive(Debug, Clone)]
pub struct Verity {
    /// The filesystem's size, where the verity superblock starts.
    pub ext4_bytes: u64,
    pub root_hash: String,
    pub salt: String,
}

/// Appends a dm-verity superblock and hash tree after the ext4 filesystem in `image` (the
/// layout hcsshim's tools write), with `veritysetup` on the host side.
pub fn verity_append(image: &std::path::Path) -> Verity {
    let ext4_bytes = std::fs::metadata(image).unwrap().len();
    let out = std::process::Command::new("veritysetup")
        .arg("format")
        .arg(format!("--hash-offset={ext4_bytes}"))
        .arg(format!("--data-blocks={}", ext4_bytes / 4096))
        .arg(image)
        .arg(image)
        .output()
        .expect("veritysetup (cryptsetup-bin; make qemu-deps installs it)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    Verity {
        ext4_bytes,
        root_hash: field("Root hash:"),
        salt: field("Salt:"),
    }
}

/// [`verity_append`]'s root hash: what a policy names the layer by.
pub fn verity_format(image: &std::path::Path) -> String {
    verity_append(image).root_hash
}

/// A policy in the style the policy tooling generates: one container per JSON line, every
/// enforcement point delegated to the framework.
pub fn generated_policy(containers: &[Value], flags: &[(&str, bool)]) -> String {
    let mut text = String::from(
        "package policy\n\napi_version := \"0.12.0\"\nframework_version := \"0.5.0\"\n\ncontainers := [\n",
    );
    for c in containers {
        text.push_str(&format!("  {c},\n"));
    }
    text.push_str("]\n\nexternal_processes := []\n\n");
    for (flag, on) in flags {
        text.push_str(&format!("{flag} := {on}\n"));
    }
    for point in gcs::policy::EnforcementPoint::ALL {
        text.push_str(&format!("{0} := data.framework.{0}\n", point.name()));
    }
    text.push_str("reason := data.framework.reason\n");
    text
}
