//! The COSE_Sign1 envelope of a fragment (SP §7.3): shape, certificate chain, signature with the
//! leaf's key, issuer/feed, receipts.

use coset::cbor::value::Value;
use coset::{
    iana, CoseKey, CoseSign1, Header, KeyType, Label, RegisteredLabel, RegisteredLabelWithPrivate,
    TaggedCborSerializable,
};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::der::asn1::ObjectIdentifier;

use super::chain::{verify_chain, Cert};
use super::{go_type_name, FragmentError, MAX_CHAIN_LEN};

/// Protected header labels (IANA COSE Header Parameters) and CWT claim keys.
const LABEL_CWT_CLAIMS: i64 = 15;
const LABEL_X5CHAIN: i64 = 33;
const LABEL_RECEIPTS: i64 = 394;
const CWT_ISS: i64 = 1;
const CWT_SUB: i64 = 2;

/// The first bytes of a tagged COSE_Sign1: tag 18, array of 4.
const SIGN1_PREFIX: [u8; 2] = [0xD2, 0x84];

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A COSE receipt from the envelope's unprotected header (label 394), parsed but not validated
/// (validation against a ledger's keys, SP §7.8, is [`super::validate_receipt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The receipt as sent: a tagged COSE_Sign1 with a detached payload.
    pub raw: Vec<u8>,
    /// The protected `kid` (label 4), bytes the ledger uses as a string.
    pub kid: Vec<u8>,
    /// The CWT `iss` claim: the ledger.
    pub issuer: String,
    /// SHA-256 of the envelope re-encoded with an empty unprotected header: the `data_hash` the
    /// receipt's inclusion proofs must carry.
    pub expected_data_hash: [u8; 32],
}

/// An unpacked envelope whose chain and signature verified (SP §7.3). Issuer and feed are empty
/// when absent; the DID and the SVN are not checked yet ([`super::verify`] does).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// CWT `iss` (when CWT claims are present) or the protected text label `iss`; else empty.
    pub issuer: String,
    /// CWT `sub` (when CWT claims are present) or the protected text label `feed`; else empty.
    pub feed: String,
    /// Protected `content type` (label 3) when it is text.
    pub content_type: Option<String>,
    /// The embedded payload.
    pub payload: Vec<u8>,
    /// The certificate chain as sent, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// Parsed receipts (label 394), empty when there are none.
    pub receipts: Vec<Receipt>,
    /// The CWT claims map, when present.
    cwt_claims: Option<Vec<(Value, Value)>>,
    pub(super) certs: Vec<Cert>,
}

impl Envelope {
    /// Whether the protected header carries CWT claims (label 15).
    #[must_use]
    pub fn has_cwt_claims(&self) -> bool {
        self.cwt_claims.is_some()
    }

    /// The CWT claim under a text key (e.g. `"svn"`), if present.
    pub(super) fn cwt_claim_text(&self, key: &str) -> Option<&Value> {
        self.cwt_claims
            .as_ref()?
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
            .map(|(_, v)| v)
    }
}

