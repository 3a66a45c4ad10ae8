//! `did:x509` resolution against a certificate chain (SP §7.4).
//!
//! `did:x509:0:<sha256|sha384|sha512>:<fingerprint>::<policy>[::<policy>...]`: the fingerprint is
//! the base64url (unpadded) hash of the DER of some non-leaf certificate of the chain; each policy
//! (`subject`, `san`, `eku`, `fulcio-issuer`) constrains the leaf. Values are URL-query escaped
//! (`%xx`, `+` for a space), so a `:` inside a value must be `%3A`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::der::asn1::{BmpString, ObjectIdentifier};
use x509_cert::der::{Any, Decode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsages, SubjectAltName};

use super::chain::{oid, verify_chain, Cert};
use super::FragmentError;

/// Subject attribute keys of the `subject` policy and their OIDs; `true` for the attributes Go
/// keeps one value of (the last).
const SUBJECT_KEYS: [(&str, &str, bool); 9] = [
    ("C", "2.5.4.6", false),
    ("O", "2.5.4.10", false),
    ("OU", "2.5.4.11", false),
    ("L", "2.5.4.7", false),
    ("S", "2.5.4.8", false),
    ("STREET", "2.5.4.9", false),
    ("POSTALCODE", "2.5.4.17", false),
    ("SERIALNUMBER", "2.5.4.5", true),
    ("CN", "2.5.4.3", true),
];

/// Extended key usages the Go x509 package knows by name (RFC 5280 §4.2.1.12 and vendor ones);
/// the `eku` policy first requires the leaf to carry at least one EKU outside this list.
const STANDARD_EKUS: [&str; 14] = [
    "2.5.29.37.0",
    "1.3.6.1.5.5.7.3.1",
    "1.3.6.1.5.5.7.3.2",
    "1.3.6.1.5.5.7.3.3",
    "1.3.6.1.5.5.7.3.4",
    "1.3.6.1.5.5.7.3.5",
    "1.3.6.1.5.5.7.3.6",
    "1.3.6.1.5.5.7.3.7",
    "1.3.6.1.5.5.7.3.8",
    "1.3.6.1.5.5.7.3.9",
    "1.3.6.1.4.1.311.10.3.3",
    "2.16.840.1.113730.4.1",
    "1.3.6.1.4.1.311.2.1.22",
    "1.3.6.1.4.1.311.61.1.1",
];

