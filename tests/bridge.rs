//! Bridge conformance against the real binary (`gcs -use-inouterr`) over a socketpair, driven
//! by the `host` client, which enforces the real host's rules (64 KiB limit, known ids).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Agent;
use gcs::protocol::header::encode_frame;
use gcs::protocol::messages::*;
use gcs::protocol::{Hresult, MessageHeader, MessageType, NULL_CONTAINER_ID};
use serde_json::Value;

const NULL_BASE: &str = r#"{"ContainerId":"00000000-0000-0000-0000-000000000000","ActivityId":"00000000-0000-0000-0000-000000000000"}"#;

fn result_of(frame: &gcs::host::Frame) -> Hresult {
    Hresult(frame.json().unwrap()["Result"].as_i64().unwrap() as i32)
}

#[tokio::test]
async fn negotiate_announces_linux_v4() {
    let agent = Agent::start(&["-v4"]);
    let resp = agent.client.negotiate().await.unwrap();
    assert_eq!(resp.version, 4);
    assert_eq!(resp.capabilities, GcsCapabilities::linux_guest());
    assert_eq!(resp.base.activity_id, NULL_CONTAINER_ID);
    assert!(agent.client.failure().is_none());
}

#[tokio::test]
async fn request_before_negotiate_is_not_implemented() {
    let agent = Agent::start(&["-v4"]);
    let frame = agent
        .client
        .request_raw(MessageType::DUMP_STACKS, NULL_BASE.as_bytes())
        .await
        .unwrap();
    assert_eq!(frame.header.message_type, MessageType(0x2010_0c01));
    assert_eq!(frame.header.id, 0);
    assert_eq!(result_of(&frame), Hresult::NOT_IMPL);
    let body = frame.json().unwrap();
    assert_eq!(
        body["ErrorMessage"],
        "HRESULT 0x80004001: bridge: function not supported, header type: ComputeSystemDumpStacksV1"
    );
    assert_eq!(body["ErrorRecords"][0]["ModuleName"], "gcs");
    // The connection still negotiates afterwards.
    agent.client.negotiate().await.unwrap();
}

#[tokio::test]
async fn second_negotiate_is_not_implemented() {
    let agent = Agent::negotiated(&[]).await;
    let err = agent.client.negotiate().await.unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::NOT_IMPL));
    assert!(
        err.to_string().contains("ComputeSystemNegotiateProtocolV1"),
        "{err}"
    );
}

#[tokio::test]
async fn unsupported_protocol_range() {
    let agent = Agent::start(&["-v4"]);
    for (min, max) in [(1, 3), (5, 9)] {
        let req = NegotiateProtocolRequest {
            base: RequestBase::new(""),
            minimum_version: min,
            maximum_version: max,
        };
        let err = agent
            .client
            .call::<_, NegotiateProtocolResponse>(MessageType::NEGOTIATE_PROTOCOL, &req)
            .await
            .unwrap_err();
        assert_eq!(err.hresult(), Some(Hresult::UNSUPPORTED_PROTOCOL_VERSION));
    }
    let req = NegotiateProtocolRequest {
        base: RequestBase::new(""),
        minimum_version: 3,
        maximum_version: 7,
    };
    let resp: NegotiateProtocolResponse = agent
        .client
        .call(MessageType::NEGOTIATE_PROTOCOL, &req)
        .await
        .unwrap();
    assert_eq!(resp.version, 4);
}

#[tokio::test]
async fn unknown_types_get_not_impl_with_computed_response_type() {
    let agent = Agent::negotiated(&[]).await;
    for (req, resp, name) in [
        (0x1010_0e01u32, 0x2010_0e01u32, "269487617"),
        (0x1010_0f01, 0x2010_0f01, "269487873"),
        (0x1020_0101, 0x2020_0101, "270532865"),
        (0x1010_0001, 0x2010_0001, "269484033"),
        // A notification id sent by the host is not special: same rule.
        (0x3010_0101, 0x2010_0101, "ComputeSystemNotificationV1"),
    ] {
        let frame = agent
            .client
            .request_raw(MessageType(req), NULL_BASE.as_bytes())
            .await
            .unwrap();
        assert_eq!(frame.header.message_type, MessageType(resp));
        assert_eq!(result_of(&frame), Hresult::NOT_IMPL);
        let msg = frame.json().unwrap()["ErrorMessage"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.ends_with(&format!("header type: {name}")), "{msg}");
    }
    assert!(agent.client.failure().is_none());
}

