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

/// Settings of `SecurityPolicyFragment` (SP §2.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SecurityPolicyFragment {
    /// A COSE_Sign1 envelope, base64 (standard alphabet, padded).
    pub fragment: String,
    /// Empty means [`FRAGMENT_MEDIA_TYPE`].
    pub media_type: String,
}

/// A signed Rego policy fragment.
pub const FRAGMENT_MEDIA_TYPE: &str = "application/cose-x509+rego";
/// A signed transparency trust list (SP §7.9).
pub const TRUST_LIST_MEDIA_TYPE: &str = "application/vnd.transparency-trust-list.v1+cose";
/// Signed TCB and platform reference information, kept for the security context (SP §7.1).
pub const TCB_REFERENCE_MEDIA_TYPE: &str = "application/vnd.tcb-reference-info.v1+cose";
pub const PLATFORM_REFERENCE_MEDIA_TYPE: &str = "application/vnd.platform-reference-info.v1+cose";

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

impl Guest {
    /// `SecurityPolicyFragment` Add (SP §7.2): checks the media type, the COSE_Sign1 envelope,
    /// its certificate chain and signature, and the issuer's did:x509 against the chain, then
    /// offers the fragment to the policy, which decides whether it counts. Reference information
    /// is kept once its signature checks. A transparency trust list needs an SVN, and the policy
    /// decides which of its ledgers' keys are kept; a fragment's receipts are validated against
    /// those keys by the enforcer (SP §7.6 step 2, §7.8).
    pub async fn inject_fragment(
        &self,
        settings: SecurityPolicyFragment,
    ) -> Result<(), GuestError> {
        let plain = |text: String| GuestError::PolicyRefused(PolicyError::Invalid(text));
        let media_type = if settings.media_type.is_empty() {
            FRAGMENT_MEDIA_TYPE
        } else {
            settings.media_type.as_str()
        };
        if ![
            FRAGMENT_MEDIA_TYPE,
            TRUST_LIST_MEDIA_TYPE,
            TCB_REFERENCE_MEDIA_TYPE,
            PLATFORM_REFERENCE_MEDIA_TYPE,
        ]
        .contains(&media_type)
        {
            return Err(plain(format!(
                "cannot inject fragment blob with unsupported media type {media_type:?}"
            )));
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(settings.fragment.as_bytes())
            .map_err(|e| plain(format!("failed to decode fragment: {e}")))?;
        // Signatures, and a fresh engine per parameter combination (tens of milliseconds):
        // off the runtime's workers.
        let policy = Arc::clone(&self.policy);
        let media_type = media_type.to_string();
        tokio::task::spawn_blocking(move || load_signed_blob(&policy, &media_type, &blob))
            .await
            .map_err(|e| GuestError::InvalidState(format!("fragment task failed: {e}")))?
    }
}

/// SP §7.2 steps 4–11 for a decoded blob of an accepted media type: reference information is
/// kept once its signature checks; a trust list or a fragment is verified, then offered to the
/// enforcer.
fn load_signed_blob(
    policy: &crate::policy::Policy,
    media_type: &str,
    blob: &[u8],
) -> Result<(), GuestError> {
    let plain = |text: String| GuestError::PolicyRefused(PolicyError::Invalid(text));
    let cose_error = |e: crate::policy::fragment::FragmentError| plain(e.pipeline_message());
    if media_type == TCB_REFERENCE_MEDIA_TYPE || media_type == PLATFORM_REFERENCE_MEDIA_TYPE {
        crate::policy::fragment::verify_signature_only(blob).map_err(cose_error)?;
        policy.set_reference_info(media_type == TCB_REFERENCE_MEDIA_TYPE, blob.to_vec());
        return Ok(());
    }
    let verified = crate::policy::fragment::verify(blob).map_err(cose_error)?;
    if media_type == TRUST_LIST_MEDIA_TYPE {
        let svn = verified.header_svn.ok_or_else(|| {
            plain("transparency trust list is missing an SVN in its CWT claims".into())
        })?;
        let ledgers = crate::policy::fragment::parse_trust_list(&verified.payload)
            .map_err(|e| plain(format!("error loading transparency trust list: {e}")))?;
        policy
            .enforcer()
            .load_trust_list(&verified.issuer, &verified.feed, svn, &ledgers)
            .map_err(|source| GuestError::Policy {
                context: "error loading transparency trust list".into(),
                source,
            })?;
        tracing::info!(issuer = %verified.issuer, subject = %verified.feed, "transparency trust list loaded");
        return Ok(());
    }
    let text = String::from_utf8(verified.payload).map_err(|e| {
        plain(format!(
            "error loading security policy fragment: not UTF-8: {e}"
        ))
    })?;
    policy
        .enforcer()
        .load_fragment(
            &verified.issuer,
            &verified.feed,
            verified.header_svn,
            &text,
            &verified.receipts,
        )
        .map_err(|source| GuestError::Policy {
            context: "error loading security policy fragment".into(),
            source,
        })?;
    tracing::info!(issuer = %verified.issuer, feed = %verified.feed, "security policy fragment loaded");
    Ok(())
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

    const LAYER: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn guest(dir: &std::path::Path) -> Arc<Guest> {
        Guest::new(
            crate::transport::Dialer::new(Some(dir.join("vm.vsock"))),
            crate::reaper::Reaper::new(),
            dir.to_path_buf(),
        )
        .0
    }

    fn encode(text: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    /// A generated-style policy with no containers of its own, trusting `issuer`'s `feed` from
    /// SVN 2 for containers.
    fn policy_trusting(issuer: &str, feed: &str) -> String {
        let mut text = format!(
            "package policy\napi_version := \"0.12.0\"\nframework_version := \"0.5.0\"\n\
             fragments := [{{\"issuer\": \"{issuer}\", \"feed\": \"{feed}\", \"minimum_svn\": \"2\", \"includes\": [\"containers\"]}}]\n\
             containers := []\n"
        );
        for p in EnforcementPoint::ALL {
            text.push_str(&format!("{0} := data.framework.{0}\n", p.name()));
        }
        text.push_str("reason := data.framework.reason\n");
        text
    }

    fn fragment_rego(svn: &str) -> Vec<u8> {
        format!(
            "package infra\nsvn := \"{svn}\"\nframework_version := \"0.5.0\"\n\
             containers := [{{\"command\": [\"/app\"], \"layers\": [\"{LAYER}\"], \"env_rules\": [], \"mounts\": [], \"exec_processes\": [], \"signals\": [], \"working_dir\": \"/\", \"allow_elevated\": false, \"allow_stdio_access\": true}}]\n"
        )
        .into_bytes()
    }

    fn layer_allowed(guest: &Guest) -> bool {
        guest
            .policy()
            .decide(
                EnforcementPoint::MountDevice,
                crate::policy::input::mount_device(
                    "/run/mounts/scsi/m1",
                    LAYER,
                    crate::policy::input::SCSI_MOUNT_PATH_REGEX,
                ),
            )
            .is_ok()
    }

    async fn inject(guest: &Guest, envelope: &[u8], media_type: &str) -> Result<(), String> {
        guest
            .inject_fragment(SecurityPolicyFragment {
                fragment: encode(envelope),
                media_type: media_type.into(),
            })
            .await
            .map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                text
            })
    }

