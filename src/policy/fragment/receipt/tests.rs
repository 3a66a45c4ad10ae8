//! CCF receipts made here, signed with ledger keys made here (SP §7.8), and the helpers the
//! enforcer's and the guest's tests build receipts and trust lists with.

use coset::cbor::value::Value;
use coset::{
    iana, CborSerializable, CoseKey, CoseKeyBuilder, CoseSign1, CoseSign1Builder, Header,
    HeaderBuilder, TaggedCborSerializable,
};
use p256::ecdsa::signature::Signer;
use sha2::{Digest, Sha256};

use super::*;

/// A ledger: its name and one signing key with its key id.
pub(crate) struct Ledger {
    pub(crate) name: String,
    pub(crate) kid: Vec<u8>,
    key: LedgerKey,
}

enum LedgerKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl Ledger {
    /// A ledger `name` signing ES256 with a P-256 key made from `seed`, under `kid`.
    pub(crate) fn p256(name: &str, kid: &[u8], seed: u8) -> Self {
        Self {
            name: name.to_string(),
            kid: kid.to_vec(),
            key: LedgerKey::P256(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()),
        }
    }

    /// A ledger `name` signing ES384 with a P-384 key made from `seed`, under `kid`.
    pub(crate) fn p384(name: &str, kid: &[u8], seed: u8) -> Self {
        Self {
            name: name.to_string(),
            kid: kid.to_vec(),
            key: LedgerKey::P384(p384::ecdsa::SigningKey::from_slice(&[seed; 48]).unwrap()),
        }
    }

    fn alg(&self) -> iana::Algorithm {
        match self.key {
            LedgerKey::P256(_) => iana::Algorithm::ES256,
            LedgerKey::P384(_) => iana::Algorithm::ES384,
        }
    }

    /// The public key as a COSE_Key (EC2, uncompressed point) with the ledger's `kid`.
    pub(crate) fn cose_key(&self) -> CoseKey {
        let (curve, point) = match &self.key {
            LedgerKey::P256(k) => (
                iana::EllipticCurve::P_256,
                k.verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
            ),
            LedgerKey::P384(k) => (
                iana::EllipticCurve::P_384,
                k.verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec(),
            ),
        };
        let half = (point.len() - 1) / 2;
        CoseKeyBuilder::new_ec2_pub_key(curve, point[1..=half].to_vec(), point[half + 1..].to_vec())
            .key_id(self.kid.clone())
            .build()
    }

    /// The COSE_Key, encoded as a trust list carries it.
    pub(crate) fn encoded_key(&self) -> Vec<u8> {
        self.cose_key().to_vec().unwrap()
    }

    /// A raw `r || s` signature over `tbs` with the algorithm's hash.
    fn sign(&self, tbs: &[u8]) -> Vec<u8> {
        match &self.key {
            LedgerKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(tbs);
                sig.to_bytes().to_vec()
            }
            LedgerKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(tbs);
                sig.to_bytes().to_vec()
            }
        }
    }

    /// The CCF protected header: `alg`, `kid`, `vds` 2, CWT claims naming the ledger.
    pub(crate) fn protected(&self) -> HeaderBuilder {
        HeaderBuilder::new()
            .algorithm(self.alg())
            .key_id(self.kid.clone())
            .value(395, Value::from(2))
            .value(
                15,
                Value::Map(vec![(Value::from(1), Value::Text(self.name.clone()))]),
            )
    }

    /// A receipt with `protected` and `unprotected` headers, signed (detached, no AAD) over
    /// `root` with the ledger's key.
    pub(crate) fn sign_receipt(
        &self,
        protected: Header,
        unprotected: Header,
        root: &[u8; 32],
    ) -> Vec<u8> {
        CoseSign1Builder::new()
            .protected(protected)
            .unprotected(unprotected)
            .create_detached_signature(root, b"", |tbs| self.sign(tbs))
            .build()
            .to_tagged_vec()
            .unwrap()
    }

    /// A valid CCF receipt for the signed statement hashed as `data_hash`: one inclusion proof
    /// with a three-step path.
    pub(crate) fn receipt_for(&self, data_hash: [u8; 32]) -> Vec<u8> {
        let leaf = Leaf::new(data_hash);
        let path = path3();
        self.sign_receipt(
            self.protected().build(),
            vdp(vec![proof(&leaf, &path)]),
            &root(&leaf, &path),
        )
    }
}

