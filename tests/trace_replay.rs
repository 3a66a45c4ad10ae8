//! Replays the real traces against our agent (sandboxed, as root) in their recorded order, and
//! compares every guest frame with the real guest's: same response type, same `Result`, same
//! keys, same values (ids, PIDs and free text aside), same notifications.
//!
//! The host side acts as the recording's host did: it types `hello` and half-closes each
//! stdin, drains outputs, and waits for a container init's first output line before going on.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{busybox_layer, read_trace, Agent, TraceFrame};
use gcs::protocol::header::encode_frame;
use gcs::protocol::MessageType;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Traces replayed, with the request ids left out and why. 05 and 06 signal a pid written
/// literally in the trace (covered by `tests/uvm_process.rs` instead).
const REPLAYED: &[(&str, &[(u64, &str)])] = &[
    ("01-negotiate-dumpstacks.jsonl", &[]),
    ("02-uvm-cat-stdio.jsonl", &[]),
    ("03-uvm-exit7-stderr.jsonl", &[]),
    ("03b-uvm-fd-layout.jsonl", &[]),
    ("04-uvm-exec-nonexistent.jsonl", &[]),
    ("07-uvm-tty-resize.jsonl", &[]),
    ("08-getproperties-uvm.jsonl", &[]),
    ("09-container-lifecycle.jsonl", &[]),
    ("10-container-exec.jsonl", &[]),
    ("11-container-signal.jsonl", &[]),
    ("12-container-wait-timeout-kill.jsonl", &[]),
    ("13-container-tty-resize.jsonl", &[]),
    ("19-container-tty-init.jsonl", &[]),
    ("14-container-getproperties.jsonl", &[]),
    ("15-container-duplicate-create.jsonl", &[]),
    ("16-unsupported-and-errors.jsonl", &[]),
    ("17-negotiation-edge.jsonl", &[]),
];

/// Traces whose processes' stdout is compared with the recording's, byte for byte: the
/// terminal's initial size (`consoleSize`) shows in it before any resize.
const STDOUT_COMPARED: &[&str] = &[
    "13-container-tty-resize.jsonl",
    "19-container-tty-init.jsonl",
];

/// What each process of a replay wrote to its stdout, in ExecuteProcess order.
type Outputs = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// Fields whose values are free text or vary per run.
const FREE: &[&str] = &[
    "ErrorMessage",
    "ErrorRecords",
    "GuestStacks",
    "ProcessId",
    "Properties",
];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Acts as the host's stdio listeners for one process. Resolves `first_line` once the
/// process's stdout produced a line.
fn serve_stdio(
    agent: &Agent,
    ports: &Value,
    first_line: oneshot::Sender<()>,
    stdin_gate: oneshot::Receiver<()>,
    outputs: &Outputs,
) {
    let slot = {
        let mut all = outputs.lock().unwrap();
        all.push(Vec::new());
        all.len() - 1
    };
    let mut stdin_gate = Some(stdin_gate);
    let host = agent.host();
    let mut first_line = Some(first_line);
    for (key, is_stdin) in [("StdIn", true), ("StdOut", false), ("StdErr", false)] {
        let Some(port) = ports.get(key).and_then(|p| p.as_u64()) else {
            continue;
        };
        let listener = host.listen(port as u32).unwrap();
        let notify = if key == "StdOut" {
            first_line.take()
        } else {
            None
        };
        let gate = if is_stdin { stdin_gate.take() } else { None };
        let outputs = (key == "StdOut").then(|| outputs.clone());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            if is_stdin {
                // Input goes only once every request the recorded host sent before the next
                // answer has been sent (a ResizeConsole must reach a tty process that is still
                // waiting for its line).
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                let _ = s.write_all(b"hello\n").await;
                let _ = s.shutdown().await;
                // Keep the socket open until the agent closes it.
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
                return;
            }
            let mut notify = notify;
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(outputs) = &outputs {
                            outputs.lock().unwrap()[slot].extend_from_slice(&buf[..n]);
                        }
                        if buf[..n].contains(&b'\n') {
                            if let Some(tx) = notify.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                }
            }
        });
    }
}

fn compare(name: &str, id: u64, got: &Value, want: &Value) {
    assert_eq!(
        got["Result"], want["Result"],
        "{name} id {id}: {got} vs {want}"
    );
    assert_eq!(keys(got), keys(want), "{name} id {id}: {got} vs {want}");
    for (k, v) in want.as_object().unwrap() {
        if !FREE.contains(&k.as_str()) {
            assert_eq!(&got[k], v, "{name} id {id} key {k}");
        }
    }
    if let Some(records) = want["ErrorRecords"].as_array() {
        let ours = got["ErrorRecords"].as_array().unwrap();
        assert_eq!(ours.len(), records.len());
        for (a, b) in ours.iter().zip(records) {
            assert_eq!(a["Result"], b["Result"]);
            assert_eq!(a["ModuleName"], b["ModuleName"]);
        }
    }
}

