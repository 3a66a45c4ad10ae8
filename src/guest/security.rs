//! `SecurityPolicy` (spec §5.9, SP §2.1): installs the host's policy once, bound to the VM by
//! the SNP report's `HOST_DATA`, and lets it decide whether the agent logs.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{Guest, GuestError};
use crate::policy::{EnforcementPoint, Enforcer, PolicyError, References};

/// Settings of `SecurityPolicy` (hcsshim `ConfidentialOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConfidentialOptions {
    /// `""`, `rego` or `open_door`.
    pub enforcer_type: String,
    /// The policy's Rego text, base64 (standard alphabet, padded).
    pub encoded_security_policy: String,
    #[serde(rename = "EncodedUVMReference")]
    pub encoded_uvm_reference: String,
    #[serde(rename = "EncodedUVMHashEnvelopeReference")]
    pub encoded_uvm_hash_envelope_reference: String,
}

/// The enforcer a `SecurityPolicy` asks for (SP §2.3).
fn enforcer_for(kind: &str, text: &[u8], encoded: &str) -> Result<Arc<dyn Enforcer>, PolicyError> {
    let rego = |text: &[u8]| -> Result<Arc<dyn Enforcer>, PolicyError> {
        let text = std::str::from_utf8(text).map_err(|e| {
            PolicyError::Invalid(format!(
                "rego compilation failed: the policy is not UTF-8: {e}"
            ))
        })?;
        Ok(Arc::new(crate::policy::rego::RegoEnforcer::new(
            text, encoded,
        )?))
    };
    match (kind, text.is_empty()) {
        ("" | "open_door", true) => Ok(Arc::new(crate::policy::open_door::OpenDoor)),
        ("open_door", false) => Err(PolicyError::Invalid(
            "Invalid policy for open-door enforcer".into(),
        )),
        ("" | "rego", _) => rego(text),
        (other, _) => Err(PolicyError::Invalid(format!("unknown enforcer: {other:?}"))),
    }
}

impl Guest {
    /// `SecurityPolicy` Add: refuses a second one; checks the policy's digest against
    /// `HOST_DATA` on SEV-SNP hardware (devices under `dev`); builds the enforcer; asks it
    /// `runtime_logging`; installs it.
    pub async fn set_security_policy(
        &self,
        options: ConfidentialOptions,
        dev: &Path,
    ) -> Result<(), GuestError> {
        self.policy.check_not_installed()?;
        let text = base64::engine::general_purpose::STANDARD
            .decode(options.encoded_security_policy.as_bytes())
            .map_err(|e| {
                GuestError::PolicyRefused(PolicyError::Invalid(format!(
                    "failed to decode base64 security policy: {e}"
                )))
            })?;
        let digest: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(&text).into()
        };
        let dev = dev.to_path_buf();
        tokio::task::spawn_blocking(move || crate::policy::snp::check_host_data(&dev, &digest))
            .await
            .map_err(|e| GuestError::InvalidState(format!("HOST_DATA task failed: {e}")))??;
        let encoded = options.encoded_security_policy.clone();
        let kind = options.enforcer_type.clone();
        let enforcer = tokio::task::spawn_blocking(move || enforcer_for(&kind, &text, &encoded))
            .await
            .map_err(|e| GuestError::InvalidState(format!("policy task failed: {e}")))?
            .map_err(|source| GuestError::Policy {
                context: "error creating security policy enforcer".into(),
                source,
            })?;
        let logging = enforcer
            .decide(
                EnforcementPoint::RuntimeLogging,
                crate::policy::input::empty(),
            )
            .is_ok();
        self.policy.install(
            enforcer,
            References {
                uvm_reference: options.encoded_uvm_reference,
                uvm_hash_envelope_reference: options.encoded_uvm_hash_envelope_reference,
            },
        )?;
        if !logging {
            tracing::info!("the security policy refuses runtime logging: the log stream ends here");
        }
        crate::logging::set_enabled(logging);
        tracing::info!(
            confidential = self.policy.is_confidential(),
            "security policy installed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enforcer_follows_the_type_and_whether_a_policy_came() {
        assert!(enforcer_for("", b"", "").is_ok());
        assert!(enforcer_for("open_door", b"", "").is_ok());
        assert_eq!(
            enforcer_for("open_door", b"package policy", "x")
                .unwrap_err()
                .to_string(),
            "Invalid policy for open-door enforcer"
        );
        assert_eq!(
            enforcer_for("opa", b"", "").unwrap_err().to_string(),
            "unknown enforcer: \"opa\""
        );
        // `rego` with nothing: a module that cannot compile.
        assert!(enforcer_for("rego", b"", "")
            .unwrap_err()
            .to_string()
            .starts_with("rego compilation failed"));
    }
}
