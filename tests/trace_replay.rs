//! Replays the host's frames of the real traces against our agent and compares each response
//! with the real guest's: same response type, same `Result`, same keys, same values (ids, PIDs
//! and free text aside).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{read_trace, Agent};
use gcs::protocol::header::encode_frame;
use gcs::protocol::MessageType;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Traces replayed so far, with the request ids left out and why. 05 and 06 signal a pid
/// written literally in the trace, so they are covered by `tests/uvm_process.rs` instead; 07
/// needs typed input on its pty (also covered there). Container traces (09–15) join this list
/// with the runtime.
const REPLAYED: &[(&str, &[(u64, &str)])] = &[
    ("01-negotiate-dumpstacks.jsonl", &[]),
    ("02-uvm-cat-stdio.jsonl", &[]),
    ("03-uvm-exit7-stderr.jsonl", &[]),
    ("03b-uvm-fd-layout.jsonl", &[]),
    ("04-uvm-exec-nonexistent.jsonl", &[]),
    ("08-getproperties-uvm.jsonl", &[]),
    (
        "16-unsupported-and-errors.jsonl",
        &[(7, "PodCgroupMemoryLimit needs the /pods cgroup")],
    ),
    ("17-negotiation-edge.jsonl", &[]),
];

/// Fields whose values are free text or vary per run.
const FREE: &[&str] = &["ErrorMessage", "ErrorRecords", "GuestStacks", "ProcessId"];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Acts as the host's stdio listeners for one process: stdin is closed at once (EOF), output
/// is drained.
fn serve_stdio(agent: &Agent, ports: &Value) {
    let host = agent.host();
    for (key, is_stdin) in [("StdIn", true), ("StdOut", false), ("StdErr", false)] {
        let Some(port) = ports.get(key).and_then(|p| p.as_u64()) else {
            continue;
        };
        let listener = host.listen(port as u32).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            if is_stdin {
                let _ = s.shutdown().await;
            } else {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            }
        });
    }
}

#[tokio::test]
async fn replay_traces() {
    for (name, skipped) in REPLAYED {
        let agent = Agent::start(&["-v4"]);
        let frames = read_trace(name);
        let mut compared = 0;
        // The trace's pids and ours differ: map them through the ExecuteProcess responses.
        let mut pids = std::collections::HashMap::new();
        for request in frames.iter().filter(|f| f.is_host_request()) {
            if skipped.iter().any(|(id, _)| *id == request.id) {
                continue;
            }
            let expected = frames
                .iter()
                .find(|f| !f.is_host_request() && f.id == request.id && f.type_u32() >> 28 == 2)
                .unwrap_or_else(|| panic!("{name}: no response to id {}", request.id));
            if request.type_u32() == MessageType::EXECUTE_PROCESS.0 {
                serve_stdio(&agent, &request.body["Settings"]["VsockStdioRelaySettings"]);
            }
            let mut body = request.body.clone();
            if let Some(pid) = body.get("ProcessId").and_then(|p| p.as_u64()) {
                if let Some(ours) = pids.get(&pid) {
                    body["ProcessId"] = Value::from(*ours);
                }
            }
            let mut payload = serde_json::to_vec(&body).unwrap();
            payload.push(b'\n');
            let rx = agent.client.expect(request.id);
            agent
                .client
                .send_bytes(&encode_frame(
                    MessageType(request.type_u32()),
                    request.id,
                    &payload,
                ))
                .await
                .unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .unwrap_or_else(|_| panic!("{name}: no answer to id {}", request.id))
                .unwrap();
            assert_eq!(
                got.header.message_type.0,
                expected.type_u32(),
                "{name} id {}",
                request.id
            );
            let body = got.json().unwrap();
            let want = &expected.body;
            assert_eq!(
                body["Result"], want["Result"],
                "{name} id {}: {body} vs {want}",
                request.id
            );
            assert_eq!(
                keys(&body),
                keys(want),
                "{name} id {}: {body} vs {want}",
                request.id
            );
            for (k, v) in want.as_object().unwrap() {
                if !FREE.contains(&k.as_str()) {
                    assert_eq!(&body[k], v, "{name} id {} key {k}", request.id);
                }
            }
            if let Some(records) = want["ErrorRecords"].as_array() {
                let ours = body["ErrorRecords"].as_array().unwrap();
                assert_eq!(ours.len(), records.len());
                for (a, b) in ours.iter().zip(records) {
                    assert_eq!(a["Result"], b["Result"]);
                    assert_eq!(a["ModuleName"], b["ModuleName"]);
                }
            }
            if let (Some(theirs), Some(ours)) =
                (want["ProcessId"].as_u64(), body["ProcessId"].as_u64())
            {
                pids.insert(theirs, ours);
            }
            compared += 1;
        }
        assert!(compared > 0, "{name}: nothing compared");
        assert!(
            agent.client.failure().is_none(),
            "{name}: {:?}",
            agent.client.failure()
        );
    }
}