async fn replay(name: &str, skipped: &[(u64, &str)]) -> usize {
    let agent = Agent::sandboxed_raw(&[]);
    busybox_layer(&agent);
    let frames = read_trace(name);
    let mut pids: HashMap<u64, u64> = HashMap::new();
    let mut pending: HashMap<u64, oneshot::Receiver<gcs::host::Frame>> = HashMap::new();
    let mut gates: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
    let mut waits = std::collections::HashSet::new();
    let outputs = Outputs::default();
    let mut compared = 0;
    for frame in &frames {
        if skipped.iter().any(|(id, _)| *id == frame.id) {
            continue;
        }
        if frame.is_host_request() {
            if frame.type_u32() == MessageType::WAIT_FOR_PROCESS.0 {
                waits.insert(frame.id);
            }
            send(&agent, frame, &pids, &mut pending, &mut gates, &outputs).await;
            continue;
        }
        if frame.type_u32() == MessageType::NOTIFICATION.0 {
            let n = agent
                .client
                .next_notification(Duration::from_secs(20))
                .await
                .unwrap();
            assert_eq!(
                n.container_id,
                frame.body["ContainerId"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(
                serde_json::to_value(n.notification_type).unwrap(),
                frame.body["Type"],
                "{name}"
            );
            compared += 1;
            continue;
        }
        // An answer to a wait may need the input: the host has typed by then.
        if waits.contains(&frame.id) {
            for (_, gate) in gates.drain(..) {
                let _ = gate.send(());
            }
        }
        let rx = pending
            .remove(&frame.id)
            .unwrap_or_else(|| panic!("{name}: response {} to nothing", frame.id));
        let got = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: no answer to id {}; log:\n{}",
                    frame.id,
                    agent.log()
                )
            })
            .unwrap();
        assert_eq!(
            got.header.message_type.0,
            frame.type_u32(),
            "{name} id {}",
            frame.id
        );
        let body = got.json().unwrap();
        compare(name, frame.id, &body, &frame.body);
        // The host has seen an answer to something it sent after an exec (a ResizeConsole):
        // only now does it type into that exec's stdin, so that the requests it sent first
        // have taken effect, as in the recording.
        for (exec_id, gate) in std::mem::take(&mut gates) {
            if exec_id == frame.id {
                gates.push((exec_id, gate));
            } else {
                let _ = gate.send(());
            }
        }
        if let (Some(theirs), Some(ours)) =
            (frame.body["ProcessId"].as_u64(), body["ProcessId"].as_u64())
        {
            pids.insert(theirs, ours);
        }
        compared += 1;
    }
    assert!(
        agent.client.failure().is_none(),
        "{name}: {:?}",
        agent.client.failure()
    );
    if STDOUT_COMPARED.contains(&name) {
        compared += compare_stdout(name, &outputs).await;
    }
    compared
}

/// Every stdout the recording's host saw was produced by one of the replayed processes.
async fn compare_stdout(name: &str, outputs: &Outputs) -> usize {
    let outcome = common::traces_dir().join(name.replace(".jsonl", ".outcome.json"));
    let outcome: Value = serde_json::from_slice(&std::fs::read(outcome).unwrap()).unwrap();
    let mut compared = 0;
    for want in outcome["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["result"]["stdout"].as_str())
    {
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen = outputs
                .lock()
                .unwrap()
                .iter()
                .map(|o| String::from_utf8_lossy(o).into_owned())
                .collect();
            if seen.iter().any(|o| o == want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            seen.iter().any(|o| o == want),
            "{name}: the recording's stdout {want:?} was not produced; ours: {seen:?}"
        );
        compared += 1;
    }
    assert!(
        compared > 0,
        "{name}: the recording shows no stdout to compare"
    );
    compared
}

async fn send(
    agent: &Agent,
    request: &TraceFrame,
    pids: &HashMap<u64, u64>,
    pending: &mut HashMap<u64, oneshot::Receiver<gcs::host::Frame>>,
    gates: &mut Vec<(u64, oneshot::Sender<()>)>,
    outputs: &Outputs,
) {
    let mut body = request.body.clone();
    if let Some(pid) = body.get("ProcessId").and_then(|p| p.as_u64()) {
        if let Some(ours) = pids.get(&pid) {
            body["ProcessId"] = Value::from(*ours);
        }
    }
    let mut first_line = None;
    if request.type_u32() == MessageType::EXECUTE_PROCESS.0 {
        let (tx, rx) = oneshot::channel();
        let (gate_tx, gate_rx) = oneshot::channel();
        gates.push((request.id, gate_tx));
        serve_stdio(
            agent,
            &body["Settings"]["VsockStdioRelaySettings"],
            tx,
            gate_rx,
            outputs,
        );
        let params = body["Settings"]["ProcessParameters"].as_str().unwrap_or("");
        let is_container_init = body["ContainerId"] != gcs::protocol::NULL_CONTAINER_ID
            && !params.contains("OciProcess");
        // A terminal's first line is its initial size: the recordings show it before the
        // resize the host sent right after the exec's answer took effect (the original's slower
        // exec let the process print it first). Waiting for it keeps that order here.
        let is_tty =
            params.contains(r#""terminal":true"#) || params.contains(r#""EmulateConsole":true"#);
        if is_container_init || is_tty {
            first_line = Some(rx);
        }
    }
    let mut payload = serde_json::to_vec(&body).unwrap();
    payload.push(b'\n');
    pending.insert(request.id, agent.client.expect(request.id));
    agent
        .client
        .send_bytes(&encode_frame(
            MessageType(request.type_u32()),
            request.id,
            &payload,
        ))
        .await
        .unwrap();
    if let Some(rx) = first_line {
        // The recording's host read the init's (or the terminal's) first line before it went on.
        let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
    }
}

#[tokio::test]
async fn replay_traces() {
    for (name, skipped) in REPLAYED {
        let compared = replay(name, skipped).await;
        assert!(compared > 0, "{name}: nothing compared");
    }
}
