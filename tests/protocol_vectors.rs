//! Every frame of the real traces parses into our types, and our encoding of each guest
//! response carries the same keys and values as the real guest's (and the same byte size where
//! the trace did not elide text).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use common::{all_traces, read_trace};
use gcs::protocol::json::to_go_json;
use gcs::protocol::messages::*;
use gcs::protocol::MessageType;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn round_trip<T: DeserializeOwned + Serialize>(body: &Value) -> (Value, usize) {
    let typed: T = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"));
    let bytes = to_go_json(&typed).unwrap();
    (serde_json::from_slice(&bytes).unwrap(), bytes.len())
}

fn guest_round_trip(message_type: u32, body: &Value) -> (Value, usize) {
    let ok = body["Result"].as_i64() == Some(0);
    if !ok {
        return round_trip::<ResponseBase>(body);
    }
    match MessageType(message_type).request() {
        MessageType::NEGOTIATE_PROTOCOL => round_trip::<NegotiateProtocolResponse>(body),
        MessageType::CREATE => round_trip::<CreateResponse>(body),
        MessageType::EXECUTE_PROCESS => round_trip::<ExecuteProcessResponse>(body),
        MessageType::WAIT_FOR_PROCESS => round_trip::<WaitForProcessResponse>(body),
        MessageType::GET_PROPERTIES => round_trip::<GetPropertiesResponse>(body),
        MessageType::DUMP_STACKS => round_trip::<DumpStacksResponse>(body),
        _ => round_trip::<ResponseBase>(body),
    }
}

fn host_round_trip(message_type: u32, body: &Value) -> Option<Value> {
    let v = match MessageType(message_type) {
        MessageType::NEGOTIATE_PROTOCOL => round_trip::<NegotiateProtocolRequest>(body).0,
        MessageType::CREATE => round_trip::<CreateRequest>(body).0,
        MessageType::EXECUTE_PROCESS => round_trip::<ExecuteProcessRequest>(body).0,
        MessageType::WAIT_FOR_PROCESS => round_trip::<WaitForProcessRequest>(body).0,
        MessageType::SIGNAL_PROCESS => round_trip::<SignalProcessRequest>(body).0,
        MessageType::RESIZE_CONSOLE => round_trip::<ResizeConsoleRequest>(body).0,
        MessageType::GET_PROPERTIES => round_trip::<GetPropertiesRequest>(body).0,
        MessageType::MODIFY_SETTINGS => round_trip::<ModifySettingsRequest>(body).0,
        MessageType::START
        | MessageType::SHUTDOWN_GRACEFUL
        | MessageType::SHUTDOWN_FORCED
        | MessageType::DUMP_STACKS
        | MessageType::DELETE_CONTAINER_STATE => round_trip::<RequestBase>(body).0,
        _ => return None,
    };
    Some(v)
}

/// Equal under Go's decoding: keys only one side has must hold the zero value there.
fn go_equivalent(a: &Value, b: &Value) -> bool {
    fn is_zero(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.values().all(is_zero),
        }
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.iter()
                .all(|(k, v)| y.get(k).map_or(is_zero(v), |w| go_equivalent(v, w)))
                && y.iter().all(|(k, w)| x.contains_key(k) || is_zero(w))
        }
        _ => a == b,
    }
}

#[test]
fn every_trace_frame_round_trips() {
    let mut frames = 0;
    let mut sized = 0;
    for name in all_traces() {
        for f in read_trace(&name) {
            frames += 1;
            if f.is_host_request() {
                if let Some(v) = host_round_trip(f.type_u32(), &f.body) {
                    assert!(
                        go_equivalent(&f.body, &v),
                        "{name} id {}: {v} vs {}",
                        f.id,
                        f.body
                    );
                }
                // Embedded documents parse too.
                if f.type_u32() == MessageType::EXECUTE_PROCESS.0 {
                    let s = f.body["Settings"]["ProcessParameters"].as_str().unwrap();
                    if s != "{not json" {
                        let p: ProcessParameters = serde_json::from_str(s).unwrap();
                        assert!(
                            p.create_std_out_pipe
                                || p.oci_process.is_some()
                                || !p.command_args.is_empty()
                                || s.len() < 100,
                            "{s}"
                        );
                    }
                }
                if f.type_u32() == MessageType::CREATE.0 {
                    let s = f.body["ContainerConfig"].as_str().unwrap();
                    let c: ContainerSettings = serde_json::from_str(s).unwrap();
                    assert!(c.oci_specification.is_some());
                }
            } else if f.type_u32() == MessageType::NOTIFICATION.0 {
                let (v, len) = round_trip::<ContainerNotification>(&f.body);
                assert_eq!(v, f.body, "{name}");
                assert_eq!(len + 16, f.size as usize, "{name} notification size");
                sized += 1;
            } else {
                let (v, len) = guest_round_trip(f.type_u32(), &f.body);
                assert_eq!(v, f.body, "{name} id {}", f.id);
                let text = f.body.to_string();
                if !text.contains("<elided") && !text.contains("<time>") && !text.contains("<src>")
                {
                    assert_eq!(
                        len + 16,
                        f.size as usize,
                        "{name} id {} size: Go-compatible encoding",
                        f.id
                    );
                    sized += 1;
                }
            }
        }
    }
    assert!(frames > 200, "only {frames} frames read");
    assert!(sized > 50, "only {sized} frames size-checked");
}

#[test]
fn negotiate_response_is_byte_identical_to_trace() {
    let trace = read_trace("01-negotiate-dumpstacks.jsonl");
    let want = &trace[1];
    let ours = NegotiateProtocolResponse {
        base: ResponseBase::ok(gcs::protocol::NULL_CONTAINER_ID),
        version: 4,
        capabilities: GcsCapabilities::linux_guest(),
    };
    let bytes = to_go_json(&ours).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), want.body);
    assert_eq!(bytes.len() + 16, want.size as usize);
}