/// SP §7.4 on its own: does `did` resolve against `chain` (DER certificates, leaf first, root
/// last)? The chain is verified as in §7.3 (last certificate the only root, time = leaf
/// `NotAfter`), then the DID's fingerprint and policies are checked, then the leaf's key usage
/// (absent, or with digitalSignature or keyAgreement).
///
/// # Errors
/// [`FragmentError::Did`] with the resolver's reason: `no certificate chain`,
/// `certificate parser failed: ...`, `certificate chain verification failed: ...`,
/// `DID verification failed: <reason>` (e.g. `certificate chain too short` for a one-certificate
/// chain, `unexpected certificate fingerprint`, `invalid subject value: CN=...`),
/// `DID document creation failed: ...`.
pub fn resolve_did_x509(did: &str, chain: &[Vec<u8>]) -> Result<(), FragmentError> {
    let certs = chain
        .iter()
        .map(|der| {
            Cert::parse(der).map_err(|e| {
                FragmentError::Did(format!(
                    "certificate parser failed: x509: malformed certificate: {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(FragmentError::Did("no certificate chain".to_string()));
    }
    if certs.len() < 2 {
        // The Go resolver cannot verify such a chain at all (SP §13 item 10); refuse it.
        return Err(did_failed("certificate chain too short"));
    }
    verify_chain(&certs)
        .map_err(|e| FragmentError::Did(format!("certificate chain verification failed: {e}")))?;
    resolve_verified(did, &certs)
}

/// [`resolve_did_x509`] for a chain that [`verify_chain`] already accepted (the envelope's).
pub(crate) fn resolve_verified(did: &str, chain: &[Cert]) -> Result<(), FragmentError> {
    verify_did(did, chain).map_err(|e| did_failed(&e))?;
    check_leaf_key_usage(&chain[0])
        .map_err(|e| FragmentError::Did(format!("DID document creation failed: {e}")))
}

fn did_failed(reason: &str) -> FragmentError {
    FragmentError::Did(format!("DID verification failed: {reason}"))
}

/// The DID's prefix, fingerprint and policies against the chain.
fn verify_did(did: &str, chain: &[Cert]) -> Result<(), String> {
    let top: Vec<&str> = did.split("::").collect();
    if top.len() <= 1 {
        return Err("invalid DID string".to_string());
    }
    let pre: Vec<&str> = top[0].split(':').collect();
    if pre.len() < 5 || pre[0] != "did" || pre[1] != "x509" {
        return Err("unsupported method/prefix".to_string());
    }
    if pre[2] != "0" {
        return Err("unsupported did:x509 version".to_string());
    }
    if chain.len() < 2 {
        return Err("certificate chain too short".to_string());
    }
    check_fingerprint(chain, pre[3], pre[4])?;
    let leaf = &chain[0];
    for policy in &top[1..] {
        let parts: Vec<&str> = policy.split(':').collect();
        if parts.len() < 2 {
            return Err("invalid policy".to_string());
        }
        let (name, args) = (parts[0], &parts[1..]);
        match name {
            "subject" => check_subject(leaf, args)?,
            "san" => check_san(leaf, args)?,
            "eku" => check_eku(leaf, args)?,
            "fulcio-issuer" => check_fulcio_issuer(leaf, args)?,
            other => return Err(format!("unsupported did:x509 policy name '{other}'")),
        }
    }
    Ok(())
}

/// Some non-leaf certificate's hash, base64url without padding, equals the fingerprint.
fn check_fingerprint(chain: &[Cert], alg: &str, fingerprint: &str) -> Result<(), String> {
    let hash = |der: &[u8]| -> Option<Vec<u8>> {
        match alg {
            "sha256" => Some(Sha256::digest(der).to_vec()),
            "sha384" => Some(Sha384::digest(der).to_vec()),
            "sha512" => Some(Sha512::digest(der).to_vec()),
            _ => None,
        }
    };
    let mut found = false;
    for cert in &chain[1..] {
        let digest = hash(&cert.der).ok_or_else(|| "unsupported hash algorithm".to_string())?;
        found |= URL_SAFE_NO_PAD.encode(digest) == fingerprint;
    }
    if found {
        Ok(())
    } else {
        Err("unexpected certificate fingerprint".to_string())
    }
}

/// `subject:K1:V1[:K2:V2...]`: each value equals one of the leaf subject's values for its key.
fn check_subject(leaf: &Cert, args: &[&str]) -> Result<(), String> {
    if args.is_empty() || args.len() % 2 != 0 {
        return Err("key-value pairs required".to_string());
    }
    let mut seen: Vec<String> = Vec::new();
    for pair in args.chunks(2) {
        let key = pair[0].to_uppercase();
        let value = query_unescape(pair[1]).map_err(|e| format!("urlUnescape failed: {e}"))?;
        if seen.contains(&key) {
            return Err(format!("duplicate field '{key}'"));
        }
        seen.push(key.clone());

        let attributes = subject_attributes(leaf);
        let values: Vec<String> = match SUBJECT_KEYS.iter().find(|(k, _, _)| *k == key) {
            Some((_, id, single)) => {
                let all: Vec<String> = attributes
                    .iter()
                    .filter(|(o, _)| o == id)
                    .map(|(_, v)| v.clone())
                    .collect();
                if *single {
                    vec![all.last().cloned().unwrap_or_default()]
                } else {
                    all
                }
            }
            None => {
                // A dotted OID: the first attribute of that type.
                let first = attributes.iter().find(|(o, _)| *o == key);
                match first {
                    Some((_, v)) => vec![v.clone()],
                    None => return Err(format!("unsupported subject key: {key}")),
                }
            }
        };
        if !values.iter().any(|v| v.as_bytes() == value.as_slice()) {
            return Err(format!(
                "invalid subject value: {key}={}",
                String::from_utf8_lossy(&value)
            ));
        }
    }
    Ok(())
}

/// The leaf subject's attributes in order, as (dotted OID, text value); values that are not
/// directory strings are left out.
fn subject_attributes(leaf: &Cert) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rdn in &leaf.cert.tbs_certificate.subject.0 {
        for atv in rdn.0.iter() {
            if let Some(text) = attribute_text(&atv.value) {
                out.push((atv.oid.to_string(), text));
            }
        }
    }
    out
}

/// A directory string attribute value as text (UTF8String, PrintableString, IA5String,
/// NumericString, TeletexString taken as bytes, BMPString as UCS-2).
pub(crate) fn attribute_text(value: &Any) -> Option<String> {
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::TeletexString => Some(String::from_utf8_lossy(bytes).into_owned()),
        Tag::BmpString => BmpString::from_ucs2(bytes).ok().map(|s| s.to_string()),
        _ => None,
    }
}

/// `san:<dns|email|ipaddress|uri>:<value>`: the leaf carries that subject alternative name.
fn check_san(leaf: &Cert, args: &[&str]) -> Result<(), String> {
    if args.len() != 2 {
        return Err("exactly one SAN type and value required".to_string());
    }
    let kind = args[0];
    let value = query_unescape(args[1]).map_err(|e| format!("url.QueryUnescape failed: {e}"))?;
    if !matches!(kind, "dns" | "email" | "ipaddress" | "uri") {
        return Err(format!("unknown SAN type: {kind}"));
    }
    let names = match leaf.extension(&oid::SUBJECT_ALT_NAME) {
        Some((_, der)) => SubjectAltName::from_der(der).map_err(|e| e.to_string())?.0,
        None => Vec::new(),
    };
    let matches = |name: &GeneralName| -> Option<bool> {
        Some(match (kind, name) {
            ("dns", GeneralName::DnsName(s))
            | ("email", GeneralName::Rfc822Name(s))
            | ("uri", GeneralName::UniformResourceIdentifier(s)) => {
                s.as_bytes() == value.as_slice()
            }
            ("ipaddress", GeneralName::IpAddress(ip)) => {
                ip_text(ip.as_bytes())?.as_bytes() == value.as_slice()
            }
            _ => false,
        })
    };
    if names.iter().any(|n| matches(n) == Some(true)) {
        Ok(())
    } else {
        Err(format!(
            "SAN not found: {}",
            String::from_utf8_lossy(&value)
        ))
    }
}

/// An IP address SAN as Go prints it (IPv4-mapped IPv6 as dotted IPv4).
fn ip_text(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(std::net::Ipv4Addr::from(v4).to_string());
    }
    let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    })
}