/// An inclusion proof's leaf.
#[derive(Clone)]
pub(crate) struct Leaf {
    pub(crate) tx_hash: [u8; 32],
    pub(crate) evidence: String,
    pub(crate) data_hash: [u8; 32],
}

impl Leaf {
    pub(crate) fn new(data_hash: [u8; 32]) -> Self {
        Self {
            tx_hash: [0x11; 32],
            evidence: "ce:2.17:0123456789abcdef".to_string(),
            data_hash,
        }
    }
}

/// A path of three steps: left, right, left.
pub(crate) fn path3() -> Vec<(bool, [u8; 32])> {
    vec![(true, [0xA1; 32]), (false, [0xB2; 32]), (true, [0xC3; 32])]
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The Merkle root a proof leads to, as CCF computes it.
pub(crate) fn root(leaf: &Leaf, path: &[(bool, [u8; 32])]) -> [u8; 32] {
    let evidence = sha256(&[leaf.evidence.as_bytes()]);
    let mut h = sha256(&[&leaf.tx_hash, &evidence, &leaf.data_hash]);
    for (left, sibling) in path {
        h = if *left {
            sha256(&[sibling, &h])
        } else {
            sha256(&[&h, sibling])
        };
    }
    h
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    coset::cbor::ser::into_writer(value, &mut out).unwrap();
    out
}

/// The proof map `{1: leaf, 2: path}`, encoded.
pub(crate) fn proof(leaf: &Leaf, path: &[(bool, [u8; 32])]) -> Vec<u8> {
    proof_value(
        Value::Array(vec![
            Value::Bytes(leaf.tx_hash.to_vec()),
            Value::Text(leaf.evidence.clone()),
            Value::Bytes(leaf.data_hash.to_vec()),
        ]),
        Value::Array(
            path.iter()
                .map(|(left, h)| Value::Array(vec![Value::Bool(*left), Value::Bytes(h.to_vec())]))
                .collect(),
        ),
    )
}

fn proof_value(leaf: Value, path: Value) -> Vec<u8> {
    encode(&Value::Map(vec![
        (Value::from(1), leaf),
        (Value::from(2), path),
    ]))
}

/// The unprotected header `{396: {-1: [proofs...]}}`.
pub(crate) fn vdp(proofs: Vec<Vec<u8>>) -> Header {
    HeaderBuilder::new()
        .value(
            396,
            Value::Map(vec![(
                Value::from(-1),
                Value::Array(proofs.into_iter().map(Value::Bytes).collect()),
            )]),
        )
        .build()
}

/// A trust-list payload (SP §7.9) offering each ledger's key.
pub(crate) fn trust_list(ledgers: &[&Ledger]) -> Vec<u8> {
    use coset::AsCborValue;
    encode(&Value::Map(
        ledgers
            .iter()
            .map(|l| {
                (
                    Value::Text(l.name.clone()),
                    Value::Map(vec![(
                        Value::from(1),
                        Value::Array(vec![l.cose_key().to_cbor_value().unwrap()]),
                    )]),
                )
            })
            .collect(),
    ))
}

/// `envelope` (a tagged COSE_Sign1 with an empty unprotected header) with `receipts` in its
/// unprotected header (label 394), and the data hash they must prove: that of `envelope`.
pub(crate) fn with_receipts(envelope: &[u8], receipts: &[Vec<u8>]) -> Vec<u8> {
    let mut msg = CoseSign1::from_tagged_slice(envelope).unwrap();
    msg.unprotected = HeaderBuilder::new()
        .value(
            394,
            Value::Array(receipts.iter().cloned().map(Value::Bytes).collect()),
        )
        .build();
    msg.to_tagged_vec().unwrap()
}

/// The hash a receipt for `envelope` (with an empty unprotected header) must carry.
pub(crate) fn statement_hash(envelope: &[u8]) -> [u8; 32] {
    sha256(&[envelope])
}

// ---------------------------------------------------------------------------------------------
// Validation

const DATA_HASH: [u8; 32] = [0x5A; 32];

fn parsed(ledger: &Ledger, raw: Vec<u8>) -> Receipt {
    Receipt {
        raw,
        kid: ledger.kid.clone(),
        issuer: ledger.name.clone(),
        expected_data_hash: DATA_HASH,
    }
}

/// Validates against `keys`: (kid, encoded COSE_Key) pairs.
fn check(receipt: &Receipt, keys: &[(Vec<u8>, Vec<u8>)]) -> Result<(), ReceiptError> {
    validate_receipt(receipt, |kid| {
        keys.iter()
            .find(|(k, _)| k == kid)
            .map(|(_, key)| key.as_slice())
    })
}

fn keys_of(ledger: &Ledger) -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![(ledger.kid.clone(), ledger.encoded_key())]
}

