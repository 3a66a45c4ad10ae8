//! Fragment envelopes signed here with chains built here (root CA → intermediate → leaf).

use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use coset::cbor::value::Value;
use coset::{
    iana, CborSerializable, CoseSign1, CoseSign1Builder, Header, HeaderBuilder,
    TaggedCborSerializable,
};
use p256::ecdsa::signature::{SignatureEncoding, Signer};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::der::asn1::{BitString, Ia5String, ObjectIdentifier, OctetString, UtcTime};
use x509_cert::der::{Any, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use super::*;

// ---------------------------------------------------------------------------------------------
// Keys and certificates

const Y2024: u64 = 1_704_067_200;
const Y2025: u64 = 1_735_689_600;
const Y2026: u64 = 1_767_225_600;
const Y2034: u64 = 2_019_686_400;

const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
const CUSTOM_EKU: &str = "1.3.6.1.4.1.311.76.59.1.2";
const LEAF_SUBJECT: &str = "CN=Contoso Fragment Signer,O=Contoso Ltd,C=US";
const INTER_SUBJECT: &str = "CN=Contoso Intermediate CA,O=Contoso Ltd";
const ROOT_SUBJECT: &str = "CN=Contoso Root CA,O=Contoso Ltd";

enum Key {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl Key {
    fn p256(seed: u8) -> Self {
        Self::P256(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap())
    }

    fn p384(seed: u8) -> Self {
        Self::P384(p384::ecdsa::SigningKey::from_slice(&[seed; 48]).unwrap())
    }

    fn ed25519(seed: u8) -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    fn spki(&self) -> SubjectPublicKeyInfoOwned {
        let ec = |curve: &str, point: &[u8]| SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.2.840.10045.2.1"),
                parameters: Some(Any::from(ObjectIdentifier::new_unwrap(curve))),
            },
            subject_public_key: BitString::from_bytes(point).unwrap(),
        };
        match self {
            Self::P256(k) => ec(
                "1.2.840.10045.3.1.7",
                k.verifying_key().to_encoded_point(false).as_bytes(),
            ),
            Self::P384(k) => ec(
                "1.3.132.0.34",
                k.verifying_key().to_encoded_point(false).as_bytes(),
            ),
            Self::Ed25519(k) => SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: ObjectIdentifier::new_unwrap("1.3.101.112"),
                    parameters: None,
                },
                subject_public_key: BitString::from_bytes(k.verifying_key().as_bytes()).unwrap(),
            },
        }
    }

    /// The certificate signature algorithm this key signs with.
    fn cert_alg(&self) -> AlgorithmIdentifierOwned {
        let oid = match self {
            Self::P256(_) => "1.2.840.10045.4.3.2",
            Self::P384(_) => "1.2.840.10045.4.3.3",
            Self::Ed25519(_) => "1.3.101.112",
        };
        AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap(oid),
            parameters: None,
        }
    }

    fn sign_cert(&self, tbs: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::DerSignature = k.sign(tbs);
                sig.to_vec()
            }
            Self::P384(k) => {
                let sig: p384::ecdsa::DerSignature = k.sign(tbs);
                sig.to_vec()
            }
            Self::Ed25519(k) => k.sign(tbs).to_bytes().to_vec(),
        }
    }

    /// A COSE signature: raw `r || s` for ECDSA.
    fn sign_cose(&self, tbs: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(tbs);
                sig.to_bytes().to_vec()
            }
            Self::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(tbs);
                sig.to_bytes().to_vec()
            }
            Self::Ed25519(k) => k.sign(tbs).to_bytes().to_vec(),
        }
    }

    fn cose_alg(&self) -> iana::Algorithm {
        match self {
            Self::P256(_) => iana::Algorithm::ES256,
            Self::P384(_) => iana::Algorithm::ES384,
            Self::Ed25519(_) => iana::Algorithm::EdDSA,
        }
    }
}

fn ext<T: Encode>(id: &str, critical: bool, value: &T) -> Extension {
    raw_ext(id, critical, value.to_der().unwrap())
}

fn raw_ext(id: &str, critical: bool, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: ObjectIdentifier::new_unwrap(id),
        critical,
        extn_value: OctetString::new(value).unwrap(),
    }
}

fn basic_constraints(ca: bool, path_len: Option<u8>) -> Extension {
    ext(
        "2.5.29.19",
        true,
        &BasicConstraints {
            ca,
            path_len_constraint: path_len,
        },
    )
}

fn key_usage(usages: KeyUsage) -> Extension {
    ext("2.5.29.15", true, &usages)
}

fn ext_key_usage(oids: &[&str]) -> Extension {
    let list = oids
        .iter()
        .map(|o| ObjectIdentifier::new_unwrap(o))
        .collect();
    ext("2.5.29.37", false, &ExtendedKeyUsage(list))
}

fn ca_extensions(path_len: Option<u8>) -> Vec<Extension> {
    vec![
        basic_constraints(true, path_len),
        key_usage(KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)),
    ]
}

fn leaf_extensions() -> Vec<Extension> {
    let ia5 = |s: &str| Ia5String::new(s).unwrap();
    let san = SubjectAltName(vec![
        GeneralName::DnsName(ia5("fragments.contoso.com")),
        GeneralName::Rfc822Name(ia5("signer@contoso.com")),
        GeneralName::UniformResourceIdentifier(ia5("https://contoso.com/fragments")),
        GeneralName::IpAddress(OctetString::new(vec![10, 1, 2, 3]).unwrap()),
    ]);
    vec![
        basic_constraints(false, None),
        key_usage(KeyUsage(KeyUsages::DigitalSignature.into())),
        ext_key_usage(&[CUSTOM_EKU, CODE_SIGNING]),
        ext("2.5.29.17", false, &san),
        raw_ext(
            "1.3.6.1.4.1.57264.1.1",
            false,
            b"https://token.actions.example.com".to_vec(),
        ),
    ]
}

struct CertSpec<'a> {
    subject: &'a str,
    issuer: &'a str,
    serial: u8,
    not_before: u64,
    not_after: u64,
    extensions: Vec<Extension>,
}