/// `eku:<oid>`: the leaf carries that extended key usage. Like the Go resolver (SP §13 item
/// 11), the leaf must first carry at least one EKU that is not a standard one.
fn check_eku(leaf: &Cert, args: &[&str]) -> Result<(), String> {
    if args.len() != 1 {
        return Err("exactly one EKU required".to_string());
    }
    let wanted =
        parse_oid(args[0]).ok_or_else(|| "oidFromString failed: invalid OID".to_string())?;
    let ekus: Vec<ObjectIdentifier> = match leaf.extension(&oid::EXT_KEY_USAGE) {
        Some((_, der)) => {
            ExtendedKeyUsage::from_der(der)
                .map_err(|e| e.to_string())?
                .0
        }
        None => Vec::new(),
    };
    let is_standard = |o: &ObjectIdentifier| STANDARD_EKUS.contains(&o.to_string().as_str());
    if !ekus.iter().any(|o| !is_standard(o)) {
        return Err("no EKU extension in certificate".to_string());
    }
    if ekus.iter().any(|o| oid_arcs(o) == wanted) {
        Ok(())
    } else {
        let text: Vec<String> = wanted.iter().map(u64::to_string).collect();
        Err(format!("EKU not found: {}", text.join(".")))
    }
}

/// `fulcio-issuer:<v>`: the leaf's Fulcio issuer extension value is `https://` + `v`.
fn check_fulcio_issuer(leaf: &Cert, args: &[&str]) -> Result<(), String> {
    if args.len() != 1 {
        return Err("excessive arguments to fulcio-issuer".to_string());
    }
    let decoded = query_unescape(args[0]).map_err(|e| format!("urlUnescape failed: {e}"))?;
    let mut expected = b"https://".to_vec();
    expected.extend_from_slice(&decoded);
    let found = leaf
        .cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .any(|e| e.extn_id == oid::FULCIO_ISSUER && e.extn_value.as_bytes() == expected);
    if found {
        Ok(())
    } else {
        Err(format!(
            "invalid fulcio-issuer: {}",
            String::from_utf8_lossy(&expected)
        ))
    }
}

