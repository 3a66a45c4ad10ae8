//! Signed security-policy fragments: the signature side (SP §7.1–7.5).
//!
//! A fragment arrives as a tagged COSE_Sign1 envelope whose protected header carries the signer's
//! certificate chain (`x5chain`, leaf first) and names an issuer (a `did:x509` identifier) and a
//! feed. This module checks everything that needs no policy:
//! - [`unpack`] (§7.3): the envelope's shape, the certificate chain (last certificate the only
//!   root, time fixed at the leaf's `NotAfter`, any EKU), the signature with the leaf's key, the
//!   issuer/feed/content type and the parsed receipts. It is all that the TCB and platform
//!   reference media types get ([`verify_signature_only`]).
//! - [`verify`] (§7.2 steps 4, 6–9): [`unpack`], then issuer and feed present, the issuer resolved
//!   against the chain ([`resolve_did_x509`], §7.4), and the header SVN converted.
//! - [`validate_receipt`] (§7.8): a receipt's CCF inclusion proofs and its signature with one of
//!   a ledger's keys (which ledger's keys, the enforcer decides: §7.6 step 2).
//!
//! Everything here is pure: bytes in, a verdict out. The caller (the `SecurityPolicyFragment`
//! handler) decodes the base64, picks the media type, wraps the errors and asks the enforcer.

mod chain;
mod cose;
mod did_x509;
mod receipt;
mod ttl;

pub use cose::{unpack, Envelope, Receipt};
pub use did_x509::resolve_did_x509;
pub use receipt::{
    kid_hex, validate_receipt, ReceiptError, MAX_EVIDENCE_LEN, MAX_PATH_LEN, MAX_PROOFS,
};
pub use ttl::{parse_trust_list, TrustKey};

use coset::cbor::value::Value;

/// Most certificates an `x5chain` may hold (SP §7.3).
pub const MAX_CHAIN_LEN: usize = 100;

/// Why a fragment envelope was refused. The texts are the Go guest's (SP §7.2–7.4), without the
/// handler's outer wrapping: an error for which [`FragmentError::is_envelope_error`] holds is
/// reported by the guest as `InjectFragment failed COSE validation: <text>`
/// ([`FragmentError::pipeline_message`] gives exactly that); the others stand as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// Not a CBOR tag 18 over a 4-element array (first bytes `D2 84`).
    #[error("cbor: invalid COSE_Sign1_Tagged object")]
    NotTagged,
    /// The envelope (or a header in it) is not well-formed COSE/CBOR.
    #[error("cbor: {0}")]
    Cbor(String),
    /// The COSE_Sign1 has an empty signature.
    #[error("empty signature")]
    EmptySignature,
    /// No `alg` (label 1) in the protected header.
    #[error("algorithm missing")]
    AlgorithmMissing,
    /// `alg` is not an integer.
    #[error("algorithm wrong type")]
    AlgorithmWrongType,
    /// No `x5chain` (label 33) in the protected header.
    #[error("x5Chain missing")]
    X5ChainMissing,
    /// `x5chain` is neither a bstr nor a non-empty array of bstr.
    #[error("x5Chain wrong type")]
    X5ChainWrongType,
    /// A certificate in the chain is not X.509 DER.
    #[error("x509: malformed certificate: {0}")]
    MalformedCertificate(String),
    /// More than [`MAX_CHAIN_LEN`] certificates.
    #[error("unreasonable number of certs ({0}) in COSE_Sign1 document")]
    UnreasonableChainLength(usize),
    /// The chain does not verify (SP §7.3); the text says which link and why.
    #[error("certificate chain verification failed - {0}")]
    ChainVerification(String),
    /// The algorithm cannot be used with the leaf's key (unsupported algorithm, wrong key type,
    /// RSA key under 2048 bits), e.g. `ES256: invalid public key`.
    #[error("{0}")]
    Verifier(String),
    /// Detached payload: nothing to verify.
    #[error("missing payload")]
    MissingPayload,
    /// The signature does not verify with the leaf's key.
    #[error("verification error")]
    BadSignature,
    /// The protected CWT claims (label 15) are not a map; the text is the Go type name.
    #[error("expected CWTClaims header to be a map[any]any, got {0}")]
    CwtClaimsNotMap(&'static str),
    /// The unprotected receipts (label 394) are malformed.
    #[error("parsing receipts: {0}")]
    Receipts(String),
    /// SP §7.2 step 7.
    #[error("either issuer and feed must both be provided in the COSE_Sign1 protected header")]
    IssuerOrFeedMissing,
    /// SP §7.4, with the resolver's reason (`DID verification failed: ...`,
    /// `certificate chain verification failed: ...`, `DID document creation failed: ...`).
    #[error("failed to resolve DID: {0}")]
    Did(String),
    /// SP §7.2 step 9: the CWT `svn` claim is not an integer that fits in an `i64`.
    #[error("SVN present in CWT claims, but failed to convert it to int64: {0}")]
    Svn(String),
}