fn utc(secs: u64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(secs)).unwrap())
}

/// A certificate for `subject_key`, signed by `issuer_key`, as DER.
fn issue(spec: CertSpec<'_>, subject_key: &Key, issuer_key: &Key) -> Vec<u8> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[spec.serial]).unwrap(),
        signature: issuer_key.cert_alg(),
        issuer: Name::from_str(spec.issuer).unwrap(),
        validity: Validity {
            not_before: utc(spec.not_before),
            not_after: utc(spec.not_after),
        },
        subject: Name::from_str(spec.subject).unwrap(),
        subject_public_key_info: subject_key.spki(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: if spec.extensions.is_empty() {
            None
        } else {
            Some(spec.extensions)
        },
    };
    let signature = issuer_key.sign_cert(&tbs.to_der().unwrap());
    Certificate {
        signature_algorithm: issuer_key.cert_alg(),
        tbs_certificate: tbs,
        signature: BitString::from_bytes(&signature).unwrap(),
    }
    .to_der()
    .unwrap()
}

fn ca_spec<'a>(subject: &'a str, issuer: &'a str, serial: u8) -> CertSpec<'a> {
    CertSpec {
        subject,
        issuer,
        serial,
        not_before: Y2024,
        not_after: Y2034,
        extensions: ca_extensions(None),
    }
}

fn leaf_spec(extensions: Vec<Extension>) -> CertSpec<'static> {
    CertSpec {
        subject: LEAF_SUBJECT,
        issuer: INTER_SUBJECT,
        serial: 3,
        not_before: Y2025,
        not_after: Y2026,
        extensions,
    }
}

/// Root → intermediate → leaf, with the keys that go with them.
struct Pki {
    root_key: Key,
    inter_key: Key,
    leaf_key: Key,
    root: Vec<u8>,
    inter: Vec<u8>,
    leaf: Vec<u8>,
}

impl Pki {
    /// The default chain with the root issued with `extensions` instead of the CA defaults.
    fn with_root_extensions(extensions: Vec<Extension>) -> Self {
        let mut pki = Self::new();
        let mut spec = ca_spec(ROOT_SUBJECT, ROOT_SUBJECT, 1);
        spec.extensions = extensions;
        pki.root = issue(spec, &pki.root_key, &pki.root_key);
        pki
    }

    /// The default chain with the intermediate issued with `extensions` instead of the CA
    /// defaults.
    fn with_inter_extensions(extensions: Vec<Extension>) -> Self {
        let mut pki = Self::new();
        let mut spec = ca_spec(INTER_SUBJECT, ROOT_SUBJECT, 2);
        spec.extensions = extensions;
        pki.inter = issue(spec, &pki.inter_key, &pki.root_key);
        pki
    }

    /// An all-P-256 chain with the default leaf.
    fn new() -> Self {
        Self::with(Key::p256(1), Key::p256(2), Key::p256(3), leaf_extensions())
    }

    fn with(root_key: Key, inter_key: Key, leaf_key: Key, leaf_exts: Vec<Extension>) -> Self {
        let root = issue(ca_spec(ROOT_SUBJECT, ROOT_SUBJECT, 1), &root_key, &root_key);
        let inter = issue(
            ca_spec(INTER_SUBJECT, ROOT_SUBJECT, 2),
            &inter_key,
            &root_key,
        );
        let leaf = issue(leaf_spec(leaf_exts), &leaf_key, &inter_key);
        Self {
            root_key,
            inter_key,
            leaf_key,
            root,
            inter,
            leaf,
        }
    }

    /// The same root and intermediate with another leaf (same key).
    fn reissue_leaf(&mut self, spec: CertSpec<'_>) {
        self.leaf = issue(spec, &self.leaf_key, &self.inter_key);
    }

    fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.leaf.clone(), self.inter.clone(), self.root.clone()]
    }

    /// `did:x509:0:sha256:<root fingerprint>::<policy>`.
    fn did(&self, policy: &str) -> String {
        did_with(&self.root, policy)
    }
}

fn did_with(ca: &[u8], policy: &str) -> String {
    format!(
        "did:x509:0:sha256:{}::{policy}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(ca))
    )
}

fn subject_did(pki: &Pki) -> String {
    pki.did("subject:CN:Contoso%20Fragment%20Signer")
}

// ---------------------------------------------------------------------------------------------
// Envelopes

fn x5chain(chain: &[Vec<u8>]) -> Value {
    Value::Array(chain.iter().map(|c| Value::Bytes(c.clone())).collect())
}

fn cwt(iss: &str, sub: &str, svn: Option<Value>) -> Value {
    let mut claims = vec![
        (Value::from(1), Value::Text(iss.to_string())),
        (Value::from(2), Value::Text(sub.to_string())),
    ];
    if let Some(svn) = svn {
        claims.push((Value::Text("svn".to_string()), svn));
    }
    Value::Map(claims)
}

/// The usual protected header: alg of the leaf key, the chain, CWT claims.
fn protected(pki: &Pki, claims: Value) -> HeaderBuilder {
    HeaderBuilder::new()
        .algorithm(pki.leaf_key.cose_alg())
        .content_type("application/unknown+rego".to_string())
        .value(33, x5chain(&pki.chain()))
        .value(15, claims)
}

fn sign(key: &Key, protected: Header, unprotected: Header, payload: &[u8]) -> CoseSign1 {
    CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .payload(payload.to_vec())
        .create_signature(b"", |tbs| key.sign_cose(tbs))
        .build()
}

const REGO: &[u8] = b"package contoso\n\nsvn := \"1\"\n";

fn good_envelope(pki: &Pki) -> Vec<u8> {
    let header = protected(
        pki,
        cwt(
            &subject_did(pki),
            "contoso.azurecr.io/infra",
            Some(Value::from(3)),
        ),
    );
    sign(&pki.leaf_key, header.build(), Header::default(), REGO)
        .to_tagged_vec()
        .unwrap()
}