/// SP §7.3: parses a tagged COSE_Sign1 and checks, in the Go guest's order: protected `alg`
/// present and an integer; protected `x5chain` a bstr or a non-empty array of bstr, each an X.509
/// DER certificate, 1..=100 of them; the chain verified (more than one certificate: last is the
/// only root, time = leaf `NotAfter`, any EKU); the signature (no external AAD) with the leaf's
/// key (ES256/384/512, PS256/384/512 with 2048-bit keys or more, EdDSA); CWT claims (label 15), if
/// present, a map; receipts (label 394), if present, well-formed.
///
/// Returns the envelope with issuer and feed read from the CWT claims (`iss` = 1, `sub` = 2) or,
/// without CWT claims, from the protected text labels `iss` and `feed`.
///
/// # Errors
/// The envelope variants of [`FragmentError`] (those for which
/// [`FragmentError::is_envelope_error`] holds).
pub fn unpack(cose: &[u8]) -> Result<Envelope, FragmentError> {
    if !cose.starts_with(&SIGN1_PREFIX) {
        return Err(FragmentError::NotTagged);
    }
    let msg = CoseSign1::from_tagged_slice(cose).map_err(|e| FragmentError::Cbor(e.to_string()))?;
    if msg.signature.is_empty() {
        return Err(FragmentError::EmptySignature);
    }
    for (_, value) in msg
        .protected
        .header
        .rest
        .iter()
        .chain(&msg.unprotected.rest)
    {
        if has_duplicate_keys(value) {
            return Err(FragmentError::Cbor("found duplicate map key".to_string()));
        }
    }
    let protected = &msg.protected.header;

    let alg = header_alg(protected)?;

    let ders: Vec<&[u8]> = match header_value(&protected.rest, &Label::Int(LABEL_X5CHAIN)) {
        None => return Err(FragmentError::X5ChainMissing),
        Some(Value::Bytes(one)) => vec![one.as_slice()],
        Some(Value::Array(many)) if !many.is_empty() => many
            .iter()
            .map(|v| match v {
                Value::Bytes(b) => Ok(b.as_slice()),
                _ => Err(FragmentError::X5ChainWrongType),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(FragmentError::X5ChainWrongType),
    };
    let certs = ders
        .iter()
        .map(|der| Cert::parse(der).map_err(FragmentError::MalformedCertificate))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() || certs.len() > MAX_CHAIN_LEN {
        return Err(FragmentError::UnreasonableChainLength(certs.len()));
    }
    if certs.len() > 1 {
        verify_chain(&certs).map_err(FragmentError::ChainVerification)?;
    }

    let leaf_key = PublicKey::from_leaf(alg, &certs[0])?;
    let Some(payload) = msg.payload.clone() else {
        return Err(FragmentError::MissingPayload);
    };
    leaf_key.verify(&msg.tbs_data(b""), &msg.signature)?;

    let cwt_claims = match header_value(&protected.rest, &Label::Int(LABEL_CWT_CLAIMS)) {
        None => None,
        Some(Value::Map(m)) => Some(m.clone()),
        Some(other) => return Err(FragmentError::CwtClaimsNotMap(go_type_name(other))),
    };
    let (issuer, feed) = match &cwt_claims {
        Some(claims) => (
            map_text(claims, &Value::from(CWT_ISS)),
            map_text(claims, &Value::from(CWT_SUB)),
        ),
        None => (
            header_text(&protected.rest, "iss"),
            header_text(&protected.rest, "feed"),
        ),
    };
    let content_type = match &protected.content_type {
        Some(RegisteredLabel::Text(t)) => Some(t.clone()),
        _ => None,
    };

    let receipts = match header_value(&msg.unprotected.rest, &Label::Int(LABEL_RECEIPTS)) {
        None => Vec::new(),
        Some(value) => parse_receipts(value, &msg).map_err(FragmentError::Receipts)?,
    };

    Ok(Envelope {
        issuer,
        feed,
        content_type,
        payload,
        chain: certs.iter().map(|c| c.der.clone()).collect(),
        receipts,
        cwt_claims,
        certs,
    })
}

/// The protected `alg` (label 1) as an integer algorithm: absent is
/// [`FragmentError::AlgorithmMissing`], text is [`FragmentError::AlgorithmWrongType`].
pub(super) fn header_alg(protected: &Header) -> Result<CoseAlg, FragmentError> {
    match &protected.alg {
        None => Err(FragmentError::AlgorithmMissing),
        Some(RegisteredLabelWithPrivate::Text(_)) => Err(FragmentError::AlgorithmWrongType),
        Some(RegisteredLabelWithPrivate::Assigned(a)) => Ok(CoseAlg::Assigned(*a)),
        Some(RegisteredLabelWithPrivate::PrivateUse(i)) => Ok(CoseAlg::Private(*i)),
    }
}

pub(super) fn header_value<'a>(rest: &'a [(Label, Value)], label: &Label) -> Option<&'a Value> {
    rest.iter().find(|(l, _)| l == label).map(|(_, v)| v)
}

/// A protected text label's value when it is a text string, else empty.
fn header_text(rest: &[(Label, Value)], label: &str) -> String {
    match header_value(rest, &Label::Text(label.to_string())) {
        Some(Value::Text(t)) => t.clone(),
        _ => String::new(),
    }
}

/// A map entry's value when it is a text string, else empty.
fn map_text(map: &[(Value, Value)], key: &Value) -> String {
    match map.iter().find(|(k, _)| k == key) {
        Some((_, Value::Text(t))) => t.clone(),
        _ => String::new(),
    }
}

