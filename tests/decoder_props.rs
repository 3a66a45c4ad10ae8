//! Property tests: random bytes and random JSON never panic the frame or JSON decoders, and
//! headers round-trip.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

use gcs::protocol::messages::*;
use gcs::protocol::{MessageHeader, MessageType, HEADER_LEN, MAX_FRAME};
use proptest::prelude::*;
use serde_json::Value;

fn decode_all(bytes: &[u8]) {
    let _ = serde_json::from_slice::<RequestBase>(bytes);
    let _ = serde_json::from_slice::<NegotiateProtocolRequest>(bytes);
    let _ = serde_json::from_slice::<CreateRequest>(bytes);
    let _ = serde_json::from_slice::<ContainerSettings>(bytes);
    let _ = serde_json::from_slice::<ExecuteProcessRequest>(bytes);
    let _ = serde_json::from_slice::<ProcessParameters>(bytes);
    let _ = serde_json::from_slice::<WaitForProcessRequest>(bytes);
    let _ = serde_json::from_slice::<SignalProcessRequest>(bytes).map(|r| r.signal());
    let _ = serde_json::from_slice::<ResizeConsoleRequest>(bytes);
    let _ = serde_json::from_slice::<GetPropertiesRequest>(bytes);
    let _ = serde_json::from_slice::<PropertyQuery>(bytes);
    let _ = serde_json::from_slice::<ModifySettingsRequest>(bytes)
        .map(|r| r.request.request_type().len());
    let _ = serde_json::from_slice::<ResponseBase>(bytes);
    let _ = serde_json::from_slice::<ContainerNotification>(bytes);
    let _ = serde_json::from_slice::<Properties>(bytes);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("ContainerId".to_string()),
        Just("ActivityId".to_string()),
        Just("ProcessId".to_string()),
        Just("Settings".to_string()),
        Just("ProcessParameters".to_string()),
        Just("Request".to_string()),
        Just("Options".to_string()),
        Just("Signal".to_string()),
        Just("Query".to_string()),
        Just("OciSpecification".to_string()),
        Just("SchemaVersion".to_string()),
        Just("Height".to_string()),
        "[A-Za-z]{1,8}",
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
        if bytes.len() >= HEADER_LEN {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&bytes[..HEADER_LEN]);
            let header = MessageHeader::decode(&h);
            prop_assert_eq!(header.encode(), h);
            match header.payload_len(MAX_FRAME) {
                Ok(n) => prop_assert_eq!(n + HEADER_LEN, header.size as usize),
                Err(_) => prop_assert!(header.size < 16 || header.size as usize > MAX_FRAME),
            }
            let _ = header.message_type.go_name();
            let _ = header.message_type.response().kind();
        }
    }

    #[test]
    fn random_json_never_panics_decoders(v in json_value()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        decode_all(&bytes);
        // The same document as a string-embedded field.
        let embedded = serde_json::json!({"ContainerId": "x", "ContainerConfig": v.to_string(),
            "Settings": {"ProcessParameters": v.to_string()}, "Query": v.to_string()});
        decode_all(&serde_json::to_vec(&embedded).unwrap());
        if let Ok(req) = serde_json::from_value::<CreateRequest>(embedded.clone()) {
            let _ = serde_json::from_str::<ContainerSettings>(&req.container_config);
        }
    }

    #[test]
    fn headers_round_trip(ty in any::<u32>(), size in any::<u32>(), id in any::<u64>()) {
        let h = MessageHeader { message_type: MessageType(ty), size, id };
        prop_assert_eq!(MessageHeader::decode(&h.encode()), h);
        prop_assert_eq!(MessageType(ty).response().request().0 & 0x0FFF_FFFF, ty & 0x0FFF_FFFF);
    }
}