fn envelope_with(pki: &Pki, header: HeaderBuilder) -> Vec<u8> {
    sign(&pki.leaf_key, header.build(), Header::default(), REGO)
        .to_tagged_vec()
        .unwrap()
}

/// For the guest's tests: `payload` in an envelope signed by a chain of P-256 keys made from
/// `seed` (another seed, another root: another issuer), issued as
/// `did:x509:…::subject:CN:Contoso Fragment Signer` for `feed` with header SVN `svn`. The
/// envelope and its issuer.
pub(crate) fn signed(seed: u8, feed: &str, svn: Option<i64>, payload: &[u8]) -> (Vec<u8>, String) {
    let pki = Pki::with(
        Key::p256(seed),
        Key::p256(seed.wrapping_add(1)),
        Key::p256(seed.wrapping_add(2)),
        leaf_extensions(),
    );
    let issuer = subject_did(&pki);
    let header = protected(&pki, cwt(&issuer, feed, svn.map(Value::from)));
    let envelope = sign(&pki.leaf_key, header.build(), Header::default(), payload)
        .to_tagged_vec()
        .unwrap();
    (envelope, issuer)
}

fn did_err(e: FragmentError) -> String {
    match e {
        FragmentError::Did(text) => text,
        other => panic!("expected a DID error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The good path

#[test]
fn good_envelope_verifies() {
    let pki = Pki::new();
    let v = verify(&good_envelope(&pki)).unwrap();
    assert_eq!(v.issuer, subject_did(&pki));
    assert_eq!(v.feed, "contoso.azurecr.io/infra");
    assert_eq!(v.header_svn, Some(3));
    assert_eq!(v.payload, REGO);
    assert_eq!(v.content_type.as_deref(), Some("application/unknown+rego"));
    assert_eq!(v.chain, pki.chain());
    assert!(v.receipts.is_empty());
    verify_signature_only(&good_envelope(&pki)).unwrap();
}

#[test]
fn issuer_and_feed_from_protected_text_labels_without_cwt() {
    let pki = Pki::new();
    let header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, x5chain(&pki.chain()))
        .text_value("iss".to_string(), Value::Text(subject_did(&pki)))
        .text_value("feed".to_string(), Value::Text("contoso/feed".to_string()))
        // Ignored without CWT claims.
        .text_value("svn".to_string(), Value::from(9));
    let v = verify(&envelope_with(&pki, header)).unwrap();
    assert_eq!(v.issuer, subject_did(&pki));
    assert_eq!(v.feed, "contoso/feed");
    assert_eq!(v.header_svn, None);
}

#[test]
fn cwt_claims_win_over_text_labels_and_svn_is_optional() {
    let pki = Pki::new();
    let header = protected(&pki, cwt(&subject_did(&pki), "cwt/feed", None))
        .text_value("feed".to_string(), Value::Text("text/feed".to_string()));
    let v = verify(&envelope_with(&pki, header)).unwrap();
    assert_eq!(v.feed, "cwt/feed");
    assert_eq!(v.header_svn, None);
}

#[test]
fn p384_chain_with_es384() {
    let pki = Pki::with(Key::p384(1), Key::p384(2), Key::p384(3), leaf_extensions());
    let v = verify(&good_envelope(&pki)).unwrap();
    assert_eq!(v.header_svn, Some(3));
}

#[test]
fn mixed_curves_and_ed25519_leaf() {
    // P-384 root signs a P-256 intermediate, which signs an Ed25519 leaf; the envelope is EdDSA.
    let pki = Pki::with(
        Key::p384(4),
        Key::p256(5),
        Key::ed25519(6),
        leaf_extensions(),
    );
    let v = verify(&good_envelope(&pki)).unwrap();
    assert_eq!(v.payload, REGO);
}

#[test]
fn sha384_and_sha512_fingerprints_of_any_non_leaf() {
    let pki = Pki::new();
    let policy = "subject:CN:Contoso%20Fragment%20Signer";
    for (alg, digest) in [
        ("sha384", Sha384::digest(&pki.inter).to_vec()),
        ("sha512", Sha512::digest(&pki.root).to_vec()),
    ] {
        let did = format!(
            "did:x509:0:{alg}:{}::{policy}",
            URL_SAFE_NO_PAD.encode(digest)
        );
        resolve_did_x509(&did, &pki.chain()).unwrap();
    }
    resolve_did_x509(&did_with(&pki.inter, policy), &pki.chain()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// did:x509 policies (SP §7.4)

#[test]
fn subject_policy() {
    let pki = Pki::new();
    let chain = pki.chain();
    for policy in [
        "subject:CN:Contoso%20Fragment%20Signer",
        "subject:CN:Contoso+Fragment+Signer",
        "subject:cn:Contoso%20Fragment%20Signer:O:Contoso%20Ltd:C:US",
        "subject:2.5.4.10:Contoso%20Ltd",
        "subject:C:US::subject:O:Contoso%20Ltd",
    ] {
        resolve_did_x509(&pki.did(policy), &chain).unwrap_or_else(|e| panic!("{policy}: {e}"));
    }
    let cases = [
        (
            "subject:CN:Someone%20Else",
            "invalid subject value: CN=Someone Else",
        ),
        ("subject:CN", "key-value pairs required"),
        ("subject:CN:a:O", "key-value pairs required"),
        (
            "subject:CN:Contoso%20Fragment%20Signer:cn:b",
            "duplicate field 'CN'",
        ),
        ("subject:ST:WA", "unsupported subject key: ST"),
        ("subject:OU:Infra", "invalid subject value: OU=Infra"),
        (
            "subject:CN:bad%zzescape",
            "urlUnescape failed: invalid URL escape \"%zz\"",
        ),
    ];
    for (policy, reason) in cases {
        let err = did_err(resolve_did_x509(&pki.did(policy), &chain).unwrap_err());
        assert_eq!(
            err,
            format!("DID verification failed: {reason}"),
            "{policy}"
        );
    }
}

#[test]
fn san_policy() {
    let pki = Pki::new();
    let chain = pki.chain();
    for policy in [
        "san:dns:fragments.contoso.com",
        "san:email:signer%40contoso.com",
        "san:uri:https%3A%2F%2Fcontoso.com%2Ffragments",
        "san:ipaddress:10.1.2.3",
    ] {
        resolve_did_x509(&pki.did(policy), &chain).unwrap_or_else(|e| panic!("{policy}: {e}"));
    }
    let cases = [
        (
            "san:dns:other.contoso.com",
            "SAN not found: other.contoso.com",
        ),
        ("san:ipaddress:10.1.2.4", "SAN not found: 10.1.2.4"),
        ("san:dirname:x", "unknown SAN type: dirname"),
        ("san:dns", "exactly one SAN type and value required"),
        ("san:dns:a:b", "exactly one SAN type and value required"),
    ];
    for (policy, reason) in cases {
        let err = did_err(resolve_did_x509(&pki.did(policy), &chain).unwrap_err());
        assert_eq!(
            err,
            format!("DID verification failed: {reason}"),
            "{policy}"
        );
    }
}

#[test]
fn eku_policy() {
    let pki = Pki::new();
    let chain = pki.chain();
    resolve_did_x509(&pki.did(&format!("eku:{CUSTOM_EKU}")), &chain).unwrap();
    // A standard EKU matches too, once the leaf has a non-standard one.
    resolve_did_x509(&pki.did(&format!("eku:{CODE_SIGNING}")), &chain).unwrap();
    let err = did_err(resolve_did_x509(&pki.did("eku:1.2.3.4"), &chain).unwrap_err());
    assert_eq!(err, "DID verification failed: EKU not found: 1.2.3.4");
    let err = did_err(resolve_did_x509(&pki.did("eku:1.x"), &chain).unwrap_err());
    assert_eq!(
        err,
        "DID verification failed: oidFromString failed: invalid OID"
    );

    // SP §13 item 11: only standard EKUs on the leaf → refused before matching.
    let mut pki = Pki::new();
    pki.reissue_leaf(leaf_spec(vec![
        basic_constraints(false, None),
        key_usage(KeyUsage(KeyUsages::DigitalSignature.into())),
        ext_key_usage(&[CODE_SIGNING]),
    ]));
    let err = did_err(
        resolve_did_x509(&pki.did(&format!("eku:{CODE_SIGNING}")), &pki.chain()).unwrap_err(),
    );
    assert_eq!(
        err,
        "DID verification failed: no EKU extension in certificate"
    );
}

#[test]
fn fulcio_issuer_policy() {
    let pki = Pki::new();
    let chain = pki.chain();
    resolve_did_x509(&pki.did("fulcio-issuer:token.actions.example.com"), &chain).unwrap();
    let err =
        did_err(resolve_did_x509(&pki.did("fulcio-issuer:other.example"), &chain).unwrap_err());
    assert_eq!(
        err,
        "DID verification failed: invalid fulcio-issuer: https://other.example"
    );
}

#[test]
fn did_syntax_errors() {
    let pki = Pki::new();
    let chain = pki.chain();
    let fp = URL_SAFE_NO_PAD.encode(Sha256::digest(&pki.root));
    let cases = [
        (format!("did:x509:0:sha256:{fp}"), "invalid DID string"),
        (
            format!("did:web:0:sha256:{fp}::subject:CN:x"),
            "unsupported method/prefix",
        ),
        (
            "did:x509:0:sha256::subject:CN:x".to_string(),
            "unsupported method/prefix",
        ),
        (
            format!("did:x509:1:sha256:{fp}::subject:CN:x"),
            "unsupported did:x509 version",
        ),
        (
            format!("did:x509:0:md5:{fp}::subject:CN:x"),
            "unsupported hash algorithm",
        ),
        (format!("did:x509:0:sha256:{fp}::"), "invalid policy"),
        (format!("did:x509:0:sha256:{fp}::subject"), "invalid policy"),
        (
            format!("did:x509:0:sha256:{fp}::issuer:CN:x"),
            "unsupported did:x509 policy name 'issuer'",
        ),
    ];
    for (did, reason) in cases {
        let err = did_err(resolve_did_x509(&did, &chain).unwrap_err());
        assert_eq!(err, format!("DID verification failed: {reason}"), "{did}");
    }
}

#[test]
fn wrong_fingerprint_and_leaf_fingerprint_are_refused() {
    let pki = Pki::new();
    let chain = pki.chain();
    let other_root = issue(
        ca_spec(ROOT_SUBJECT, ROOT_SUBJECT, 9),
        &Key::p256(9),
        &Key::p256(9),
    );
    let policy = "subject:CN:Contoso%20Fragment%20Signer";
    for did in [did_with(&other_root, policy), did_with(&pki.leaf, policy)] {
        let err = did_err(resolve_did_x509(&did, &chain).unwrap_err());
        assert_eq!(
            err,
            "DID verification failed: unexpected certificate fingerprint"
        );
    }
    // Through the envelope too.
    let header = protected(&pki, cwt(&did_with(&pki.leaf, policy), "feed", None));
    let err = verify(&envelope_with(&pki, header)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to resolve DID: DID verification failed: unexpected certificate fingerprint"
    );
    assert!(!err.is_envelope_error());
}

#[test]
fn leaf_key_usage_must_allow_signing_or_key_agreement() {
    let mut pki = Pki::new();
    pki.reissue_leaf(leaf_spec(vec![key_usage(KeyUsage(
        KeyUsages::KeyEncipherment.into(),
    ))]));
    let err = did_err(resolve_did_x509(&subject_did(&pki), &pki.chain()).unwrap_err());
    assert_eq!(
        err,
        "DID document creation failed: leaf certificate key usage must include digital signature \
         or key agreement"
    );
    // No key usage at all is fine.
    pki.reissue_leaf(leaf_spec(Vec::new()));
    resolve_did_x509(&subject_did(&pki), &pki.chain()).unwrap();
}

#[test]
fn one_certificate_chain_is_refused_by_did_resolution_without_panic() {
    // A self-signed leaf alone: the envelope unpacks (nothing to chain-check)...
    let key = Key::p256(7);
    let subject = "CN=Lonely Signer";
    let leaf = issue(
        CertSpec {
            subject,
            issuer: subject,
            serial: 7,
            not_before: Y2025,
            not_after: Y2026,
            extensions: Vec::new(),
        },
        &key,
        &key,
    );
    let did = did_with(&leaf, "subject:CN:Lonely%20Signer");
    let header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, Value::Bytes(leaf.clone()))
        .value(15, cwt(&did, "feed", Some(Value::from(1))));
    let cose = sign(&key, header.build(), Header::default(), REGO)
        .to_tagged_vec()
        .unwrap();
    let envelope = unpack(&cose).unwrap();
    assert_eq!(envelope.chain, vec![leaf.clone()]);
    verify_signature_only(&cose).unwrap();
    // ...but the DID cannot resolve.
    let err = verify(&cose).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to resolve DID: DID verification failed: certificate chain too short"
    );
    let err = did_err(resolve_did_x509(&did, &[leaf]).unwrap_err());
    assert_eq!(err, "DID verification failed: certificate chain too short");
    assert_eq!(
        did_err(resolve_did_x509(&did, &[]).unwrap_err()),
        "no certificate chain"
    );
}

// ---------------------------------------------------------------------------------------------
// Signatures and chains (SP §7.3)

#[test]
fn flipped_payload_or_signature_byte_is_refused() {
    let pki = Pki::new();
    let header = protected(&pki, cwt(&subject_did(&pki), "feed", None)).build();
    let mut msg = sign(&pki.leaf_key, header.clone(), Header::default(), REGO);
    msg.payload.as_mut().unwrap()[0] ^= 1;
    let err = verify(&msg.to_tagged_vec().unwrap()).unwrap_err();
    assert_eq!(err, FragmentError::BadSignature);
    assert_eq!(err.to_string(), "verification error");
    assert_eq!(
        err.pipeline_message(),
        "InjectFragment failed COSE validation: verification error"
    );

    let mut msg = sign(&pki.leaf_key, header, Header::default(), REGO);
    msg.signature[5] ^= 0x80;
    assert_eq!(
        verify_signature_only(&msg.to_tagged_vec().unwrap()).unwrap_err(),
        FragmentError::BadSignature
    );
}

#[test]
fn signature_by_another_key_is_refused() {
    let pki = Pki::new();
    let header = protected(&pki, cwt(&subject_did(&pki), "feed", None)).build();
    let cose = sign(&Key::p256(99), header, Header::default(), REGO)
        .to_tagged_vec()
        .unwrap();
    assert_eq!(unpack(&cose).unwrap_err(), FragmentError::BadSignature);
}

fn chain_error(pki: &Pki, chain: &[Vec<u8>]) -> String {
    let header = HeaderBuilder::new()
        .algorithm(pki.leaf_key.cose_alg())
        .value(33, x5chain(chain))
        .value(15, cwt(&subject_did(pki), "feed", None));
    match unpack(&envelope_with(pki, header)).unwrap_err() {
        FragmentError::ChainVerification(text) => text,
        other => panic!("expected a chain error, got {other:?}"),
    }
}

#[test]
fn chain_not_ending_in_its_root_or_with_a_broken_link_is_refused() {
    let pki = Pki::new();
    // Another root with the same name but another key: the link to it does not verify.
    let impostor_key = Key::p256(42);
    let impostor = issue(
        ca_spec(ROOT_SUBJECT, ROOT_SUBJECT, 1),
        &impostor_key,
        &impostor_key,
    );
    let err = chain_error(&pki, &[pki.leaf.clone(), pki.inter.clone(), impostor]);
    assert!(
        err.starts_with("x509: certificate signed by unknown authority (possibly because of"),
        "{err}"
    );
    assert!(err.contains("Contoso Root CA"), "{err}");

    // A root that did not issue the intermediate (other name).
    let stranger_key = Key::p256(43);
    let stranger = issue(
        ca_spec("CN=Stranger Root", "CN=Stranger Root", 1),
        &stranger_key,
        &stranger_key,
    );
    let err = chain_error(&pki, &[pki.leaf.clone(), pki.inter.clone(), stranger]);
    assert_eq!(err, "x509: certificate signed by unknown authority");

    // Intermediate missing: the leaf's issuer is not the root.
    let err = chain_error(&pki, &[pki.leaf.clone(), pki.root.clone()]);
    assert_eq!(err, "x509: certificate signed by unknown authority");

    // Wrong order.
    let err = chain_error(
        &pki,
        &[pki.leaf.clone(), pki.root.clone(), pki.inter.clone()],
    );
    assert_eq!(err, "x509: certificate signed by unknown authority");

    // The full message.
    let header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, x5chain(&[pki.leaf.clone(), pki.root.clone()]));
    let err = unpack(&envelope_with(&pki, header)).unwrap_err();
    assert_eq!(
        err.pipeline_message(),
        "InjectFragment failed COSE validation: certificate chain verification failed - x509: \
         certificate signed by unknown authority"
    );
    // resolve_did_x509 checks the chain itself.
    let err = did_err(
        resolve_did_x509(&subject_did(&pki), &[pki.leaf.clone(), pki.root.clone()]).unwrap_err(),
    );
    assert_eq!(
        err,
        "certificate chain verification failed: x509: certificate signed by unknown authority"
    );
}

#[test]
fn two_certificate_chain_verifies() {
    let root_key = Key::p256(1);
    let leaf_key = Key::p256(3);
    let root = issue(ca_spec(ROOT_SUBJECT, ROOT_SUBJECT, 1), &root_key, &root_key);
    let mut spec = leaf_spec(leaf_extensions());
    spec.issuer = ROOT_SUBJECT;
    let leaf = issue(spec, &leaf_key, &root_key);
    let did = did_with(&root, "subject:CN:Contoso%20Fragment%20Signer");
    let header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, x5chain(&[leaf, root]))
        .value(15, cwt(&did, "feed", None));
    let cose = sign(&leaf_key, header.build(), Header::default(), REGO)
        .to_tagged_vec()
        .unwrap();
    assert_eq!(verify(&cose).unwrap().issuer, did);
}