/// Whether a map anywhere inside `value` repeats a key (the Go decoder refuses such headers).
/// Keys are compared by their CBOR encoding, in a hash set: linear in the header's size, which
/// the host chooses.
fn has_duplicate_keys(value: &Value) -> bool {
    match value {
        Value::Map(entries) => {
            let mut seen = std::collections::HashSet::with_capacity(entries.len());
            entries.iter().any(|(k, _)| {
                let mut encoded = Vec::new();
                // Encoding into a Vec cannot fail; a key that did would count as repeated.
                coset::cbor::ser::into_writer(k, &mut encoded).is_err() || !seen.insert(encoded)
            }) || entries
                .iter()
                .any(|(k, v)| has_duplicate_keys(k) || has_duplicate_keys(v))
        }
        Value::Array(items) => items.iter().any(has_duplicate_keys),
        Value::Tag(_, inner) => has_duplicate_keys(inner),
        _ => false,
    }
}

/// The protected `alg` as an integer algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CoseAlg {
    Assigned(iana::Algorithm),
    Private(i64),
}

impl CoseAlg {
    fn name(self) -> String {
        match self {
            Self::Assigned(iana::Algorithm::ES256) => "ES256".to_string(),
            Self::Assigned(iana::Algorithm::ES384) => "ES384".to_string(),
            Self::Assigned(iana::Algorithm::ES512) => "ES512".to_string(),
            Self::Assigned(iana::Algorithm::PS256) => "PS256".to_string(),
            Self::Assigned(iana::Algorithm::PS384) => "PS384".to_string(),
            Self::Assigned(iana::Algorithm::PS512) => "PS512".to_string(),
            Self::Assigned(iana::Algorithm::EdDSA) => "EdDSA".to_string(),
            Self::Assigned(a) => format!("Algorithm({})", a as i64),
            Self::Private(i) => format!("Algorithm({i})"),
        }
    }
}

/// Hash function named by an ES*/PS* algorithm.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha384 => Sha384::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// A public key fit for a COSE algorithm: the envelope leaf's ([`PublicKey::from_leaf`]), or a
/// ledger's for its receipts ([`PublicKey::from_cose_key`], SP §7.8).
pub(super) enum PublicKey {
    P256(Hash, p256::ecdsa::VerifyingKey),
    P384(Hash, p384::ecdsa::VerifyingKey),
    P521(Hash, p521::ecdsa::VerifyingKey),
    Rsa(Hash, rsa::RsaPublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    /// The verifier for `alg` with the leaf's key (go-cose `NewVerifier`): the algorithm
    /// decides the hash and the padding, the key decides the curve.
    fn from_leaf(alg: CoseAlg, leaf: &Cert) -> Result<Self, FragmentError> {
        let spki = &leaf.cert.tbs_certificate.subject_public_key_info;
        let key_bytes = spki.subject_public_key.raw_bytes();
        let key_oid = spki.algorithm.oid;
        let invalid_key = || FragmentError::Verifier(format!("{}: invalid public key", alg.name()));
        let unsupported = |reason: &str| {
            FragmentError::Verifier(format!(
                "can't create new Verifier for {}: {reason}: algorithm not supported",
                alg.name()
            ))
        };
        let CoseAlg::Assigned(assigned) = alg else {
            return Err(unsupported("unknown algorithm"));
        };
        let hash = match assigned {
            iana::Algorithm::ES256 | iana::Algorithm::PS256 => Hash::Sha256,
            iana::Algorithm::ES384 | iana::Algorithm::PS384 => Hash::Sha384,
            iana::Algorithm::ES512 | iana::Algorithm::PS512 => Hash::Sha512,
            iana::Algorithm::EdDSA => {
                if key_oid != OID_ED25519 {
                    return Err(invalid_key());
                }
                let bytes: &[u8; 32] = key_bytes.try_into().map_err(|_| invalid_key())?;
                return ed25519_dalek::VerifyingKey::from_bytes(bytes)
                    .map(Self::Ed25519)
                    .map_err(|_| invalid_key());
            }
            iana::Algorithm::Reserved => return Err(unsupported("can't be implemented")),
            iana::Algorithm::RS256 | iana::Algorithm::RS384 | iana::Algorithm::RS512 => {
                return Err(unsupported("no built-in implementation available"))
            }
            _ => return Err(unsupported("unknown algorithm")),
        };
        match assigned {
            iana::Algorithm::ES256 | iana::Algorithm::ES384 | iana::Algorithm::ES512 => {
                if key_oid != OID_EC_PUBLIC_KEY {
                    return Err(invalid_key());
                }
                let curve: ObjectIdentifier = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as().ok())
                    .ok_or_else(invalid_key)?;
                if curve == OID_P256 {
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                        .map(|k| Self::P256(hash, k))
                        .map_err(|_| invalid_key())
                } else if curve == OID_P384 {
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                        .map(|k| Self::P384(hash, k))
                        .map_err(|_| invalid_key())
                } else if curve == OID_P521 {
                    p521::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                        .map(|k| Self::P521(hash, k))
                        .map_err(|_| invalid_key())
                } else {
                    Err(invalid_key())
                }
            }
            _ => {
                if key_oid != OID_RSA {
                    return Err(invalid_key());
                }
                use rsa::pkcs1::DecodeRsaPublicKey;
                use rsa::traits::PublicKeyParts;
                let key =
                    rsa::RsaPublicKey::from_pkcs1_der(key_bytes).map_err(|_| invalid_key())?;
                if key.n().bits() < 2048 {
                    return Err(FragmentError::Verifier(
                        "RSA key must be at least 2048 bits long".to_string(),
                    ));
                }
                Ok(Self::Rsa(hash, key))
            }
        }
    }

