//! The open door: every enforcement point allows, with the request's environment and
//! capabilities unchanged and stdio allowed (SP §8). The default stance, and what a
//! `SecurityPolicy` with an empty policy installs.

use serde_json::Value;

use super::{Decision, EnforcementPoint, Enforcer, PolicyError};

/// Allows everything; holds no policy (not confidential).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenDoor;

impl Enforcer for OpenDoor {
    fn decide(&self, _point: EnforcementPoint, _input: Value) -> Result<Decision, PolicyError> {
        Ok(Decision::allowed_with(&[(
            "allow_stdio_access",
            Value::Bool(true),
        )]))
    }
}