#[test]
fn intermediate_must_be_a_ca_and_respect_path_length() {
    let mut pki = Pki::new();
    // Intermediate without basic constraints cA.
    let mut spec = ca_spec(INTER_SUBJECT, ROOT_SUBJECT, 2);
    spec.extensions = vec![basic_constraints(false, None)];
    pki.inter = issue(spec, &pki.inter_key, &pki.root_key);
    let err = chain_error(&pki, &pki.chain());
    assert!(
        err.contains("cannot sign this kind of certificate"),
        "{err}"
    );
    assert!(err.contains("Contoso Intermediate CA"), "{err}");

    // Path length 0 on the root with one intermediate below it.
    let pki = Pki::with_root_extensions(ca_extensions(Some(0)));
    let err = chain_error(&pki, &pki.chain());
    assert!(
        err.contains("too many intermediates for path length constraint"),
        "{err}"
    );

    // Name constraints (permitted dNSName contoso.com) on the intermediate, then on the root.
    let name_constraints = raw_ext(
        "2.5.29.30",
        true,
        [
            &[0x30, 0x11, 0xA0, 0x0F, 0x30, 0x0D, 0x82, 0x0B][..],
            b"contoso.com",
        ]
        .concat(),
    );
    let constrained = [ca_extensions(None), vec![name_constraints]].concat();
    for pki in [
        Pki::with_inter_extensions(constrained.clone()),
        Pki::with_root_extensions(constrained),
    ] {
        let err = chain_error(&pki, &pki.chain());
        assert!(
            err.contains("name constraints on an issuer are not supported"),
            "{err}"
        );
    }

    // Key usage without keyCertSign on the issuer.
    let mut pki = Pki::new();
    let mut spec = ca_spec(INTER_SUBJECT, ROOT_SUBJECT, 2);
    spec.extensions = vec![
        basic_constraints(true, None),
        key_usage(KeyUsage(KeyUsages::DigitalSignature.into())),
    ];
    pki.inter = issue(spec, &pki.inter_key, &pki.root_key);
    pki.reissue_leaf(leaf_spec(leaf_extensions()));
    let err = chain_error(&pki, &pki.chain());
    assert!(
        err.contains("cannot sign this kind of certificate"),
        "{err}"
    );
}