#[test]
fn a_ccf_receipt_with_a_three_step_path_validates() {
    for ledger in [
        Ledger::p256("ledger.example", b"kid-1", 7),
        Ledger::p384("ledger.example", b"kid-384", 8),
    ] {
        let receipt = parsed(&ledger, ledger.receipt_for(DATA_HASH));
        check(&receipt, &keys_of(&ledger)).unwrap();
    }
}

#[test]
fn the_root_follows_the_path_directions() {
    // Two steps computed by hand: right sibling, then left sibling.
    let ledger = Ledger::p256("l", b"k", 7);
    let leaf = Leaf::new(DATA_HASH);
    let (s1, s2) = ([0x01; 32], [0x02; 32]);
    let leaf_hash: [u8; 32] = Sha256::new()
        .chain_update(leaf.tx_hash)
        .chain_update(Sha256::digest(leaf.evidence.as_bytes()))
        .chain_update(DATA_HASH)
        .finalize()
        .into();
    let step1: [u8; 32] = Sha256::new()
        .chain_update(leaf_hash)
        .chain_update(s1)
        .finalize()
        .into();
    let want: [u8; 32] = Sha256::new()
        .chain_update(s2)
        .chain_update(step1)
        .finalize()
        .into();
    let path = [(false, s1), (true, s2)];
    let raw = ledger.sign_receipt(
        ledger.protected().build(),
        vdp(vec![proof(&leaf, &path)]),
        &want,
    );
    check(&parsed(&ledger, raw), &keys_of(&ledger)).unwrap();
    // The same siblings with the directions swapped lead elsewhere.
    let swapped = [(true, s1), (false, s2)];
    let raw = ledger.sign_receipt(
        ledger.protected().build(),
        vdp(vec![proof(&leaf, &swapped)]),
        &want,
    );
    assert_eq!(
        check(&parsed(&ledger, raw), &keys_of(&ledger)),
        Err(ReceiptError::BadSignature(0))
    );
}

