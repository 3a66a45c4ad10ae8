//! X.509 certificates of an `x5chain` and the chain check of SP §7.3: the chain as sent (leaf,
//! intermediates, root) must verify with its last certificate as the only trust anchor, at the
//! time of the leaf's `NotAfter`, whatever the extended key usages.
//!
//! The checks are the ones the Go guest's verifier applies to such a chain: each certificate
//! issued (issuer name equal to the subject name) and signed by the next; a signer must be
//! allowed to sign certificates (basic constraints `cA` on a v3 certificate, `keyCertSign` when
//! key usage is present); intermediates must be CAs; path-length constraints hold; every
//! certificate is valid at the verification time; the leaf has no unknown critical extension.
//! Unlike the Go verifier, an issuer with name constraints is refused rather than evaluated.

use x509_cert::der::asn1::AnyRef;
use x509_cert::der::{Decode, Reader, SliceReader};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::Certificate;
use x509_verify::{Message, Signature, VerifyInfo, VerifyingKey};

/// OIDs of the extensions read here.
pub(crate) mod oid {
    use x509_cert::der::asn1::ObjectIdentifier;

    pub const SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
    pub const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
    pub const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
    pub const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
    pub const NAME_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.30");
    pub const CRL_DISTRIBUTION_POINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.31");
    pub const CERTIFICATE_POLICIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32");
    pub const POLICY_MAPPINGS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.33");
    pub const AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
    pub const POLICY_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.36");
    pub const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
    pub const INHIBIT_ANY_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.54");
    /// Sigstore Fulcio's issuer extension (v1), read by the `fulcio-issuer` DID policy.
    pub const FULCIO_ISSUER: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
    /// Common name, for naming a certificate in errors.
    pub const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
}

/// Critical extensions a certificate may carry and still verify (those the Go verifier handles).
const HANDLED_CRITICAL: [x509_cert::der::asn1::ObjectIdentifier; 12] = [
    oid::SUBJECT_KEY_ID,
    oid::KEY_USAGE,
    oid::SUBJECT_ALT_NAME,
    oid::BASIC_CONSTRAINTS,
    oid::NAME_CONSTRAINTS,
    oid::CRL_DISTRIBUTION_POINTS,
    oid::CERTIFICATE_POLICIES,
    oid::POLICY_MAPPINGS,
    oid::AUTHORITY_KEY_ID,
    oid::POLICY_CONSTRAINTS,
    oid::EXT_KEY_USAGE,
    oid::INHIBIT_ANY_POLICY,
];

/// One parsed certificate, with its DER and the exact bytes its signature covers.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub der: Vec<u8>,
    pub cert: Certificate,
    /// `tbsCertificate` as sent (not re-encoded), what the issuer signed.
    tbs_len: std::ops::Range<usize>,
}

impl Cert {
    /// Parses one DER certificate (no trailing bytes).
    ///
    /// # Errors
    /// The DER decoder's complaint.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(der).map_err(|e| e.to_string())?;
        let tbs_len = raw_tbs_range(der).map_err(|e| e.to_string())?;
        Ok(Self {
            der: der.to_vec(),
            cert,
            tbs_len,
        })
    }

    fn tbs(&self) -> &[u8] {
        &self.der[self.tbs_len.clone()]
    }

    /// The extension with this OID, if present: (critical, value octets).
    pub fn extension(&self, id: &x509_cert::der::asn1::ObjectIdentifier) -> Option<(bool, &[u8])> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| &e.extn_id == id)
            .map(|e| (e.critical, e.extn_value.as_bytes()))
    }

    /// Basic constraints, when present and well-formed.
    fn basic_constraints(&self) -> Result<Option<BasicConstraints>, String> {
        self.extension(&oid::BASIC_CONSTRAINTS)
            .map(|(_, v)| BasicConstraints::from_der(v).map_err(|e| e.to_string()))
            .transpose()
    }

    /// Key usage, when present and well-formed.
    pub fn key_usage(&self) -> Result<Option<KeyUsage>, String> {
        self.extension(&oid::KEY_USAGE)
            .map(|(_, v)| KeyUsage::from_der(v).map_err(|e| e.to_string()))
            .transpose()
    }

    /// `NotBefore` and `NotAfter`, seconds since the epoch.
    fn validity(&self) -> (u64, u64) {
        let v = &self.cert.tbs_certificate.validity;
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    }

    /// How Go names a certificate in errors: its common name, else its serial number.
    fn display_name(&self) -> String {
        for rdn in &self.cert.tbs_certificate.subject.0 {
            for atv in rdn.0.iter() {
                if atv.oid == oid::COMMON_NAME {
                    if let Some(cn) = super::did_x509::attribute_text(&atv.value) {
                        if !cn.is_empty() {
                            return cn;
                        }
                    }
                }
            }
        }
        format!("serial:{}", self.cert.tbs_certificate.serial_number)
    }
}