    /// The verifier for `alg` with a ledger's COSE_Key (SP §7.8, §7.9): an EC2 key on P-256,
    /// P-384 or P-521 for ES256/384/512 (as for a leaf, the algorithm decides the hash and the
    /// key the curve; the point may be compressed), an OKP Ed25519 key for EdDSA. A key that
    /// names an algorithm must name `alg`.
    ///
    /// Errors ([`FragmentError::Verifier`]): another algorithm (RSA ledger keys are not
    /// supported), a key of another type or curve, a point that does not parse, or a key
    /// restricted to another algorithm.
    pub(super) fn from_cose_key(alg: CoseAlg, key: &CoseKey) -> Result<Self, FragmentError> {
        let invalid_key = || FragmentError::Verifier(format!("{}: invalid public key", alg.name()));
        let CoseAlg::Assigned(assigned) = alg else {
            return Err(FragmentError::Verifier(format!(
                "{}: not supported for ledger keys",
                alg.name()
            )));
        };
        if key
            .alg
            .as_ref()
            .is_some_and(|a| *a != RegisteredLabelWithPrivate::Assigned(assigned))
        {
            return Err(FragmentError::Verifier(format!(
                "{}: the key is restricted to another algorithm",
                alg.name()
            )));
        }
        let param = |label: i64| {
            key.params
                .iter()
                .find(|(l, _)| *l == Label::Int(label))
                .map(|(_, v)| v)
        };
        let hash = match assigned {
            iana::Algorithm::ES256 => Hash::Sha256,
            iana::Algorithm::ES384 => Hash::Sha384,
            iana::Algorithm::ES512 => Hash::Sha512,
            iana::Algorithm::EdDSA => {
                let ed25519 = Value::from(iana::EllipticCurve::Ed25519 as i64);
                if key.kty != KeyType::Assigned(iana::KeyType::OKP)
                    || param(iana::OkpKeyParameter::Crv as i64) != Some(&ed25519)
                {
                    return Err(invalid_key());
                }
                let Some(Value::Bytes(x)) = param(iana::OkpKeyParameter::X as i64) else {
                    return Err(invalid_key());
                };
                let bytes: &[u8; 32] = x.as_slice().try_into().map_err(|_| invalid_key())?;
                return ed25519_dalek::VerifyingKey::from_bytes(bytes)
                    .map(Self::Ed25519)
                    .map_err(|_| invalid_key());
            }
            _ => {
                return Err(FragmentError::Verifier(format!(
                    "{}: not supported for ledger keys",
                    alg.name()
                )))
            }
        };
        if key.kty != KeyType::Assigned(iana::KeyType::EC2) {
            return Err(invalid_key());
        }
        let point = key.to_sec1_octet_string().map_err(|_| invalid_key())?;
        let curve = param(iana::Ec2KeyParameter::Crv as i64)
            .and_then(Value::as_integer)
            .map(i128::from);
        let is = |c: iana::EllipticCurve| curve == Some(i128::from(c as i64));
        if is(iana::EllipticCurve::P_256) {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(|k| Self::P256(hash, k))
                .map_err(|_| invalid_key())
        } else if is(iana::EllipticCurve::P_384) {
            p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(|k| Self::P384(hash, k))
                .map_err(|_| invalid_key())
        } else if is(iana::EllipticCurve::P_521) {
            p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(|k| Self::P521(hash, k))
                .map_err(|_| invalid_key())
        } else {
            Err(invalid_key())
        }
    }