#[test]
fn every_proof_must_pass() {
    let ledger = Ledger::p256("l", b"k", 7);
    let leaf = Leaf::new(DATA_HASH);
    let path = path3();
    let good = proof(&leaf, &path);
    let root = root(&leaf, &path);
    // Two proofs of the same root: fine.
    let raw = ledger.sign_receipt(
        ledger.protected().build(),
        vdp(vec![good.clone(), good.clone()]),
        &root,
    );
    check(&parsed(&ledger, raw), &keys_of(&ledger)).unwrap();
    // A second proof leading to another root: refused.
    let other = proof(&leaf, &path[..2]);
    let raw = ledger.sign_receipt(
        ledger.protected().build(),
        vdp(vec![good.clone(), other]),
        &root,
    );
    assert_eq!(
        check(&parsed(&ledger, raw), &keys_of(&ledger)),
        Err(ReceiptError::BadSignature(1))
    );
    // A second proof for another statement: refused.
    let stranger = proof(&Leaf::new([0x77; 32]), &path);
    let raw = ledger.sign_receipt(ledger.protected().build(), vdp(vec![good, stranger]), &root);
    assert_eq!(
        check(&parsed(&ledger, raw), &keys_of(&ledger)),
        Err(ReceiptError::DataHashMismatch(1))
    );
}

#[test]
fn only_the_ccf_profile_is_supported() {
    let ledger = Ledger::p256("l", b"k", 7);
    let leaf = Leaf::new(DATA_HASH);
    let path = path3();
    for vds in [Some(Value::from(1)), Some(Value::Text("2".into())), None] {
        let mut header = HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES256)
            .key_id(ledger.kid.clone());
        if let Some(vds) = vds {
            header = header.value(395, vds);
        }
        let raw = ledger.sign_receipt(
            header.build(),
            vdp(vec![proof(&leaf, &path)]),
            &root(&leaf, &path),
        );
        let err = check(&parsed(&ledger, raw), &keys_of(&ledger)).unwrap_err();
        assert_eq!(err, ReceiptError::NotCcfProfile);
        assert_eq!(err.to_string(), "only receipts with CCF profile supported");
    }
}

#[test]
fn an_embedded_payload_or_a_missing_algorithm_is_refused() {
    let ledger = Ledger::p256("l", b"k", 7);
    let leaf = Leaf::new(DATA_HASH);
    let path = path3();
    let root = root(&leaf, &path);
    let attached = CoseSign1Builder::new()
        .protected(ledger.protected().build())
        .unprotected(vdp(vec![proof(&leaf, &path)]))
        .payload(root.to_vec())
        .create_signature(b"", |tbs| ledger.sign(tbs))
        .build()
        .to_tagged_vec()
        .unwrap();
    let err = check(&parsed(&ledger, attached), &keys_of(&ledger)).unwrap_err();
    assert_eq!(err.to_string(), "receipt payload must be detached");

    let header = HeaderBuilder::new()
        .key_id(ledger.kid.clone())
        .value(395, Value::from(2))
        .build();
    let raw = ledger.sign_receipt(header, vdp(vec![proof(&leaf, &path)]), &root);
    let err = check(&parsed(&ledger, raw), &keys_of(&ledger)).unwrap_err();
    assert_eq!(err.to_string(), "receipt algorithm missing");

    let err = check(
        &parsed(&ledger, b"\xd2\x84junk".to_vec()),
        &keys_of(&ledger),
    )
    .unwrap_err();
    assert!(matches!(err, ReceiptError::Cbor(_)), "{err:?}");
}

#[test]
fn the_key_must_be_the_ledgers_for_the_kid() {
    let ledger = Ledger::p256("l", b"kid-1", 7);
    let receipt = parsed(&ledger, ledger.receipt_for(DATA_HASH));
    // No key under that kid.
    let other = Ledger::p256("l", b"kid-2", 7);
    let err = check(&receipt, &keys_of(&other)).unwrap_err();
    assert_eq!(err, ReceiptError::UnknownKid("6b69642d31".into()));
    assert_eq!(
        err.to_string(),
        "no key with kid 6b69642d31 among the ledger's keys"
    );
    // Another key under the receipt's kid.
    let impostor = Ledger::p256("l", b"kid-1", 9);
    assert_eq!(
        check(&receipt, &keys_of(&impostor)),
        Err(ReceiptError::BadSignature(0))
    );
    // A P-384 key for an ES256 receipt: the signature (SHA-256 on P-256) cannot verify.
    let p384 = Ledger::p384("l", b"kid-1", 9);
    assert_eq!(
        check(&receipt, &keys_of(&p384)),
        Err(ReceiptError::BadSignature(0))
    );
    // Not a COSE_Key, or a key restricted to another algorithm.
    let err = check(&receipt, &[(b"kid-1".to_vec(), b"\x01".to_vec())]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("ledger key 6b69642d31: not a COSE_Key"),
        "{err}"
    );
    let mut restricted = ledger.cose_key();
    restricted.alg = Some(coset::Algorithm::Assigned(iana::Algorithm::ES384));
    let err = check(
        &receipt,
        &[(b"kid-1".to_vec(), restricted.to_vec().unwrap())],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ledger key 6b69642d31: ES256: the key is restricted to another algorithm"
    );
}