#[test]
fn verification_time_is_the_leaf_not_after() {
    // An expired leaf is fine (the time is its own NotAfter)...
    let mut pki = Pki::new();
    let mut spec = leaf_spec(leaf_extensions());
    spec.not_before = 946_684_800; // 2000
    spec.not_after = 978_307_200; // 2001
    pki.reissue_leaf(spec);
    let err = chain_error(&pki, &pki.chain());
    // ...but the CAs, valid from 2024, were not valid then.
    assert!(err.contains("expired or is not yet valid"), "{err}");
    assert!(
        err.contains("2001-01-01T00:00:00Z is before 2024-01-01T00:00:00Z"),
        "{err}"
    );

    // An intermediate that expires before the leaf does is refused.
    let mut pki = Pki::new();
    let mut spec = ca_spec(INTER_SUBJECT, ROOT_SUBJECT, 2);
    spec.not_after = Y2025 + 100;
    pki.inter = issue(spec, &pki.inter_key, &pki.root_key);
    let err = chain_error(&pki, &pki.chain());
    assert!(err.contains("expired or is not yet valid"), "{err}");

    // A leaf whose validity ended long ago but inside the CAs' validity verifies.
    let mut pki = Pki::new();
    let mut spec = leaf_spec(leaf_extensions());
    spec.not_before = Y2024;
    spec.not_after = Y2024 + 86_400;
    pki.reissue_leaf(spec);
    verify(&good_envelope(&pki)).unwrap();
}

