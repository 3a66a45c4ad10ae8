//! The payload of a signed transparency trust list (SP §7.9): for each ledger, the COSE keys its
//! receipts are signed with.

use std::collections::BTreeMap;

use coset::cbor::value::Value;
use coset::{AsCborValue, CborSerializable, CoseKey};

use super::FragmentError;

/// One usable key of a ledger: its key id and the COSE_Key as encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustKey {
    pub kid: Vec<u8>,
    pub key: Vec<u8>,
}

/// Parses a trust list: a CBOR map from ledger name (text) to a map whose key 1 is a COSE_KeySet.
/// Keys without a `kid`, or that are not COSE_Keys, are skipped.
///
/// Errors: not such a map, an empty map (`empty TTL payload`), or a ledger left with no usable
/// key.
pub fn parse_trust_list(payload: &[u8]) -> Result<BTreeMap<String, Vec<TrustKey>>, FragmentError> {
    let value: Value = coset::cbor::de::from_reader(payload)
        .map_err(|e| FragmentError::Cbor(format!("TTL payload: {e}")))?;
    let Value::Map(ledgers) = value else {
        return Err(FragmentError::Cbor("TTL payload is not a map".into()));
    };
    if ledgers.is_empty() {
        return Err(FragmentError::Cbor("empty TTL payload".into()));
    }
    let mut out = BTreeMap::new();
    for (name, entry) in ledgers {
        let Value::Text(name) = name else {
            return Err(FragmentError::Cbor("TTL ledger name is not text".into()));
        };
        let key_set = match entry {
            Value::Map(fields) => fields
                .into_iter()
                .find(|(k, _)| k.as_integer() == Some(1.into()))
                .map(|(_, v)| v),
            _ => None,
        };
        let keys: Vec<TrustKey> = match key_set {
            Some(Value::Array(keys)) => keys
                .into_iter()
                .filter_map(|k| CoseKey::from_cbor_value(k).ok())
                .filter(|k| !k.key_id.is_empty())
                .filter_map(|k| {
                    let kid = k.key_id.clone();
                    k.to_vec().ok().map(|key| TrustKey { kid, key })
                })
                .collect(),
            _ => Vec::new(),
        };
        if keys.is_empty() {
            return Err(FragmentError::Cbor(format!(
                "TTL ledger {name:?} has no usable keys"
            )));
        }
        out.insert(name, keys);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coset::{iana, CoseKeyBuilder};

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        coset::cbor::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn key(kid: &[u8]) -> Value {
        CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_256, vec![1; 32], vec![2; 32])
            .key_id(kid.to_vec())
            .build()
            .to_cbor_value()
            .unwrap()
    }

    #[test]
    fn ledgers_keep_their_usable_keys() {
        let payload = Value::Map(vec![(
            Value::Text("ledger.example".into()),
            Value::Map(vec![(
                Value::from(1),
                Value::Array(vec![key(b"k1"), key(b""), Value::from(7)]),
            )]),
        )]);
        let parsed = parse_trust_list(&encode(&payload)).unwrap();
        let keys = &parsed["ledger.example"];
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid, b"k1");
    }

    #[test]
    fn empty_or_keyless_lists_are_refused() {
        assert!(parse_trust_list(&encode(&Value::Map(vec![])))
            .unwrap_err()
            .to_string()
            .contains("empty TTL payload"));
        let keyless = Value::Map(vec![(
            Value::Text("l".into()),
            Value::Map(vec![(Value::from(1), Value::Array(vec![key(b"")]))]),
        )]);
        assert!(parse_trust_list(&encode(&keyless)).is_err());
        assert!(parse_trust_list(b"\xff").is_err());
    }
}