#[test]
fn a_flipped_signature_byte_is_refused() {
    let ledger = Ledger::p256("l", b"k", 7);
    let mut msg = CoseSign1::from_tagged_slice(&ledger.receipt_for(DATA_HASH)).unwrap();
    msg.signature[10] ^= 0x01;
    let err = check(
        &parsed(&ledger, msg.to_tagged_vec().unwrap()),
        &keys_of(&ledger),
    )
    .unwrap_err();
    assert_eq!(err, ReceiptError::BadSignature(0));
    assert_eq!(
        err.to_string(),
        "inclusion proof 0: receipt signature verification failed"
    );
}

#[test]
fn a_tampered_path_hash_is_refused() {
    let ledger = Ledger::p256("l", b"k", 7);
    let leaf = Leaf::new(DATA_HASH);
    let path = path3();
    let mut tampered = path.clone();
    tampered[1].1[0] ^= 0x80;
    let raw = ledger.sign_receipt(
        ledger.protected().build(),
        vdp(vec![proof(&leaf, &tampered)]),
        &root(&leaf, &path),
    );
    assert_eq!(
        check(&parsed(&ledger, raw), &keys_of(&ledger)),
        Err(ReceiptError::BadSignature(0))
    );
}

#[test]
fn the_leaf_must_prove_the_envelope() {
    let ledger = Ledger::p256("l", b"k", 7);
    // Signed properly, but for another statement.
    let receipt = parsed(&ledger, ledger.receipt_for([0x77; 32]));
    let err = check(&receipt, &keys_of(&ledger)).unwrap_err();
    assert_eq!(err, ReceiptError::DataHashMismatch(0));
    assert_eq!(
        err.to_string(),
        "inclusion proof 0: data hash does not match the fragment envelope"
    );
}