/// Where `tbsCertificate` lies in a certificate's DER: the first element of the outer SEQUENCE.
fn raw_tbs_range(der: &[u8]) -> x509_cert::der::Result<std::ops::Range<usize>> {
    let outer = AnyRef::from_der(der)?;
    let body = outer.value();
    let mut reader = SliceReader::new(body)?;
    AnyRef::decode(&mut reader)?;
    let len = usize::try_from(reader.position())?;
    // The body is the tail of `der` (after the outer tag and length).
    let start = der.len() - body.len();
    Ok(start..start + len)
}

fn rfc3339(secs: u64) -> String {
    x509_cert::der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_or_else(|_| format!("{secs}s"), |d| d.to_string())
}

/// Verifies the chain as SP §7.3 says, with `chain[last]` the only trust anchor; a chain of one
/// certificate has nothing to verify.
///
/// # Errors
/// The reason, worded like the Go verifier's (`x509: certificate signed by unknown authority
/// (possibly because of "..." while trying to verify candidate authority certificate "...")`,
/// `x509: certificate has expired or is not yet valid: ...`, `x509: unhandled critical
/// extension`).
pub(crate) fn verify_chain(chain: &[Cert]) -> Result<(), String> {
    let Some(leaf) = chain.first() else {
        return Err("no certificate chain".to_string());
    };
    if chain.len() < 2 {
        return Ok(());
    }
    let (_, now) = leaf.validity();

    if let Some(exts) = &leaf.cert.tbs_certificate.extensions {
        if exts
            .iter()
            .any(|e| e.critical && !HANDLED_CRITICAL.contains(&e.extn_id))
        {
            return Err("x509: unhandled critical extension".to_string());
        }
    }
    check_time(leaf, now)?;

    let last = chain.len() - 1;
    for (i, pair) in chain.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        let parent_index = i + 1;
        if child.cert.tbs_certificate.issuer != parent.cert.tbs_certificate.subject {
            return Err("x509: certificate signed by unknown authority".to_string());
        }
        let hint = |reason: String| {
            format!(
                "x509: certificate signed by unknown authority (possibly because of {:?} while \
                 trying to verify candidate authority certificate {:?})",
                reason,
                parent.display_name()
            )
        };
        check_signed_by(child, parent).map_err(hint)?;
        check_parent(parent, parent_index, parent_index == last, now).map_err(hint)?;
    }
    Ok(())
}

/// The certificate is valid at `now` (seconds since the epoch).
fn check_time(cert: &Cert, now: u64) -> Result<(), String> {
    let (not_before, not_after) = cert.validity();
    if now < not_before {
        return Err(format!(
            "x509: certificate has expired or is not yet valid: current time {} is before {}",
            rfc3339(now),
            rfc3339(not_before)
        ));
    }
    if now > not_after {
        return Err(format!(
            "x509: certificate has expired or is not yet valid: current time {} is after {}",
            rfc3339(now),
            rfc3339(not_after)
        ));
    }
    Ok(())
}

/// `parent` may sign certificates and its key verifies `child`'s signature.
fn check_signed_by(child: &Cert, parent: &Cert) -> Result<(), String> {
    let bc = parent.basic_constraints()?;
    let is_v3 = parent.cert.tbs_certificate.version == x509_cert::Version::V3;
    let may_sign = match &bc {
        Some(bc) => bc.ca,
        None => !is_v3,
    };
    if !may_sign {
        return Err(
            "x509: invalid signature: parent certificate cannot sign this kind of certificate"
                .to_string(),
        );
    }
    if let Some(ku) = parent.key_usage()? {
        if !ku.0.is_empty() && !ku.0.contains(KeyUsages::KeyCertSign) {
            return Err(
                "x509: invalid signature: parent certificate cannot sign this kind of certificate"
                    .to_string(),
            );
        }
    }
    let key = VerifyingKey::try_from(&parent.cert)
        .map_err(|e| format!("x509: cannot use the issuer's public key: {e}"))?;
    let signature = child
        .cert
        .signature
        .as_bytes()
        .ok_or_else(|| "x509: malformed signature".to_string())?;
    key.verify(VerifyInfo::new(
        Message::new(child.tbs()),
        Signature::new(&child.cert.signature_algorithm, signature),
    ))
    .map_err(|e| format!("x509: signature verification failure: {e}"))
}

/// The checks on a certificate used as an issuer at `index` in the chain.
fn check_parent(parent: &Cert, index: usize, is_root: bool, now: u64) -> Result<(), String> {
    check_time(parent, now)?;
    // The Go verifier checks the names below an issuer against its name constraints; this one
    // does not evaluate them, so it refuses such chains rather than accept what Go may refuse.
    if parent
        .cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .any(|e| e.extn_id == oid::NAME_CONSTRAINTS)
    {
        return Err("x509: name constraints on an issuer are not supported".to_string());
    }
    let bc = parent.basic_constraints()?;
    if !is_root && !bc.as_ref().is_some_and(|bc| bc.ca) {
        return Err("x509: certificate is not authorized to sign other certificates".to_string());
    }
    if let Some(max) = bc.and_then(|bc| bc.path_len_constraint) {
        // Intermediates between this certificate and the leaf.
        let below = index - 1;
        if below > usize::from(max) {
            return Err("x509: too many intermediates for path length constraint".to_string());
        }
    }
    Ok(())
}