#[test]
fn unknown_critical_extension_on_the_leaf_is_refused() {
    let mut pki = Pki::new();
    let mut exts = leaf_extensions();
    exts.push(raw_ext("1.3.6.1.4.1.99999.1", true, vec![0x05, 0x00]));
    pki.reissue_leaf(leaf_spec(exts));
    assert_eq!(
        chain_error(&pki, &pki.chain()),
        "x509: unhandled critical extension"
    );
}

// ---------------------------------------------------------------------------------------------
// Envelope shape (SP §7.3)

#[test]
fn untagged_envelope_is_refused() {
    let pki = Pki::new();
    let header = protected(&pki, cwt(&subject_did(&pki), "feed", None)).build();
    let untagged = sign(&pki.leaf_key, header, Header::default(), REGO)
        .to_vec()
        .unwrap();
    let err = verify(&untagged).unwrap_err();
    assert_eq!(err, FragmentError::NotTagged);
    assert_eq!(err.to_string(), "cbor: invalid COSE_Sign1_Tagged object");
    assert_eq!(verify(b"").unwrap_err(), FragmentError::NotTagged);
    // Tagged but truncated.
    let good = good_envelope(&pki);
    assert!(matches!(
        verify(&good[..good.len() - 3]).unwrap_err(),
        FragmentError::Cbor(_)
    ));
}

#[test]
fn algorithm_missing_or_not_an_integer() {
    let pki = Pki::new();
    let header = HeaderBuilder::new().value(33, x5chain(&pki.chain()));
    let err = verify(&envelope_with(&pki, header)).unwrap_err();
    assert_eq!(err.to_string(), "algorithm missing");

    let header = HeaderBuilder::new()
        .algorithm_label(coset::RegisteredLabelWithPrivate::Text("ES256".to_string()))
        .value(33, x5chain(&pki.chain()));
    let err = verify(&envelope_with(&pki, header)).unwrap_err();
    assert_eq!(err.to_string(), "algorithm wrong type");

    // alg only in the unprotected header does not count.
    let unprotected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .build();
    let header = HeaderBuilder::new()
        .value(33, x5chain(&pki.chain()))
        .build();
    let cose = sign(&pki.leaf_key, header, unprotected, REGO)
        .to_tagged_vec()
        .unwrap();
    assert_eq!(verify(&cose).unwrap_err(), FragmentError::AlgorithmMissing);
}