#[tokio::test]
async fn malformed_json_gets_error_and_connection_keeps_serving() {
    let agent = Agent::negotiated(&[]).await;
    let frame = agent
        .client
        .request_raw(MessageType::EXECUTE_PROCESS, b"{\"ContainerId\": [1,2")
        .await
        .unwrap();
    assert_eq!(result_of(&frame), Hresult::INVALID_JSON);
    // Invalid JSON inside a string-embedded field.
    let body = r#"{"ContainerId":"00000000-0000-0000-0000-000000000000","ActivityId":"00000000-0000-0000-0000-000000000000","Settings":{"ProcessParameters":"{not json"}}"#;
    let frame = agent
        .client
        .request_raw(MessageType::EXECUTE_PROCESS, body.as_bytes())
        .await
        .unwrap();
    assert_eq!(result_of(&frame), Hresult::INVALID_JSON);
    let body = r#"{"ContainerId":"c","ActivityId":"00000000-0000-0000-0000-000000000000","Query":"{not json"}"#;
    let frame = agent
        .client
        .request_raw(MessageType::GET_PROPERTIES, body.as_bytes())
        .await
        .unwrap();
    assert_eq!(result_of(&frame), Hresult::INVALID_JSON);
    // Binary garbage and an empty payload.
    let frame = agent
        .client
        .request_raw(MessageType::START, &[0xff, 0x00, 0x13])
        .await
        .unwrap();
    assert_eq!(result_of(&frame), Hresult::INVALID_JSON);
    let frame = agent
        .client
        .request_raw(MessageType::WAIT_FOR_PROCESS, b"")
        .await
        .unwrap();
    assert_eq!(result_of(&frame), Hresult::INVALID_JSON);
    let stacks = agent.client.dump_stacks().await.unwrap();
    assert!(stacks.contains("threads ("));
}

#[tokio::test]
async fn activity_id_is_echoed_only_when_a_guid() {
    let agent = Agent::negotiated(&[]).await;
    let guid = "12345678-9abc-def0-1234-56789abcdef0";
    let body = format!(r#"{{"ContainerId":"x","ActivityId":"{guid}"}}"#);
    let frame = agent
        .client
        .request_raw(MessageType::START, body.as_bytes())
        .await
        .unwrap();
    assert_eq!(frame.json().unwrap()["ActivityId"], guid);
    let frame = agent
        .client
        .request_raw(
            MessageType::START,
            br#"{"ContainerId":"x","ActivityId":"not-a-guid"}"#,
        )
        .await
        .unwrap();
    assert!(frame.json().unwrap().get("ActivityId").is_none());
}

#[tokio::test]
async fn hundred_concurrent_requests_answered_once_each() {
    let agent = Agent::negotiated(&[]).await;
    let client = &agent.client;
    let calls = (0..100).map(|i| async move {
        let (ty, body) = if i % 2 == 0 {
            (MessageType::DUMP_STACKS, NULL_BASE.to_string())
        } else {
            (MessageType::START, format!(r#"{{"ContainerId":"c{i}","ActivityId":"00000000-0000-0000-0000-000000000000"}}"#))
        };
        let frame = client.request_raw(ty, body.as_bytes()).await.unwrap();
        assert_eq!(frame.header.message_type, ty.response());
        assert_eq!(result_of(&frame), Hresult::OK);
        frame.header.id
    });
    let ids: Vec<u64> = common::join_all(calls).await;
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 100);
    // Nothing extra arrives: an unexpected response id would have failed the client.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(client.failure().is_none());
}

#[tokio::test]
async fn undersized_and_oversized_frames_are_answered_and_stream_stays_in_step() {
    let mut agent = Agent::negotiated(&[]).await;
    // Size < 16: taken as a bare header.
    let id = agent.client.allocate_id();
    let rx = agent.client.expect(id);
    let header = MessageHeader {
        message_type: MessageType::START,
        size: 3,
        id,
    };
    agent.client.send_bytes(&header.encode()).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.header.message_type, MessageType::START.response());
    assert_eq!(result_of(&frame), Hresult::FAIL);
    assert!(frame.json().unwrap()["ErrorMessage"]
        .as_str()
        .unwrap()
        .contains("smaller than the 16-byte header"));
    // Size over the 16 MiB limit: the payload is skipped without being stored.
    let id = agent.client.allocate_id();
    let rx = agent.client.expect(id);
    let big = 17 * 1024 * 1024u32;
    let header = MessageHeader {
        message_type: MessageType::START,
        size: big,
        id,
    };
    let mut bytes = header.encode().to_vec();
    bytes.resize(big as usize, b' ');
    agent.client.send_bytes(&bytes).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result_of(&frame), Hresult::FAIL);
    assert!(frame.json().unwrap()["ErrorMessage"]
        .as_str()
        .unwrap()
        .contains("exceeds the limit"));
    // And the next frame is read correctly.
    agent.client.dump_stacks().await.unwrap();
    assert!(agent.alive());
}