#[test]
fn vdp_must_hold_inclusion_proofs() {
    let ledger = Ledger::p256("l", b"k", 7);
    let root = [0u8; 32];
    let cases = [
        (
            Header::default(),
            "inclusion proofs: vdp (label 396) missing from the unprotected header",
        ),
        (
            HeaderBuilder::new().value(396, Value::from(1)).build(),
            "inclusion proofs: vdp (label 396) is not a map",
        ),
        (
            HeaderBuilder::new()
                .value(
                    396,
                    Value::Map(vec![(Value::from(-2), Value::Array(vec![]))]),
                )
                .build(),
            "inclusion proofs: vdp has no inclusion proofs (key -1)",
        ),
        (
            vdp(Vec::new()),
            "inclusion proofs: vdp has no inclusion proofs (empty array)",
        ),
        (
            HeaderBuilder::new()
                .value(396, Value::Map(vec![(Value::from(-1), Value::from(3))]))
                .build(),
            "inclusion proofs: vdp key -1 is not an array",
        ),
        (
            HeaderBuilder::new()
                .value(
                    396,
                    Value::Map(vec![(Value::from(-1), Value::Array(vec![Value::from(3)]))]),
                )
                .build(),
            "inclusion proof 0: not a byte string",
        ),
        (
            vdp(vec![vec![0x01]; MAX_PROOFS + 1]),
            "too many inclusion proofs (65, at most 64)",
        ),
    ];
    for (unprotected, want) in cases {
        let raw = ledger.sign_receipt(ledger.protected().build(), unprotected, &root);
        let err = check(&parsed(&ledger, raw), &keys_of(&ledger)).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

#[test]
fn malformed_proofs_are_refused() {
    let ledger = Ledger::p256("l", b"k", 7);
    let leaf = Leaf::new(DATA_HASH);
    let long = Leaf {
        evidence: "e".repeat(MAX_EVIDENCE_LEN + 1),
        ..leaf.clone()
    };
    let empty = Leaf {
        evidence: String::new(),
        ..leaf.clone()
    };
    let bytes = |n: usize| Value::Bytes(vec![0; n]);
    let good_leaf = Value::Array(vec![
        bytes(32),
        Value::Text("e".into()),
        Value::Bytes(DATA_HASH.to_vec()),
    ]);
    let good_path = Value::Array(vec![Value::Array(vec![Value::Bool(true), bytes(32)])]);
    let mut trailing = proof(&leaf, &path3());
    trailing.push(0x00);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            proof(&long, &path3()),
            "leaf internal_evidence must be 1 to 1024 bytes (got 1025)",
        ),
        (
            proof(&empty, &path3()),
            "leaf internal_evidence must be 1 to 1024 bytes (got 0)",
        ),
        (proof(&leaf, &[]), "path (key 2) is empty"),
        (
            proof(&leaf, &[(true, [0; 32]); MAX_PATH_LEN + 1]),
            "path too long (65 steps, at most 64)",
        ),
        (encode(&Value::from(5)), "not a map"),
        (b"\xa1".to_vec(), "cbor: "),
        (trailing, "extraneous data after the proof"),
        (
            encode(&Value::Map(vec![(Value::from(2), good_path.clone())])),
            "leaf (key 1) missing",
        ),
        (
            encode(&Value::Map(vec![(Value::from(1), good_leaf.clone())])),
            "path (key 2) missing",
        ),
        (
            proof_value(
                Value::Array(vec![bytes(32), Value::Text("e".into())]),
                good_path.clone(),
            ),
            "leaf (key 1) is not [internal_tx_hash, internal_evidence, data_hash]",
        ),
        (
            proof_value(
                Value::Array(vec![bytes(31), Value::Text("e".into()), bytes(32)]),
                good_path.clone(),
            ),
            "leaf internal_tx_hash is not a 32-byte bstr",
        ),
        (
            proof_value(
                Value::Array(vec![bytes(32), bytes(3), bytes(32)]),
                good_path.clone(),
            ),
            "leaf internal_evidence is not a text string",
        ),
        (
            proof_value(
                Value::Array(vec![bytes(32), Value::Text("e".into()), bytes(33)]),
                good_path.clone(),
            ),
            "leaf data_hash is not a 32-byte bstr",
        ),
        (
            proof_value(
                good_leaf.clone(),
                Value::Array(vec![Value::Array(vec![Value::from(1), bytes(32)])]),
            ),
            "path step 0 is not [bool, 32-byte bstr]",
        ),
        (
            proof_value(good_leaf.clone(), Value::from(2)),
            "path (key 2) is not an array",
        ),
        (
            encode(&Value::Map(vec![
                (Value::from(1), good_leaf.clone()),
                (Value::from(2), good_path.clone()),
                (Value::from(1), good_leaf),
            ])),
            "duplicate map key",
        ),
    ];
    for (bad, want) in cases {
        let raw = ledger.sign_receipt(ledger.protected().build(), vdp(vec![bad]), &[0; 32]);
        let err = check(&parsed(&ledger, raw), &keys_of(&ledger)).unwrap_err();
        let ReceiptError::MalformedProof { index: 0, reason } = &err else {
            panic!("{want}: {err:?}")
        };
        assert!(reason.starts_with(want), "{reason} vs {want}");
        assert!(err.to_string().starts_with("inclusion proof 0: "), "{err}");
    }
}