    /// Verifies `signature` over the Sig_structure `tbs`: ECDSA with a raw `r || s` signature
    /// over the algorithm's hash (RFC 9053 §2.1), RSASSA-PSS with a salt as long as the hash,
    /// or Ed25519.
    pub(super) fn verify(&self, tbs: &[u8], signature: &[u8]) -> Result<(), FragmentError> {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        let ok = match self {
            Self::P256(hash, key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_prehash(&hash.digest(tbs), &sig).is_ok()),
            Self::P384(hash, key) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_prehash(&hash.digest(tbs), &sig).is_ok()),
            Self::P521(hash, key) => p521::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_prehash(&hash.digest(tbs), &sig).is_ok()),
            Self::Rsa(hash, key) => {
                let scheme = match hash {
                    Hash::Sha256 => rsa::Pss::new::<Sha256>(),
                    Hash::Sha384 => rsa::Pss::new::<Sha384>(),
                    Hash::Sha512 => rsa::Pss::new::<Sha512>(),
                };
                key.verify(scheme, &hash.digest(tbs), signature).is_ok()
            }
            Self::Ed25519(key) => {
                use ed25519_dalek::Verifier;
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(tbs, &sig).is_ok())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(FragmentError::BadSignature)
        }
    }
}

/// Parses the unprotected receipts (label 394): an array of bstr, each a tagged COSE_Sign1 with a
/// protected `kid` and protected CWT claims carrying a text `iss`.
fn parse_receipts(value: &Value, envelope: &CoseSign1) -> Result<Vec<Receipt>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "receipts header is not an array (got {})",
            go_type_name(value)
        ));
    };
    let mut receipts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Bytes(raw) = item else {
            return Err(format!(
                "receipt {i} is not a byte string (got {})",
                go_type_name(item)
            ));
        };
        if !raw.starts_with(&SIGN1_PREFIX) {
            return Err(format!(
                "receipt {i}: parsing COSE_Sign1: cbor: invalid COSE_Sign1_Tagged object"
            ));
        }
        let msg = CoseSign1::from_tagged_slice(raw)
            .map_err(|e| format!("receipt {i}: parsing COSE_Sign1: cbor: {e}"))?;
        let header = &msg.protected.header;
        if header.key_id.is_empty() {
            return Err(format!("receipt {i}: kid header missing"));
        }
        let issuer = match header_value(&header.rest, &Label::Int(LABEL_CWT_CLAIMS)) {
            None => return Err(format!("receipt {i}: CWT claims missing")),
            Some(Value::Map(claims)) => {
                match claims.iter().find(|(k, _)| *k == Value::from(CWT_ISS)) {
                    None => {
                        return Err(format!(
                            "receipt {i}: issuer (iss) claim missing from CWT claims"
                        ))
                    }
                    Some((_, Value::Text(t))) => t.clone(),
                    Some((_, other)) => {
                        return Err(format!(
                            "receipt {i}: issuer is not a string (got {})",
                            go_type_name(other)
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "receipt {i}: CWT claims is not a map (got {})",
                    go_type_name(other)
                ))
            }
        };
        receipts.push(Receipt {
            raw: raw.clone(),
            kid: header.key_id.clone(),
            issuer,
            expected_data_hash: [0; 32],
        });
    }
    if !receipts.is_empty() {
        let hash = signed_statement_hash(envelope)
            .map_err(|e| format!("computing signed statement data hash: {e}"))?;
        for r in &mut receipts {
            r.expected_data_hash = hash;
        }
    }
    Ok(receipts)
}

/// SHA-256 of the envelope re-encoded as a tagged COSE_Sign1 with an empty unprotected map, in
/// canonical CBOR (SP §7.3): coset keeps the protected header's bytes as they were sent, and
/// writes the payload and signature byte strings with their shortest length encodings.
fn signed_statement_hash(envelope: &CoseSign1) -> Result<[u8; 32], String> {
    let mut statement = envelope.clone();
    statement.unprotected = coset::Header::default();
    let encoded = statement.to_tagged_vec().map_err(|e| e.to_string())?;
    Ok(Sha256::digest(encoded).into())
}