#[tokio::test]
async fn without_v4_even_negotiate_is_refused() {
    // As the original, which registers no handler at all without -v4: the host fails at once.
    let agent = Agent::start(&[]);
    let err = agent.client.negotiate().await.unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::NOT_IMPL), "{err}");
    let err = agent.client.dump_stacks().await.unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::NOT_IMPL));
}

#[tokio::test]
async fn loglevel_trace_logs_messages_and_responses() {
    let agent = Agent::start(&["-v4", "-log-format", "json", "-loglevel", "trace"]);
    agent.client.negotiate().await.unwrap();
    agent.client.dump_stacks().await.unwrap();
    let log = agent.log();
    let traced = |msg: &str| {
        log.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["level"] == "trace" && v["msg"] == msg && v["payload"].as_str().is_some()
        })
    };
    assert!(traced("request read message"), "{log}");
    assert!(traced("request write response"), "{log}");
}

#[tokio::test]
async fn bad_requests_get_spec_hresults() {
    let agent = Agent::negotiated(&[]).await;
    let c = &agent.client;
    let hr = |r: Result<(), gcs::host::HostError>| r.unwrap_err().hresult().unwrap();
    assert_eq!(
        hr(c.shutdown_graceful("no-such-container").await),
        Hresult::SYSTEM_NOT_FOUND
    );
    assert_eq!(
        hr(c.shutdown_forced("no-such-container").await),
        Hresult::SYSTEM_NOT_FOUND
    );
    assert_eq!(
        hr(c.delete_container_state("no-such-container").await),
        Hresult::SYSTEM_NOT_FOUND
    );
    assert_eq!(
        hr(c.signal_process("no-such-container", 1, Some(15)).await),
        Hresult::SYSTEM_NOT_FOUND
    );
    assert_eq!(
        hr(c.signal_process(NULL_CONTAINER_ID, 1, None).await),
        Hresult::SYSTEM_NOT_FOUND
    );
    assert_eq!(
        hr(c.resize_console(NULL_CONTAINER_ID, 1, 10, 10).await),
        Hresult::SYSTEM_NOT_FOUND
    );
    let err = c
        .wait_for_process(NULL_CONTAINER_ID, 999_999, u32::MAX)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::NOT_FOUND));
    let err = c
        .get_properties(NULL_CONTAINER_ID, &["ProcessList"])
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::FAIL));
    assert!(err
        .to_string()
        .contains("getPropertiesV2 is not supported against the UVM"));
    let err = c
        .get_properties("nope", &["ProcessList"])
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::SYSTEM_NOT_FOUND));
    // ModifySettings validation order.
    let m = |rt: &str, res: &str| ModifySettingRequest {
        resource_type: res.into(),
        request_type: rt.into(),
        settings: None,
    };
    let err = c
        .modify_settings(NULL_CONTAINER_ID, m("Add", "NoSuchResource"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid ResourceType 'NoSuchResource'"),
        "{err}"
    );
    let err = c
        .modify_settings(NULL_CONTAINER_ID, m("Add", "NetworkNamespace"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid ResourceType 'NetworkNamespace'"),
        "{err}"
    );
    let err = c
        .modify_settings(NULL_CONTAINER_ID, m("Update", "CombinedLayers"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the RequestType \"Update\" is not supported"),
        "{err}"
    );
    let err = c
        .modify_settings("c1", m("Add", "MappedVirtualDisk"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not supported for containers"),
        "{err}"
    );
    let err = c
        .modify_settings("no-such-container", m("Update", "ContainerConstraints"))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::SYSTEM_NOT_FOUND));
    // Create: schema version below 2.1, null spec, missing process/root/linux.
    let create = |settings: Value| async move {
        let req = serde_json::json!({"ContainerId": "c1", "ActivityId": NULL_CONTAINER_ID, "ContainerConfig": settings.to_string()});
        c.call::<_, CreateResponse>(MessageType::CREATE, &req)
            .await
            .unwrap_err()
    };
    let err =
        create(serde_json::json!({"SchemaVersion": {"Major": 1}, "OciSpecification": {}})).await;
    assert_eq!(err.hresult(), Some(Hresult::INVALID_JSON));
    let err = create(
        serde_json::json!({"SchemaVersion": {"Major": 2, "Minor": 1}, "OciSpecification": null}),
    )
    .await;
    assert_eq!(err.hresult(), Some(Hresult::FAIL));
    assert!(err.to_string().contains("OciSpecification"), "{err}");
    let err = create(serde_json::json!({"SchemaVersion": {"Major": 2, "Minor": 1}, "OciSpecification": {"process": {}}})).await;
    assert!(
        err.to_string().contains("OciSpecification.root is missing"),
        "{err}"
    );
    let req = serde_json::json!({"ContainerId": "c1", "ContainerConfig": "{not json"});
    let err = c
        .call::<_, CreateResponse>(MessageType::CREATE, &req)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::INVALID_JSON));
    // Start needs no container (a no-op in the original).
    c.start_container("no-such-container").await.unwrap();
    assert!(c.failure().is_none());
}