impl FragmentError {
    /// Whether the error comes from unpacking the envelope (SP §7.3, pipeline step 4) rather
    /// than from the issuer, DID or SVN checks that follow (steps 7–9).
    #[must_use]
    pub fn is_envelope_error(&self) -> bool {
        !matches!(
            self,
            Self::IssuerOrFeedMissing | Self::Did(_) | Self::Svn(_)
        )
    }

    /// The text the Go guest reports for this error from `InjectFragment` (before the handler's
    /// own outer wrapping): envelope errors get `InjectFragment failed COSE validation: `.
    #[must_use]
    pub fn pipeline_message(&self) -> String {
        if self.is_envelope_error() {
            format!("InjectFragment failed COSE validation: {self}")
        } else {
            self.to_string()
        }
    }
}

/// What a verified fragment envelope says (SP §7.2 steps 4–9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `did:x509` issuer, resolved against the chain.
    pub issuer: String,
    /// The feed (CWT `sub`, or the protected `feed` label).
    pub feed: String,
    /// The CWT `svn` claim, if present.
    pub header_svn: Option<i64>,
    /// The embedded payload (for a policy fragment, the Rego text).
    pub payload: Vec<u8>,
    /// Protected `content type` (label 3) when it is text; only logged by the guest.
    pub content_type: Option<String>,
    /// The certificate chain as sent, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The receipts of the unprotected header (label 394), parsed but not validated (SP §7.8,
    /// [`validate_receipt`]).
    pub receipts: Vec<Receipt>,
}

/// SP §7.2 steps 4 and 6–9 for the fragment and trust-list media types: [`unpack`] the envelope
/// (§7.3), require a non-empty issuer and feed, resolve the issuer as a `did:x509` against the
/// chain (§7.4) and convert the CWT `svn` claim, if any, to an `i64`.
///
/// # Errors
/// Any [`FragmentError`]; see [`FragmentError::pipeline_message`] for the guest's wording.
pub fn verify(cose: &[u8]) -> Result<Verified, FragmentError> {
    let envelope = unpack(cose)?;
    if envelope.issuer.is_empty() || envelope.feed.is_empty() {
        return Err(FragmentError::IssuerOrFeedMissing);
    }
    did_x509::resolve_verified(&envelope.issuer, &envelope.certs)?;
    let header_svn = match envelope.cwt_claim_text("svn") {
        None => None,
        Some(value) => Some(svn_to_i64(value)?),
    };
    Ok(Verified {
        issuer: envelope.issuer,
        feed: envelope.feed,
        header_svn,
        payload: envelope.payload,
        content_type: envelope.content_type,
        chain: envelope.chain,
        receipts: envelope.receipts,
    })
}

/// SP §7.1 for `application/vnd.tcb-reference-info.v1+cose` and
/// `application/vnd.platform-reference-info.v1+cose`: the envelope is unpacked and its chain and
/// signature checked ([`unpack`]), with no issuer, DID or SVN check.
///
/// # Errors
/// The envelope errors of [`unpack`].
pub fn verify_signature_only(cose: &[u8]) -> Result<(), FragmentError> {
    unpack(cose).map(|_| ())
}

/// SP §7.2 step 9: the `svn` claim as an `i64` (CBOR int/uint in range).
fn svn_to_i64(value: &Value) -> Result<i64, FragmentError> {
    match value {
        Value::Integer(i) => {
            let wide = i128::from(*i);
            i64::try_from(wide).map_err(|_| {
                FragmentError::Svn(if wide > 0 {
                    "unable to convert uint64 to int64 due to overflow".to_string()
                } else {
                    "expected integer type, got big.Int".to_string()
                })
            })
        }
        other => Err(FragmentError::Svn(format!(
            "expected integer type, got {}",
            go_type_name(other)
        ))),
    }
}

/// The Go type (`%T`) the Go guest's CBOR decoder gives a value, for error texts.
fn go_type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "int64",
        Value::Bytes(_) => "[]uint8",
        Value::Float(_) => "float64",
        Value::Text(_) => "string",
        Value::Bool(_) => "bool",
        Value::Null => "<nil>",
        Value::Tag(..) => "cbor.Tag",
        Value::Array(_) => "[]interface {}",
        Value::Map(_) => "map[interface {}]interface {}",
        _ => "interface {}",
    }
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
pub(crate) use receipt::tests as receipt_tests;
