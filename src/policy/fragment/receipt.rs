//! A fragment's receipts validated against a ledger's keys (SP §7.8, CCF profile).
//!
//! A receipt is a tagged COSE_Sign1 with a detached payload, signed by a transparency ledger:
//! - protected: `alg` (label 1), `kid` (label 4, the ledger key it was signed with), `vds`
//!   (label 395) = 2 (CCF ledger, SHA-256), CWT claims with the ledger as `iss`;
//! - unprotected: `vdp` (label 396) = `{-1: [bstr .cbor proof, ...]}`, each inclusion proof a map
//!   `{1: [internal_tx_hash: bstr .size 32, internal_evidence: tstr, data_hash: bstr .size 32],
//!     2: [[left: bool, hash: bstr .size 32], ...]}`.
//!
//! Each proof climbs from its leaf, `SHA-256(internal_tx_hash ‖ SHA-256(internal_evidence) ‖
//! data_hash)`, along its path to a Merkle root; the leaf's `data_hash` must be the hash of the
//! envelope the receipt came with ([`Receipt::expected_data_hash`]), and the receipt's signature
//! must verify with the root as its detached payload. Which ledgers' keys a receipt is checked
//! against is the enforcer's business (SP §7.6 step 2).

use coset::cbor::value::Value;
use coset::{CborSerializable, CoseKey, CoseSign1, Label, TaggedCborSerializable};
use sha2::{Digest, Sha256};

use super::cose::{header_alg, header_value, PublicKey};
use super::{FragmentError, Receipt};

/// Most inclusion proofs one receipt may carry.
pub const MAX_PROOFS: usize = 64;
/// Longest Merkle path of one inclusion proof.
pub const MAX_PATH_LEN: usize = 64;
/// Longest `internal_evidence` text, in bytes.
pub const MAX_EVIDENCE_LEN: usize = 1024;

/// Protected `vds` (verifiable data structure) and unprotected `vdp` (verifiable data proofs).
const LABEL_VDS: i64 = 395;
const LABEL_VDP: i64 = 396;
/// `vds` of a CCF ledger with SHA-256 (the only profile supported).
const VDS_CCF_LEDGER_SHA256: i64 = 2;
/// Key of the inclusion proofs in `vdp`.
const VDP_INCLUSION_PROOFS: i64 = -1;
/// Keys of an inclusion proof map.
const PROOF_LEAF: i64 = 1;
const PROOF_PATH: i64 = 2;

/// Why a receipt does not validate against a ledger's keys (SP §7.8). The enforcer logs it and
/// ignores the receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The receipt is not a tagged COSE_Sign1.
    #[error("receipt is not a COSE_Sign1: {0}")]
    Cbor(String),
    /// Protected `vds` (label 395) absent, not an integer, or not 2.
    #[error("only receipts with CCF profile supported")]
    NotCcfProfile,
    /// The receipt carries its payload: a CCF receipt's payload (the Merkle root) is detached.
    #[error("receipt payload must be detached")]
    PayloadNotDetached,
    /// Protected `alg` absent or not an integer.
    #[error("receipt {0}")]
    Algorithm(FragmentError),
    /// The ledger's keys have none under the receipt's `kid` (hex).
    #[error("no key with kid {0} among the ledger's keys")]
    UnknownKid(String),
    /// The ledger's key for the `kid` cannot verify the receipt's algorithm.
    #[error("ledger key {kid}: {reason}")]
    UnusableKey { kid: String, reason: String },
    /// `vdp` (label 396) absent or not a map of a non-empty array of bstr under key -1.
    #[error("inclusion proofs: {0}")]
    Proofs(String),
    /// More than [`MAX_PROOFS`] inclusion proofs.
    #[error("too many inclusion proofs ({0}, at most {MAX_PROOFS})")]
    TooManyProofs(usize),
    /// An inclusion proof is not of the CCF shape; the text says what is wrong.
    #[error("inclusion proof {index}: {reason}")]
    MalformedProof { index: usize, reason: String },
    /// An inclusion proof's leaf is for another signed statement than the envelope.
    #[error("inclusion proof {0}: data hash does not match the fragment envelope")]
    DataHashMismatch(usize),
    /// The receipt's signature does not verify over the root an inclusion proof leads to.
    #[error("inclusion proof {0}: receipt signature verification failed")]
    BadSignature(usize),
}

/// A key id as the trust-key store names it: lower-case hex of its bytes.
#[must_use]
pub fn kid_hex(kid: &[u8]) -> String {
    kid.iter().map(|b| format!("{b:02x}")).collect()
}