#[test]
fn algorithm_must_suit_the_leaf_key() {
    let pki = Pki::new();
    let with_alg = |alg| {
        HeaderBuilder::new()
            .algorithm(alg)
            .value(33, x5chain(&pki.chain()))
            .value(15, cwt(&subject_did(&pki), "feed", None))
    };
    let err = verify(&envelope_with(&pki, with_alg(iana::Algorithm::EdDSA))).unwrap_err();
    assert_eq!(err.to_string(), "EdDSA: invalid public key");
    let err = verify(&envelope_with(&pki, with_alg(iana::Algorithm::PS256))).unwrap_err();
    assert_eq!(err.to_string(), "PS256: invalid public key");
    let err = verify(&envelope_with(&pki, with_alg(iana::Algorithm::RS256))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "can't create new Verifier for Algorithm(-257): no built-in implementation available: \
         algorithm not supported"
    );
    // ES384 with a P-256 key: the hash is SHA-384, the signature made with SHA-256 fails.
    let err = verify(&envelope_with(&pki, with_alg(iana::Algorithm::ES384))).unwrap_err();
    assert_eq!(err, FragmentError::BadSignature);
}

#[test]
fn x5chain_rules() {
    let pki = Pki::new();
    // Only in the unprotected header.
    let header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(15, cwt(&subject_did(&pki), "feed", None))
        .build();
    let unprotected = HeaderBuilder::new()
        .value(33, x5chain(&pki.chain()))
        .build();
    let cose = sign(&pki.leaf_key, header, unprotected, REGO)
        .to_tagged_vec()
        .unwrap();
    let err = verify(&cose).unwrap_err();
    assert_eq!(err, FragmentError::X5ChainMissing);
    assert_eq!(err.to_string(), "x5Chain missing");

    for bad in [
        Value::Text("nope".to_string()),
        Value::Array(Vec::new()),
        Value::Array(vec![
            Value::Bytes(pki.leaf.clone()),
            Value::Text("x".to_string()),
        ]),
    ] {
        let header = HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES256)
            .value(33, bad);
        let err = verify(&envelope_with(&pki, header)).unwrap_err();
        assert_eq!(err.to_string(), "x5Chain wrong type");
    }

    let header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, Value::Bytes(b"not a certificate".to_vec()));
    let err = verify(&envelope_with(&pki, header)).unwrap_err();
    assert!(
        matches!(err, FragmentError::MalformedCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn more_than_a_hundred_certificates_are_refused() {
    let pki = Pki::new();
    let chain = vec![pki.leaf.clone(); 101];
    let header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .value(33, x5chain(&chain));
    let err = verify(&envelope_with(&pki, header)).unwrap_err();
    assert_eq!(err, FragmentError::UnreasonableChainLength(101));
    assert_eq!(
        err.to_string(),
        "unreasonable number of certs (101) in COSE_Sign1 document"
    );
}

#[test]
fn detached_payload_is_refused() {
    let pki = Pki::new();
    let header = protected(&pki, cwt(&subject_did(&pki), "feed", None)).build();
    let cose = CoseSign1Builder::new()
        .protected(header)
        .create_detached_signature(REGO, b"", |tbs| pki.leaf_key.sign_cose(tbs))
        .build()
        .to_tagged_vec()
        .unwrap();
    assert_eq!(verify(&cose).unwrap_err(), FragmentError::MissingPayload);
}

// ---------------------------------------------------------------------------------------------
// Issuer, feed, SVN (SP §7.2 steps 6–9)

#[test]
fn missing_feed_or_issuer_is_refused() {
    let pki = Pki::new();
    let did = subject_did(&pki);
    for claims in [
        cwt(&did, "", None),
        cwt("", "feed", None),
        Value::Map(vec![(Value::from(1), Value::Text(did.clone()))]),
        // sub not a text string.
        Value::Map(vec![
            (Value::from(1), Value::Text(did.clone())),
            (Value::from(2), Value::from(5)),
        ]),
    ] {
        let err = verify(&envelope_with(&pki, protected(&pki, claims))).unwrap_err();
        assert_eq!(err, FragmentError::IssuerOrFeedMissing);
        assert_eq!(
            err.pipeline_message(),
            "either issuer and feed must both be provided in the COSE_Sign1 protected header"
        );
    }
    // The envelope itself is fine: TCB/platform media types accept it.
    verify_signature_only(&envelope_with(&pki, protected(&pki, cwt(&did, "", None)))).unwrap();
}

#[test]
fn svn_must_be_an_int64() {
    let pki = Pki::new();
    let did = subject_did(&pki);
    let cases = [
        (
            Value::Text("3".to_string()),
            "expected integer type, got string",
        ),
        (Value::Float(1.5), "expected integer type, got float64"),
        (
            Value::from(u64::MAX),
            "unable to convert uint64 to int64 due to overflow",
        ),
    ];
    for (svn, reason) in cases {
        let header = protected(&pki, cwt(&did, "feed", Some(svn)));
        let err = verify(&envelope_with(&pki, header)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("SVN present in CWT claims, but failed to convert it to int64: {reason}")
        );
        assert!(!err.is_envelope_error());
    }
    for (svn, want) in [
        (Value::from(0), 0),
        (Value::from(-2), -2),
        (Value::from(i64::MAX), i64::MAX),
    ] {
        let header = protected(&pki, cwt(&did, "feed", Some(svn)));
        assert_eq!(
            verify(&envelope_with(&pki, header)).unwrap().header_svn,
            Some(want)
        );
    }
}

#[test]
fn cwt_claims_must_be_a_map() {
    let pki = Pki::new();
    let header = protected(&pki, Value::Text("claims".to_string()));
    let err = verify_signature_only(&envelope_with(&pki, header)).unwrap_err();
    assert_eq!(err, FragmentError::CwtClaimsNotMap("string"));
    assert_eq!(
        err.pipeline_message(),
        "InjectFragment failed COSE validation: expected CWTClaims header to be a map[any]any, \
         got string"
    );
}

#[test]
fn duplicate_keys_in_cwt_claims_are_refused() {
    let pki = Pki::new();
    let did = subject_did(&pki);
    let claims = Value::Map(vec![
        (Value::from(1), Value::Text(did.clone())),
        (Value::from(2), Value::Text("feed".to_string())),
        (Value::from(2), Value::Text("other".to_string())),
    ]);
    let err = verify(&envelope_with(&pki, protected(&pki, claims))).unwrap_err();
    assert!(matches!(err, FragmentError::Cbor(_)), "{err:?}");
}

#[test]
fn a_header_map_of_a_hundred_thousand_keys_is_checked_in_one_pass() {
    // Quadratic checking of this header would take minutes; the host chooses its size.
    let pki = Pki::new();
    let did = subject_did(&pki);
    let mut big: Vec<(Value, Value)> = (0..100_000)
        .map(|i| (Value::from(i), Value::Null))
        .collect();
    let claims = Value::Map(vec![
        (Value::from(1), Value::Text(did)),
        (Value::from(2), Value::Text("feed".to_string())),
    ]);
    let header = protected(&pki, claims.clone()).value(-70_000, Value::Map(big.clone()));
    assert!(verify(&envelope_with(&pki, header)).is_ok());
    big.push((Value::from(99_999), Value::Bool(true)));
    let header = protected(&pki, claims).value(-70_000, Value::Map(big));
    let err = verify(&envelope_with(&pki, header)).unwrap_err();
    assert_eq!(err.to_string(), "cbor: found duplicate map key");
}

// ---------------------------------------------------------------------------------------------
// Receipts (SP §7.3, last item)

fn receipt(kid: &[u8], issuer: Option<Value>) -> Vec<u8> {
    let mut header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .key_id(kid.to_vec());
    if let Some(iss) = issuer {
        header = header.value(15, Value::Map(vec![(Value::from(1), iss)]));
    }
    CoseSign1Builder::new()
        .protected(header.build())
        .create_detached_signature(b"root", b"", |tbs| Key::p256(50).sign_cose(tbs))
        .build()
        .to_tagged_vec()
        .unwrap()
}

#[test]
fn receipts_are_parsed_with_the_expected_data_hash() {
    let pki = Pki::new();
    let header = protected(&pki, cwt(&subject_did(&pki), "feed", None)).build();
    let bare = sign(&pki.leaf_key, header, Header::default(), REGO);
    let want_hash: [u8; 32] = Sha256::digest(bare.clone().to_tagged_vec().unwrap()).into();

    let rcpt = receipt(b"abc123", Some(Value::Text("ledger.example".to_string())));
    let mut with_receipts = bare;
    with_receipts.unprotected = HeaderBuilder::new()
        .value(394, Value::Array(vec![Value::Bytes(rcpt.clone())]))
        .build();
    let v = verify(&with_receipts.to_tagged_vec().unwrap()).unwrap();
    assert_eq!(
        v.receipts,
        vec![Receipt {
            raw: rcpt,
            kid: b"abc123".to_vec(),
            issuer: "ledger.example".to_string(),
            expected_data_hash: want_hash,
        }]
    );
}

#[test]
fn the_expected_data_hash_is_of_the_canonical_encoding() {
    let pki = Pki::new();
    let header = protected(&pki, cwt(&subject_did(&pki), "feed", None)).build();
    let bare = sign(&pki.leaf_key, header, Header::default(), REGO);
    let want_hash: [u8; 32] = Sha256::digest(bare.clone().to_tagged_vec().unwrap()).into();
    let mut with_receipts = bare;
    with_receipts.unprotected = HeaderBuilder::new()
        .value(
            394,
            Value::Array(vec![Value::Bytes(receipt(
                b"k",
                Some(Value::Text("ledger.example".to_string())),
            ))]),
        )
        .build();
    let canonical = with_receipts.to_tagged_vec().unwrap();
    // The payload's length written in two bytes where one would do (0x59 0x00 n, not 0x58 n):
    // still the same envelope, and the same signature.
    let len = u8::try_from(REGO.len()).unwrap();
    let short: Vec<u8> = [&[0x58, len][..], REGO].concat();
    let at = canonical
        .windows(short.len())
        .position(|w| w == short.as_slice())
        .unwrap();
    let long = [
        &canonical[..at],
        &[0x59, 0x00, len][..],
        &canonical[at + 2..],
    ]
    .concat();
    let v = verify(&long).unwrap();
    assert_eq!(v.receipts[0].expected_data_hash, want_hash);
}

#[test]
fn malformed_receipts_reject_the_envelope() {
    let pki = Pki::new();
    let header = protected(&pki, cwt(&subject_did(&pki), "feed", None)).build();
    let cases = [
        (
            Value::Bytes(vec![1]),
            "receipts header is not an array (got []uint8)",
        ),
        (
            Value::Array(vec![Value::from(1)]),
            "receipt 0 is not a byte string (got int64)",
        ),
        (
            Value::Array(vec![Value::Bytes(receipt(
                b"",
                Some(Value::Text("l".to_string())),
            ))]),
            "receipt 0: kid header missing",
        ),
        (
            Value::Array(vec![Value::Bytes(receipt(b"k", None))]),
            "receipt 0: CWT claims missing",
        ),
        (
            Value::Array(vec![Value::Bytes(receipt(b"k", Some(Value::from(3))))]),
            "receipt 0: issuer is not a string (got int64)",
        ),
        (
            Value::Array(vec![Value::Bytes(b"\xd2\x84junk".to_vec())]),
            "receipt 0: parsing COSE_Sign1",
        ),
    ];
    for (value, reason) in cases {
        let unprotected = HeaderBuilder::new().value(394, value).build();
        let cose = sign(&pki.leaf_key, header.clone(), unprotected, REGO)
            .to_tagged_vec()
            .unwrap();
        let err = verify(&cose).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("parsing receipts: {reason}")),
            "{err} vs {reason}"
        );
        assert!(err.is_envelope_error());
    }
}
