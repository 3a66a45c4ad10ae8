//! Our framework (`src/policy/rego/framework.rego`) against the behaviours of the original's
//! (security-policy.md §6, §10, §11): `tests/policy/framework_cases.json` holds cases, each a
//! policy in the style of the policy tooling (`tests/policy/policies/`) and steps run in order
//! against one enforcer, whose metadata carries over from step to step. No root needed.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;

use common::policy::decision_of;

use gcs::policy::rego::{RegoEnforcer, Tuning};
use gcs::policy::{EnforcementPoint, Enforcer, PolicyError};
use serde_json::Value;

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/policy"))
}

/// Runs one step; a description of what differs from the expectation.
fn run_step(enforcer: &RegoEnforcer, step: &Value) -> Result<(), String> {
    let rule = step["rule"].as_str().unwrap();
    let point = EnforcementPoint::from_name(rule).ok_or_else(|| format!("unknown rule {rule}"))?;
    let expected = step["allowed"].as_bool().unwrap();
    match enforcer.decide(point, step["input"].clone()) {
        Ok(decision) => {
            if !expected {
                return Err(format!("allowed: {:?}", decision.result()));
            }
            if let Some(Value::Object(fields)) = step.get("result") {
                for (k, want) in fields {
                    let got = decision.result().get(k).unwrap_or(&Value::Null);
                    if !same(got, want) {
                        return Err(format!("result {k}: got {got}, want {want}"));
                    }
                }
            }
            Ok(())
        }
        Err(PolicyError::Denied(text)) => {
            if expected {
                return Err(format!("denied: {}", decision_of(&text)));
            }
            let d = decision_of(&text);
            let errors: Vec<String> = d["reason"]["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for want in step["errors_contain"].as_array().into_iter().flatten() {
                let want = want.as_str().unwrap();
                if !errors.iter().any(|e| e.contains(want)) {
                    return Err(format!("no error containing {want:?} in {d}"));
                }
            }
            if let Some(want) = step["policy_error_contains"].as_str() {
                if !d["policyError"].as_str().is_some_and(|e| e.contains(want)) {
                    return Err(format!("no policy error containing {want:?} in {d}"));
                }
            }
            Ok(())
        }
        Err(PolicyError::Invalid(text)) => {
            if let Some(want) = step["policy_error_contains"].as_str() {
                if text.contains(want) {
                    return Ok(());
                }
            }
            Err(format!("plain error: {text}"))
        }
    }
}

/// Equal as JSON, arrays compared as sets (Rego sets come back in no promised order).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().all(|e| y.iter().any(|f| same(e, f)))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn every_case_decides_as_the_original_would() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir().join("framework_cases.json")).unwrap())
            .unwrap();
    assert!(cases.len() > 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut steps = 0;
    // Every case in each way the engine can evaluate rules: chosen per policy (generated
    // policies: rules evaluated directly, declarations precomputed), and the general ways.
    let tunings = [
        Tuning::default(),
        Tuning {
            always_with_data: true,
            never_precompute: false,
        },
        Tuning {
            always_with_data: false,
            never_precompute: true,
        },
        Tuning {
            always_with_data: true,
            never_precompute: true,
        },
    ];
    for (case, tuning) in cases
        .iter()
        .flat_map(|c| tunings.iter().map(move |t| (c, *t)))
    {
        let name = case["name"].as_str().unwrap();
        let file = case["policy"].as_str().unwrap();
        let text = std::fs::read_to_string(dir().join("policies").join(file)).unwrap();
        let mut enforcer = match RegoEnforcer::tuned(&text, "x", tuning) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{name} ({tuning:?}): {file} does not load: {e}"));
                continue;
            }
        };
        enforcer.set_max_error_message(0);
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            steps += 1;
            if let Err(why) = run_step(&enforcer, step) {
                failures.push(format!(
                    "{name} ({tuning:?}) step {i} ({}): {why}",
                    step["rule"]
                ));
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed ({steps} steps run):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