/// SP §7.8: validates `receipt` against one ledger's keys, which `key_for` gives by `kid` (the
/// receipt's protected `kid` bytes in, the COSE_Key as encoded out). Checks, in order: the
/// receipt parses as a tagged COSE_Sign1; protected `vds` is 2; the payload is detached;
/// protected `alg` is present; `key_for` has a key for the `kid`, usable with `alg` (EC2 P-256,
/// P-384, P-521 for ES256/384/512; OKP Ed25519 for EdDSA); unprotected `vdp` holds 1 to
/// [`MAX_PROOFS`] inclusion proofs; then for each proof, its shape (paths of 1 to
/// [`MAX_PATH_LEN`] steps, evidence of 1 to [`MAX_EVIDENCE_LEN`] bytes), its `data_hash` against
/// [`Receipt::expected_data_hash`], and the signature (no external AAD) over the root it leads to.
/// Every proof must pass.
///
/// # Errors
/// The first check that fails, as a [`ReceiptError`].
pub fn validate_receipt<'k>(
    receipt: &Receipt,
    key_for: impl FnOnce(&[u8]) -> Option<&'k [u8]>,
) -> Result<(), ReceiptError> {
    let msg = CoseSign1::from_tagged_slice(&receipt.raw)
        .map_err(|e| ReceiptError::Cbor(e.to_string()))?;
    let protected = &msg.protected.header;
    match header_value(&protected.rest, &Label::Int(LABEL_VDS)) {
        Some(Value::Integer(vds)) if i128::from(*vds) == i128::from(VDS_CCF_LEDGER_SHA256) => {}
        _ => return Err(ReceiptError::NotCcfProfile),
    }
    if msg.payload.is_some() {
        return Err(ReceiptError::PayloadNotDetached);
    }
    let alg = header_alg(protected).map_err(ReceiptError::Algorithm)?;

    let kid = kid_hex(&receipt.kid);
    let encoded = key_for(&receipt.kid).ok_or_else(|| ReceiptError::UnknownKid(kid.clone()))?;
    let unusable = |reason: String| ReceiptError::UnusableKey {
        kid: kid.clone(),
        reason,
    };
    let cose_key =
        CoseKey::from_slice(encoded).map_err(|e| unusable(format!("not a COSE_Key: {e}")))?;
    let key = PublicKey::from_cose_key(alg, &cose_key).map_err(|e| unusable(e.to_string()))?;

    let proofs = inclusion_proofs(&msg)?;
    // One signature verifies one root: proofs leading to a root already verified need no
    // second verification.
    let mut verified_root: Option<[u8; 32]> = None;
    for (index, raw) in proofs.iter().enumerate() {
        let proof =
            Proof::parse(raw).map_err(|reason| ReceiptError::MalformedProof { index, reason })?;
        if proof.data_hash != receipt.expected_data_hash {
            return Err(ReceiptError::DataHashMismatch(index));
        }
        let root = proof.root();
        if verified_root == Some(root) {
            continue;
        }
        msg.verify_detached_signature(&root, b"", |signature, tbs| key.verify(tbs, signature))
            .map_err(|_| ReceiptError::BadSignature(index))?;
        verified_root = Some(root);
    }
    Ok(())
}

/// The encoded inclusion proofs of `vdp` (label 396, key -1): 1 to [`MAX_PROOFS`] bstr.
fn inclusion_proofs(msg: &CoseSign1) -> Result<Vec<&[u8]>, ReceiptError> {
    let proofs = |text: &str| ReceiptError::Proofs(text.to_string());
    let vdp = match header_value(&msg.unprotected.rest, &Label::Int(LABEL_VDP)) {
        None => {
            return Err(proofs(
                "vdp (label 396) missing from the unprotected header",
            ))
        }
        Some(Value::Map(vdp)) => vdp,
        Some(_) => return Err(proofs("vdp (label 396) is not a map")),
    };
    let list = match vdp
        .iter()
        .find(|(k, _)| *k == Value::from(VDP_INCLUSION_PROOFS))
    {
        None => return Err(proofs("vdp has no inclusion proofs (key -1)")),
        Some((_, Value::Array(list))) if list.is_empty() => {
            return Err(proofs("vdp has no inclusion proofs (empty array)"))
        }
        Some((_, Value::Array(list))) => list,
        Some(_) => return Err(proofs("vdp key -1 is not an array")),
    };
    if list.len() > MAX_PROOFS {
        return Err(ReceiptError::TooManyProofs(list.len()));
    }
    list.iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::Bytes(b) => Ok(b.as_slice()),
            _ => Err(ReceiptError::MalformedProof {
                index,
                reason: "not a byte string".to_string(),
            }),
        })
        .collect()
}