    /// The exact text of a fragment or trust list refusal: `context` and the policy's decision,
    /// whose reason must be the framework's `errors` (SP §10.1); returns the decision.
    fn assert_refused(err: &str, context: &str, rule: &str, errors: &[&str]) -> serde_json::Value {
        let inner = err
            .strip_prefix(context)
            .and_then(|t| t.strip_prefix(": policyDecision< "))
            .and_then(|t| t.strip_suffix(" >policyDecision"))
            .unwrap_or_else(|| panic!("not {context:?} and a decision: {err}"));
        let decision: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(inner)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(decision["decision"], "deny", "{decision}");
        assert_eq!(decision["input"]["rule"], rule, "{decision}");
        assert_eq!(
            decision["reason"]["errors"],
            serde_json::json!(errors),
            "{decision}"
        );
        decision
    }

    /// Installs the Rego `policy` (no SNP devices under `dir`).
    async fn install(guest: &Guest, policy: &str, dir: &Path) {
        guest
            .set_security_policy(
                ConfidentialOptions {
                    encoded_security_policy: encode(policy.as_bytes()),
                    ..Default::default()
                },
                dir,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn signed_fragments_count_once_verified_and_accepted_by_the_policy() {
        use crate::policy::fragment::tests::signed;
        let dir = tempfile::tempdir().unwrap();
        let guest = guest(dir.path());
        let feed = "contoso.azurecr.io/infra";
        let (good, issuer) = signed(10, feed, Some(3), &fragment_rego("3"));
        install(&guest, &policy_trusting(&issuer, feed), dir.path()).await;
        assert!(!layer_allowed(&guest), "not before its fragment");

        // A flipped signature byte: refused before the policy is asked.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let err = inject(&guest, &bad, "").await.unwrap_err();
        assert!(
            err.contains("InjectFragment failed COSE validation: verification error"),
            "{err}"
        );
        // Another signer (another root, so another issuer), the same feed: the policy refuses.
        let (stranger, other_issuer) = signed(40, feed, Some(3), &fragment_rego("3"));
        assert_ne!(other_issuer, issuer);
        let err = inject(&guest, &stranger, "").await.unwrap_err();
        let d = assert_refused(
            &err,
            "error loading security policy fragment",
            "load_fragment",
            &["invalid fragment issuer"],
        );
        assert_eq!(
            (&d["input"]["issuer"], &d["input"]["feed"]),
            (&serde_json::json!(other_issuer), &serde_json::json!(feed))
        );
        // The right signer and another feed.
        let (elsewhere, _) = signed(10, "contoso.azurecr.io/other", Some(3), &fragment_rego("3"));
        let err = inject(&guest, &elsewhere, "").await.unwrap_err();
        assert_refused(
            &err,
            "error loading security policy fragment",
            "load_fragment",
            &["invalid fragment feed"],
        );
        // The right signer below the policy's minimum SVN: with the SVN in the envelope's
        // header, refused before the fragment is parsed, where the framework (as the
        // original's) names no reason; with the SVN only in the fragment, once it is parsed.
        let (old, _) = signed(10, feed, Some(1), &fragment_rego("1"));
        let err = inject(&guest, &old, "application/cose-x509+rego")
            .await
            .unwrap_err();
        let d = assert_refused(
            &err,
            "error loading security policy fragment",
            "load_fragment",
            &[],
        );
        assert_eq!(d["input"]["fragment_loaded"], false);
        let (old, _) = signed(10, feed, None, &fragment_rego("1"));
        let err = inject(&guest, &old, "").await.unwrap_err();
        let d = assert_refused(
            &err,
            "error loading security policy fragment",
            "load_fragment",
            &["fragment svn is below the specified minimum"],
        );
        assert_eq!(d["input"]["fragment_loaded"], true);
        // Header and fragment disagree.
        let (mismatched, _) = signed(10, feed, Some(3), &fragment_rego("4"));
        let err = inject(&guest, &mismatched, "").await.unwrap_err();
        assert_refused(
            &err,
            "error loading security policy fragment",
            "load_fragment",
            &["svn in header 3 does not match svn in fragment rego 4"],
        );
        assert!(!layer_allowed(&guest));

        inject(&guest, &good, "").await.unwrap();
        assert!(layer_allowed(&guest), "the fragment's container counts");

        let err = inject(&guest, &good, "text/plain").await.unwrap_err();
        assert!(
            err.contains("cannot inject fragment blob with unsupported media type \"text/plain\""),
            "{err}"
        );
        let err = inject(&guest, b"not cose", "").await.unwrap_err();
        assert!(
            err.contains("InjectFragment failed COSE validation"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_doors_take_fragments_as_the_original_does() {
        use crate::policy::fragment::tests::signed;
        let dir = tempfile::tempdir().unwrap();
        let open = guest(dir.path());
        let (good, _) = signed(10, "feed", Some(3), &fragment_rego("3"));
        inject(&open, &good, "").await.unwrap();
        let mut closed = guest(dir.path());
        closed.set_initial_enforcer(Arc::new(crate::policy::closed_door::ClosedDoor));
        let err = inject(&closed, &good, "").await.unwrap_err();
        assert_eq!(
            err,
            "error loading security policy fragment: loading fragments is denied by policy"
        );
        // The envelope is checked whatever the door.
        let err = inject(&open, b"\xd2\x84", "").await.unwrap_err();
        assert!(
            err.contains("InjectFragment failed COSE validation"),
            "{err}"
        );
    }

    /// A trust list payload: `ledgers`, each with one P-256 key `kid`.
    fn trust_list(ledgers: &[(&str, &[u8])]) -> Vec<u8> {
        use coset::cbor::value::Value;
        use coset::{iana, AsCborValue, CoseKeyBuilder};
        let map = Value::Map(
            ledgers
                .iter()
                .map(|(name, kid)| {
                    let key = CoseKeyBuilder::new_ec2_pub_key(
                        iana::EllipticCurve::P_256,
                        vec![1; 32],
                        vec![2; 32],
                    )
                    .key_id(kid.to_vec())
                    .build()
                    .to_cbor_value()
                    .unwrap();
                    (
                        Value::Text((*name).into()),
                        Value::Map(vec![(Value::from(1), Value::Array(vec![key]))]),
                    )
                })
                .collect(),
        );
        let mut out = Vec::new();
        coset::cbor::ser::into_writer(&map, &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn a_fragments_receipt_counts_once_a_trust_list_gave_its_ledgers_key() {
        use crate::policy::fragment::receipt_tests::{
            statement_hash, trust_list, with_receipts, Ledger,
        };
        use crate::policy::fragment::tests::signed;
        const TTL: &str = "application/vnd.transparency-trust-list.v1+cose";
        let dir = tempfile::tempdir().unwrap();
        let guest = guest(dir.path());
        let feed = "contoso.azurecr.io/infra";
        let ledger = Ledger::p256("ledger.example", b"kid-1", 70);
        let (bare, issuer) = signed(10, feed, Some(3), &fragment_rego("3"));
        let fragment = with_receipts(&bare, &[ledger.receipt_for(statement_hash(&bare))]);
        let (ttl, ttl_issuer) = signed(50, "ttl-subject", Some(4), &trust_list(&[&ledger]));
        let policy = policy_trusting(&issuer, feed).replace(
            "\"includes\": [\"containers\"]",
            "\"includes\": [\"containers\"], \"required_receipts\": [\"TTL:ttl-subject\"]",
        ) + &format!(
            "transparency_trust_lists := [{{\"issuer\": \"{ttl_issuer}\", \"subject\": \"ttl-subject\", \"minimum_svn\": 3, \"allowed_ledgers\": [\"*\"]}}]\n"
        );
        assert!(policy.contains("required_receipts"));
        install(&guest, &policy, dir.path()).await;
        // Before the trust list, the receipt proves nothing.
        let err = inject(&guest, &fragment, "").await.unwrap_err();
        assert_refused(
            &err,
            "error loading security policy fragment",
            "load_fragment",
            &["missing receipt from TTL:ttl-subject"],
        );
        assert!(!layer_allowed(&guest));
        inject(&guest, &ttl, TTL).await.unwrap();
        // Without its receipt the fragment is still refused.
        let err = inject(&guest, &bare, "").await.unwrap_err();
        assert_refused(
            &err,
            "error loading security policy fragment",
            "load_fragment",
            &["missing receipt from TTL:ttl-subject"],
        );
        inject(&guest, &fragment, "").await.unwrap();
        assert!(layer_allowed(&guest), "the fragment's container counts");
    }

    #[tokio::test]
    async fn trust_lists_keep_the_ledgers_the_policy_allows() {
        use crate::policy::fragment::tests::signed;
        const TTL: &str = "application/vnd.transparency-trust-list.v1+cose";
        let dir = tempfile::tempdir().unwrap();
        let guest = guest(dir.path());
        let payload = trust_list(&[("ledger.example", b"k1"), ("other.ledger", b"k2")]);
        let (good, issuer) = signed(50, "ttl-subject", Some(4), &payload);
        let mut policy = policy_trusting("did:x509:none", "none");
        policy.push_str(&format!(
            "transparency_trust_lists := [{{\"issuer\": \"{issuer}\", \"subject\": \"ttl-subject\", \"minimum_svn\": 3, \"allowed_ledgers\": [\"ledger.example\"]}}]\n"
        ));
        install(&guest, &policy, dir.path()).await;
        // Without an SVN, or below the policy's minimum, or for no allowed ledger: refused.
        let (no_svn, _) = signed(50, "ttl-subject", None, &payload);
        let err = inject(&guest, &no_svn, TTL).await.unwrap_err();
        assert!(
            err.contains("transparency trust list is missing an SVN in its CWT claims"),
            "{err}"
        );
        let (old, _) = signed(50, "ttl-subject", Some(2), &payload);
        let err = inject(&guest, &old, TTL).await.unwrap_err();
        assert_refused(
            &err,
            "error loading transparency trust list",
            "load_transparency_trust_list",
            &["no TTL candidate matches the provided TTL's issuer, subject and svn"],
        );
        let (elsewhere, _) = signed(
            50,
            "ttl-subject",
            Some(4),
            &trust_list(&[("other.ledger", b"k2")]),
        );
        let err = inject(&guest, &elsewhere, TTL).await.unwrap_err();
        assert_refused(
            &err,
            "error loading transparency trust list",
            "load_transparency_trust_list",
            &["The provided TTL does not contain any ledgers it is allowed to load"],
        );
        inject(&guest, &good, TTL).await.unwrap();
        let mut closed = self::guest(dir.path());
        closed.set_initial_enforcer(Arc::new(crate::policy::closed_door::ClosedDoor));
        let err = inject(&closed, &good, TTL).await.unwrap_err();
        assert_eq!(
            err,
            "error loading transparency trust list: loading transparency trust lists is denied by policy"
        );
    }
}