/// The leaf's key usage must be absent or allow digitalSignature or keyAgreement.
fn check_leaf_key_usage(leaf: &Cert) -> Result<(), String> {
    let Some(ku) = leaf.key_usage()? else {
        return Ok(());
    };
    if ku.0.is_empty()
        || ku.0.contains(KeyUsages::DigitalSignature)
        || ku.0.contains(KeyUsages::KeyAgreement)
    {
        Ok(())
    } else {
        Err(
            "leaf certificate key usage must include digital signature or key agreement"
                .to_string(),
        )
    }
}

/// A dotted OID's arcs (decimal components, as Go's `strconv.Atoi` reads them).
fn parse_oid(text: &str) -> Option<Vec<u64>> {
    text.split('.').map(|arc| arc.parse::<u64>().ok()).collect()
}

fn oid_arcs(id: &ObjectIdentifier) -> Vec<u64> {
    id.arcs().map(u64::from).collect()
}

/// URL query unescaping (Go's `url.QueryUnescape`): `%xx` is a byte, `+` a space.
///
/// # Errors
/// `invalid URL escape "%.."` for a `%` not followed by two hex digits.
fn query_unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| char::from(b).to_digit(16);
                let pair = bytes
                    .get(i + 1..i + 3)
                    .and_then(|p| Some((hex(p[0])?, hex(p[1])?)));
                let Some((hi, lo)) = pair else {
                    let end = (i + 3).min(bytes.len());
                    return Err(format!(
                        "invalid URL escape {:?}",
                        String::from_utf8_lossy(&bytes[i..end])
                    ));
                };
                // Two hex digits make a byte.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(0));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod unit {
    use super::{ip_text, parse_oid, query_unescape};

    #[test]
    fn unescape_like_go_query_unescape() {
        assert_eq!(query_unescape("a%20b+c").unwrap(), b"a b c");
        assert_eq!(query_unescape("%3A%3a").unwrap(), b"::");
        assert_eq!(query_unescape("").unwrap(), b"");
        assert_eq!(
            query_unescape("x%zz").unwrap_err(),
            "invalid URL escape \"%zz\""
        );
        assert_eq!(
            query_unescape("x%4").unwrap_err(),
            "invalid URL escape \"%4\""
        );
        assert_eq!(query_unescape("%").unwrap_err(), "invalid URL escape \"%\"");
    }

    #[test]
    fn oids_and_ips() {
        assert_eq!(parse_oid("1.3.6.1").unwrap(), vec![1, 3, 6, 1]);
        assert!(parse_oid("1..3").is_none());
        assert!(parse_oid("1.x").is_none());
        assert_eq!(ip_text(&[10, 0, 0, 1]).unwrap(), "10.0.0.1");
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[192, 168, 1, 2]);
        assert_eq!(ip_text(&mapped).unwrap(), "192.168.1.2");
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[2] = 0x0d;
        v6[3] = 0xb8;
        v6[15] = 1;
        assert_eq!(ip_text(&v6).unwrap(), "2001:db8::1");
        assert!(ip_text(&[1, 2, 3]).is_none());
    }
}