/// One CCF inclusion proof, decoded.
#[derive(Debug)]
struct Proof {
    tx_hash: [u8; 32],
    evidence: String,
    data_hash: [u8; 32],
    /// `(left, hash)`: whether `hash` is the left sibling at that step.
    path: Vec<(bool, [u8; 32])>,
}

impl Proof {
    /// Decodes `{1: [tx_hash, evidence, data_hash], 2: [[left, hash], ...]}` (one CBOR item,
    /// no key twice, other keys ignored).
    fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut rest = raw;
        let value: Value =
            coset::cbor::de::from_reader(&mut rest).map_err(|e| format!("cbor: {e}"))?;
        if !rest.is_empty() {
            return Err("extraneous data after the proof".to_string());
        }
        let Value::Map(fields) = value else {
            return Err("not a map".to_string());
        };
        if fields
            .iter()
            .enumerate()
            .any(|(i, (k, _))| fields[..i].iter().any(|(k2, _)| k2 == k))
        {
            return Err("duplicate map key".to_string());
        }
        let field = |key: i64| {
            fields
                .iter()
                .find(|(k, _)| *k == Value::from(key))
                .map(|(_, v)| v)
        };

        let leaf = match field(PROOF_LEAF) {
            None => return Err("leaf (key 1) missing".to_string()),
            Some(Value::Array(leaf)) if leaf.len() == 3 => leaf,
            Some(_) => {
                return Err(
                    "leaf (key 1) is not [internal_tx_hash, internal_evidence, data_hash]"
                        .to_string(),
                )
            }
        };
        let tx_hash = hash32(&leaf[0]).ok_or("leaf internal_tx_hash is not a 32-byte bstr")?;
        let evidence = match &leaf[1] {
            Value::Text(t) if (1..=MAX_EVIDENCE_LEN).contains(&t.len()) => t.clone(),
            Value::Text(t) => {
                return Err(format!(
                    "leaf internal_evidence must be 1 to {MAX_EVIDENCE_LEN} bytes (got {})",
                    t.len()
                ))
            }
            _ => return Err("leaf internal_evidence is not a text string".to_string()),
        };
        let data_hash = hash32(&leaf[2]).ok_or("leaf data_hash is not a 32-byte bstr")?;

        let steps = match field(PROOF_PATH) {
            None => return Err("path (key 2) missing".to_string()),
            Some(Value::Array(steps)) if steps.is_empty() => {
                return Err("path (key 2) is empty".to_string())
            }
            Some(Value::Array(steps)) if steps.len() > MAX_PATH_LEN => {
                return Err(format!(
                    "path too long ({} steps, at most {MAX_PATH_LEN})",
                    steps.len()
                ))
            }
            Some(Value::Array(steps)) => steps,
            Some(_) => return Err("path (key 2) is not an array".to_string()),
        };
        let path = steps
            .iter()
            .enumerate()
            .map(|(i, step)| match step {
                Value::Array(pair) if pair.len() == 2 => match (&pair[0], hash32(&pair[1])) {
                    (Value::Bool(left), Some(hash)) => Ok((*left, hash)),
                    _ => Err(format!("path step {i} is not [bool, 32-byte bstr]")),
                },
                _ => Err(format!("path step {i} is not [bool, 32-byte bstr]")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tx_hash,
            evidence,
            data_hash,
            path,
        })
    }

    /// The Merkle root the proof leads to: the leaf hash
    /// `SHA-256(tx_hash ‖ SHA-256(evidence) ‖ data_hash)`, then at each step
    /// `SHA-256(hash ‖ h)` for a left sibling, `SHA-256(h ‖ hash)` for a right one.
    fn root(&self) -> [u8; 32] {
        let mut h: [u8; 32] = Sha256::new()
            .chain_update(self.tx_hash)
            .chain_update(Sha256::digest(self.evidence.as_bytes()))
            .chain_update(self.data_hash)
            .finalize()
            .into();
        for (left, hash) in &self.path {
            let (a, b) = if *left { (hash, &h) } else { (&h, hash) };
            h = Sha256::new()
                .chain_update(a)
                .chain_update(b)
                .finalize()
                .into();
        }
        h
    }
}

/// A 32-byte bstr.
fn hash32(value: &Value) -> Option<[u8; 32]> {
    match value {
        Value::Bytes(b) => b.as_slice().try_into().ok(),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests;