#[tokio::test]
async fn dump_stacks_lists_threads_and_requests_in_flight() {
    let agent = Agent::negotiated(&[]).await;
    let stacks = agent.client.dump_stacks().await.unwrap();
    assert!(stacks.contains("threads ("), "{stacks}");
    assert!(stacks.contains("gcs-worker"), "{stacks}");
    assert!(stacks.contains("requests in flight (1):"), "{stacks}");
    assert!(stacks.contains("DumpStacks"), "{stacks}");
    assert!(stacks.len() < 60 * 1024 + 64);
}

#[tokio::test]
async fn uvm_shutdown_answers_then_exits() {
    let mut agent = Agent::negotiated(&[]).await;
    agent
        .client
        .shutdown_forced(NULL_CONTAINER_ID)
        .await
        .unwrap();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("agent did not exit");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn host_closing_the_bridge_ends_an_inouterr_agent() {
    let mut agent = Agent::negotiated(&[]).await;
    let Agent { client, .. } = &mut agent;
    drop(std::mem::replace(
        client,
        gcs::host::BridgeClient::new(tokio::io::duplex(1).0),
    ));
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("agent did not exit");
    assert!(status.success());
}

#[tokio::test]
async fn json_logs_are_logrus_lines() {
    let agent = Agent::start(&["-v4", "-log-format", "json", "-loglevel", "debug"]);
    agent.client.negotiate().await.unwrap();
    agent.client.dump_stacks().await.unwrap();
    let log = agent.log();
    let mut saw_started = false;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert!(
            ["trace", "debug", "info", "warning", "error"].contains(&v["level"].as_str().unwrap())
        );
        saw_started |= v["msg"] == "GCS started";
    }
    assert!(saw_started, "{log}");
    assert!(log.contains("\"msg_type\":\"DumpStacks\""), "{log}");
}

#[test]
fn unknown_flag_exits_2() {
    let out = std::process::Command::new(common::GCS)
        .arg("-no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flag provided but not defined: -no-such-flag"),
        "{err}"
    );
    assert!(err.contains("Usage of gcs"), "{err}");
    let out = std::process::Command::new(common::GCS)
        .args(["-loglevel", "loud"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn random_frames_never_kill_the_agent() {
    let mut agent = Agent::negotiated(&[]).await;
    let mut rng = common::mutate::Rng::new(0x2545_f491_4f6c_dd1d);
    let mut next = || rng.next();
    let types = [
        0x1010_0101u32,
        0x1010_0201,
        0x1010_0501,
        0x1010_0601,
        0x1010_0701,
        0x1010_0801,
        0x1010_0901,
        0x1010_0a01,
        0x1010_0c01,
        0x1010_0d01,
        0x1010_0e01,
        0xdead_beef,
    ];
    for _ in 0..300 {
        let ty = types[(next() % types.len() as u64) as usize];
        let len = (next() % 300) as usize;
        let mut payload: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
        if next() % 2 == 0 {
            // Plausible JSON with random field values.
            payload = format!(
                r#"{{"ContainerId":"{}","ProcessId":{},"Settings":{{"ProcessParameters":"{}"}},"Request":{{"ResourceType":"{}"}},"Query":"{}"}}"#,
                ["x", "", NULL_CONTAINER_ID][(next() % 3) as usize],
                next() % 100_000,
                ["{}", "null", "[1]"][(next() % 3) as usize],
                ["MappedVirtualDisk", "", "Network"][(next() % 3) as usize],
                ["", "{}", "{\\\"PropertyTypes\\\":null}"][(next() % 3) as usize],
            )
            .into_bytes();
        }
        let frame = agent
            .client
            .request_raw(MessageType(ty), &payload)
            .await
            .unwrap();
        assert_eq!(frame.header.message_type, MessageType(ty).response());
        let _ = encode_frame; // the client framed it
    }
    assert!(agent.alive());
    assert!(agent.client.failure().is_none());
    agent.client.dump_stacks().await.unwrap();
}