#[test]
fn receipts_parsed_from_an_envelope_validate() {
    // Through the envelope's own parsing: the expected data hash is the envelope's.
    let ledger = Ledger::p384("ledger.example", b"kid-9", 3);
    let (bare, _) = crate::policy::fragment::tests::signed(20, "feed", Some(1), b"package x\n");
    let envelope = with_receipts(&bare, &[ledger.receipt_for(statement_hash(&bare))]);
    let verified = crate::policy::fragment::verify(&envelope).unwrap();
    assert_eq!(verified.receipts.len(), 1);
    assert_eq!(verified.receipts[0].issuer, "ledger.example");
    check(&verified.receipts[0], &keys_of(&ledger)).unwrap();
    // A receipt made for another envelope does not.
    let (other, _) = crate::policy::fragment::tests::signed(20, "feed", Some(2), b"package x\n");
    let envelope = with_receipts(&bare, &[ledger.receipt_for(statement_hash(&other))]);
    let verified = crate::policy::fragment::verify(&envelope).unwrap();
    assert_eq!(
        check(&verified.receipts[0], &keys_of(&ledger)),
        Err(ReceiptError::DataHashMismatch(0))
    );
}

#[test]
fn ledger_key_types() {
    let sample = Ledger::p256("l", b"k", 7);
    let point = |k: &CoseKey| k.to_sec1_octet_string().unwrap();
    let alg = super::super::cose::CoseAlg::Assigned(iana::Algorithm::ES256);
    // An EC2 key with a compressed point works as well.
    let full = point(&sample.cose_key());
    let y_odd = full[full.len() - 1] & 1 == 1;
    let compressed = CoseKeyBuilder::new_ec2_pub_key_y_sign(
        iana::EllipticCurve::P_256,
        full[1..33].to_vec(),
        y_odd,
    )
    .build();
    assert!(PublicKey::from_cose_key(alg, &compressed).is_ok());
    // An unknown curve, a symmetric key, an OKP key for ES256: refused.
    let mut other_curve = sample.cose_key();
    for (label, value) in &mut other_curve.params {
        if *label == coset::Label::Int(-1) {
            *value = Value::from(8);
        }
    }
    for key in [
        other_curve,
        CoseKeyBuilder::new_symmetric_key(vec![1; 32]).build(),
        CoseKeyBuilder::new_okp_key()
            .param(-1, Value::from(6))
            .param(-2, Value::Bytes(vec![1; 32]))
            .build(),
    ] {
        let Err(err) = PublicKey::from_cose_key(alg, &key) else {
            panic!("{key:?} accepted")
        };
        assert_eq!(err.to_string(), "ES256: invalid public key");
    }
    // Ed25519 ledger keys for EdDSA receipts.
    let ed = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
    let okp = CoseKeyBuilder::new_okp_key()
        .param(-1, Value::from(6))
        .param(-2, Value::Bytes(ed.verifying_key().as_bytes().to_vec()))
        .build();
    let eddsa = super::super::cose::CoseAlg::Assigned(iana::Algorithm::EdDSA);
    let key = PublicKey::from_cose_key(eddsa, &okp).unwrap_or_else(|e| panic!("{e}"));
    use ed25519_dalek::Signer as _;
    key.verify(b"tbs", &ed.sign(b"tbs").to_bytes()).unwrap();
    assert!(key.verify(b"tbs2", &ed.sign(b"tbs").to_bytes()).is_err());
    // RSA-PSS receipts: not supported for ledger keys.
    let ps = super::super::cose::CoseAlg::Assigned(iana::Algorithm::PS256);
    let Err(err) = PublicKey::from_cose_key(ps, &sample.cose_key()) else {
        panic!("PS256 accepted")
    };
    assert_eq!(err.to_string(), "PS256: not supported for ledger keys");
}
