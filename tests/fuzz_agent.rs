//! End-to-end mutation fuzzing of the real binary (issue 15): one long-lived agent, sandboxed
//! (PID 1 of fresh namespaces, private /run, /dev and network), fed mutated requests of every
//! type seeded from the traces — type swaps, deleted keys, huge numbers, invalid UTF-8,
//! 10,000-deep nesting, 10 MiB strings, truncated and oversize frames, and connections dropped
//! in the middle of a request. After every batch it must still answer NegotiateProtocol and
//! DumpStacks; every response must be well-formed, within the host's 64 KiB and answer a request
//! that was asked, once.
//!
//! Bounded by `GCS_FUZZ_SECONDS` (30 by default; `make fuzz` runs it for long); the seed is
//! printed and `GCS_FUZZ_SEED` replays it. The batch that killed or wedged the agent is saved
//! byte-exact under `target/tmp/fuzz-agent-crashes/`. Shutdown requests are left out (a UVM
//! shutdown ends the agent by design); the in-process harness covers their decoding.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mutate::{self, Input, Limits, Rng};
use common::Agent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

const NEGOTIATE: u32 = 0x1010_0b01;
const DUMP_STACKS: u32 = 0x1010_0c01;
const SHUTDOWNS: [u32; 2] = [0x1010_0301, 0x1010_0401];
const BATCH: usize = 40;

/// What the reader task saw.
enum Seen {
    Frame { ty: u32, id: u64, body: Vec<u8> },
    Closed(String),
}

struct Conn {
    write: OwnedWriteHalf,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        let (mut read, write) = stream.into_split();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let mut header = [0u8; 16];
                if let Err(e) = read.read_exact(&mut header).await {
                    let _ = tx.send(Seen::Closed(e.to_string()));
                    return;
                }
                let ty = u32::from_le_bytes(header[0..4].try_into().unwrap());
                let size = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
                let id = u64::from_le_bytes(header[8..16].try_into().unwrap());
                if !(16..=0x10000).contains(&size) {
                    let _ = tx.send(Seen::Closed(format!(
                        "frame of size {size} (type {ty:#x}, id {id}): the host would tear the bridge down"
                    )));
                    return;
                }
                let mut body = vec![0u8; size - 16];
                if let Err(e) = read.read_exact(&mut body).await {
                    let _ = tx.send(Seen::Closed(e.to_string()));
                    return;
                }
                if tx.send(Seen::Frame { ty, id, body }).is_err() {
                    return;
                }
            }
        });
        Conn { write, seen }
    }

    /// Sends a request and records it as waiting for its answer.
    async fn ask(
        &mut self,
        ledger: &mut Ledger,
        ty: u32,
        id: u64,
        payload: &[u8],
    ) -> std::io::Result<()> {
        ledger.pending.insert(id, ty);
        self.send(ty, id, payload).await
    }

    async fn send(&mut self, ty: u32, id: u64, payload: &[u8]) -> std::io::Result<()> {
        let frame =
            gcs::protocol::header::encode_frame(gcs::protocol::MessageType(ty), id, payload);
        self.write.write_all(&frame).await
    }
}

/// Requests sent and not yet answered, by id: their message type.
struct Ledger {
    pending: HashMap<u64, u32>,
    /// Requests of connections this fuzzer dropped: their answers may have gone down with the
    /// connection, or may come on the next one (once).
    orphans: HashMap<u64, u32>,
    answered: u64,
    notifications: u64,
    /// UVM processes the campaign started (killed at its end, so that the agent is at rest).
    pids: Vec<u64>,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            pending: HashMap::new(),
            orphans: HashMap::new(),
            answered: 0,
            notifications: 0,
            pids: Vec::new(),
        }
    }

    /// Checks one frame from the agent; the reason it is wrong, if it is.
    fn check(&mut self, ty: u32, id: u64, body: &[u8]) -> Result<(), String> {
        if ty & 0xF000_0000 == 0x3000_0000 {
            self.notifications += 1;
            return serde_json::from_slice::<serde_json::Value>(body)
                .map(drop)
                .map_err(|e| format!("notification that is not JSON: {e}"));
        }
        let Some(asked) = self
            .pending
            .remove(&id)
            .or_else(|| self.orphans.remove(&id))
        else {
            return Err(format!(
                "response {ty:#x} to id {id}, which is not waiting for one"
            ));
        };
        let expected = gcs::protocol::MessageType(asked).response().0;
        if ty != expected {
            return Err(format!(
                "response type {ty:#x} to a {asked:#x} (expected {expected:#x})"
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| format!("response to id {id} is not JSON: {e}"))?;
        if !value.get("Result").is_some_and(|r| r.is_i64()) {
            return Err(format!("response to id {id} has no Result: {value}"));
        }
        if asked == 0x1010_0501 && value["Result"] == 0 {
            if let Some(pid) = value["ProcessId"].as_u64() {
                self.pids.push(pid);
            }
        }
        self.answered += 1;
        Ok(())
    }
}

/// Reads what the agent sends until `until` holds or `timeout` passes.
async fn pump(
    conn: &mut Conn,
    ledger: &mut Ledger,
    timeout: Duration,
    until: impl Fn(&Ledger) -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !until(ledger) {
        match tokio::time::timeout_at(deadline, conn.seen.recv()).await {
            Ok(Some(Seen::Frame { ty, id, body })) => ledger.check(ty, id, &body)?,
            Ok(Some(Seen::Closed(e))) => return Err(format!("the bridge closed: {e}")),
            Ok(None) => return Err("the bridge reader ended".into()),
            Err(_) => return Err(format!("no answer within {timeout:?}")),
        }
    }
    Ok(())
}

/// Brings the agent to rest: waits for every UVM process the campaign started (they end by
/// themselves: UVM processes cannot be signalled) so that their records go, lets what can
/// finish finish, and waits out tokio's 10 s keep-alive of idle blocking threads. Answers lost
/// with dropped connections leave processes this fuzzer never heard of, so every pid up to well
/// beyond the highest seen is waited for (the sandbox's pids count from 1).
async fn settle(conn: &mut Conn, ledger: &mut Ledger, next_id: &mut u64) {
    let highest = ledger.pids.iter().copied().max().unwrap_or(0);
    for pid in std::mem::take(&mut ledger.pids)
        .into_iter()
        .chain(2..highest * 2 + 1000)
    {
        let wait = format!(
            r#"{{"ContainerId":"00000000-0000-0000-0000-000000000000","ProcessId":{pid},"TimeoutInMs":5000}}"#
        );
        conn.ask(ledger, 0x1010_0601, *next_id, wait.as_bytes())
            .await
            .unwrap();
        *next_id += 1;
    }
    let _ = pump(conn, ledger, Duration::from_secs(60), |l| {
        l.pending.len() < 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
}

fn saved_batch(dir: &Path, batch: &[Input]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let mut names = Vec::new();
    for (i, input) in batch.iter().enumerate() {
        let path = dir.join(format!("{:08x}-batch{i:03}.bin", input.message_type));
        std::fs::write(&path, &input.payload).unwrap();
        names.push(path.display().to_string());
    }
    names.join("\n  ")
}

#[tokio::test]
async fn the_real_agent_survives_mutated_traffic() {
    let budget = mutate::fuzz_seconds(30);
    let seed = mutate::fuzz_seed();
    eprintln!("e2e fuzz seed {seed} (GCS_FUZZ_SEED={seed} replays this run) for {budget:?}");
    let crash_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-agent-crashes");
    // UVM processes cannot be signalled (as in the original); the traces' `sleep 100` is made
    // `sleep 1` so that what the campaign starts ends by itself before the agent is measured
    // at rest.
    let seeds: Vec<Input> = mutate::trace_seeds()
        .into_iter()
        .filter(|s| !SHUTDOWNS.contains(&s.message_type))
        .map(|mut s| {
            let text = String::from_utf8_lossy(&s.payload)
                .replace(r#"\"sleep\",\"100\""#, r#"\"sleep\",\"1\""#);
            s.payload = text.into_bytes();
            s
        })
        .collect();
    assert!(
        !seeds
            .iter()
            .any(|s| String::from_utf8_lossy(&s.payload).contains(r#"\"100\""#)),
        "a seed still sleeps for 100 s"
    );
    let keys = mutate::vocabulary(&seeds);
    let limits = Limits {
        big_string: 10 << 20,
        deep: 10_000,
    };
    let mut agent = Agent::sandboxed_isolated_over_vsock(&["-loglevel", "info"]).await;
    let pid = agent.agent_pid();
    let host = agent.host();
    agent.client.detach().await;
    let accept = || async {
        tokio::time::timeout(Duration::from_secs(10), host.accept_bridge())
            .await
            .expect("the agent did not redial")
            .unwrap()
    };
    let mut conn = Conn::new(accept().await);
    let mut ledger = Ledger::new();
    let negotiate = br#"{"ContainerId":"","MinimumVersion":4,"MaximumVersion":4}"#;
    let mut next_id = 1u64;
    let mut rng = Rng::new(seed);
    conn.ask(&mut ledger, NEGOTIATE, next_id, negotiate)
        .await
        .unwrap();
    next_id += 1;
    pump(&mut conn, &mut ledger, Duration::from_secs(10), |l| {
        l.pending.is_empty()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_fresh = common::status_field(pid, "VmRSS");
    let anon_fresh = common::status_field(pid, "RssAnon");
    // A first sixth of the campaign warms the agent up (what it sets up once, on first use:
    // the blocking pool, lazily built tables); the memory it then holds at rest is the baseline
    // the rest of the campaign must return to.
    let warm_up = (budget / 6).clamp(Duration::from_secs(3), Duration::from_secs(60));
    let mut baseline = None;
    let start = Instant::now();
    let mut worst = (common::status_field(pid, "VmHWM"),);
    let (mut sent, mut batches, mut drops, mut oversize) = (0u64, 0u64, 0u64, 0u64);
    while start.elapsed() < budget {
        if baseline.is_none() && start.elapsed() > warm_up {
            settle(&mut conn, &mut ledger, &mut next_id).await;
            baseline = Some((
                common::status_field(pid, "VmRSS"),
                common::status_field(pid, "RssAnon"),
            ));
        }
        let batch: Vec<Input> = (0..BATCH)
            .map(|_| loop {
                let input = mutate::mutate(&mut rng, &seeds, &keys, limits);
                if !SHUTDOWNS.contains(&input.message_type) {
                    break input;
                }
            })
            .collect();
        let mut failure = None;
        for input in &batch {
            if let Err(e) = conn.send(input.message_type, next_id, &input.payload).await {
                failure = Some(format!("write: {e}"));
                break;
            }
            ledger.pending.insert(next_id, input.message_type);
            next_id += 1;
            sent += 1;
        }
        // Now and then: a frame beyond the 16 MiB limit (read and skipped), or a connection
        // dropped in the middle of a request (the agent redials; what it owed comes on the new
        // connection, which this fuzzer does not wait for).
        if failure.is_none() && rng.one_in(50) {
            oversize += 1;
            let size = (16u32 << 20) + 17;
            let mut frame = gcs::protocol::header::encode_frame(
                gcs::protocol::MessageType(mutate::TYPES[rng.below(14)]),
                next_id,
                &[],
            );
            frame[4..8].copy_from_slice(&size.to_le_bytes());
            frame.resize(size as usize, b' ');
            ledger
                .pending
                .insert(next_id, u32::from_le_bytes(frame[0..4].try_into().unwrap()));
            next_id += 1;
            if let Err(e) = conn.write.write_all(&frame).await {
                failure = Some(format!("write: {e}"));
            }
        }
        if failure.is_none() && rng.one_in(30) {
            drops += 1;
            let input = rng.pick(&batch).clone();
            let frame = gcs::protocol::header::encode_frame(
                gcs::protocol::MessageType(input.message_type),
                next_id,
                &input.payload,
            );
            let _ = conn.write.write_all(&frame[..rng.below(frame.len())]).await;
            drop(conn);
            ledger.orphans.extend(ledger.pending.drain());
            conn = Conn::new(accept().await);
            // Answers owed on the old connection arrive on this one first; it is a new
            // connection all the same, and negotiates again.
            conn.ask(&mut ledger, NEGOTIATE, next_id, negotiate)
                .await
                .unwrap();
            next_id += 1;
        }
        // The agent still answers.
        let (n, d) = (next_id, next_id + 1);
        next_id += 2;
        if failure.is_none() {
            for (id, ty, payload) in [
                (n, NEGOTIATE, &negotiate[..]),
                (d, DUMP_STACKS, &br#"{"ContainerId":""}"#[..]),
            ] {
                ledger.pending.insert(id, ty);
                if let Err(e) = conn.send(ty, id, payload).await {
                    failure = Some(format!("write: {e}"));
                }
            }
        }
        if failure.is_none() {
            failure = pump(&mut conn, &mut ledger, Duration::from_secs(60), |l| {
                !l.pending.contains_key(&n) && !l.pending.contains_key(&d)
            })
            .await
            .err();
        }
        // Requests that wait (devices, processes) stay in flight; keep them bounded here too.
        if failure.is_none() && ledger.pending.len() > 300 {
            failure = pump(&mut conn, &mut ledger, Duration::from_secs(120), |l| {
                l.pending.len() < 200
            })
            .await
            .err();
        }
        if let Some(failure) = failure {
            let alive = agent.alive();
            let mut kinds: HashMap<u32, usize> = HashMap::new();
            for ty in ledger.pending.values() {
                *kinds.entry(*ty).or_default() += 1;
            }
            eprintln!("waiting, by type: {kinds:x?}");
            panic!(
                "after {sent} requests in {batches} batches the agent {}: {failure}\nthe batch, byte-exact:\n  {}\nlog tail:\n{}",
                if alive { "stopped answering" } else { "died" },
                saved_batch(&crash_dir, &batch),
                agent.log().lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        batches += 1;
        let hwm = common::status_field(pid, "VmHWM");
        if hwm > worst.0 + 16 * 1024 {
            eprintln!(
                "batch {batches} raised the peak RSS from {} to {hwm} KiB: {}",
                worst.0,
                batch
                    .iter()
                    .filter(|i| i.payload.len() > 65536)
                    .map(|i| format!("{:#x} of {} bytes", i.message_type, i.payload.len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            saved_batch(&crash_dir.join(format!("peak-{batches}")), &batch);
        }
        worst.0 = worst.0.max(hwm);
    }
    // Let what the campaign started finish, then look at the agent at rest.
    settle(&mut conn, &mut ledger, &mut next_id).await;
    if std::env::var_os("GCS_FUZZ_SHOW_STACKS").is_some() {
        conn.send(DUMP_STACKS, next_id, br#"{"ContainerId":""}"#)
            .await
            .unwrap();
        loop {
            match conn.seen.recv().await {
                Some(Seen::Frame { id, body, .. }) if id == next_id => {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    eprintln!("{}", v["GuestStacks"].as_str().unwrap_or_default());
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    if std::env::var_os("GCS_FUZZ_SHOW_STACKS").is_some() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            if status.lines().any(|l| l == format!("PPid:\t{pid}")) {
                let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let field = |k: &str| {
                    status
                        .lines()
                        .find(|l| l.starts_with(k))
                        .unwrap_or("")
                        .to_string()
                };
                eprintln!(
                    "child {} {} {} {:?}",
                    field("NSpid"),
                    field("State"),
                    field("SigIgn"),
                    String::from_utf8_lossy(&cmd)
                );
            }
        }
    }
    if let Ok(secs) = std::env::var("GCS_FUZZ_LINGER") {
        eprintln!("agent pid {pid} lingers {secs} s");
        tokio::time::sleep(Duration::from_secs(secs.parse().unwrap())).await;
    }
    let rss_end = common::status_field(pid, "VmRSS");
    let anon_end = common::status_field(pid, "RssAnon");
    let (rss_start, anon_start) = baseline.unwrap_or((rss_fresh, anon_fresh));
    let peak = common::status_field(pid, "VmHWM");
    let threads = common::status_field(pid, "Threads");
    eprintln!(
        "{sent} mutated requests in {batches} batches ({oversize} oversize frames, {drops} dropped connections): \
         {} answered, {} notifications, {} still waiting; RSS {rss_fresh} KiB fresh, {rss_start} KiB after warm-up, {rss_end} KiB at rest \
         (anonymous: {anon_fresh}, {anon_start}, {anon_end} KiB), peak {peak} KiB, {threads} threads",
        ledger.answered,
        ledger.notifications,
        ledger.pending.len()
    );
    assert!(agent.alive(), "the agent died");
    assert!(batches >= 3, "only {batches} batches in {budget:?}");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    // At rest again, the agent's own memory is back within 2 MiB of where it started (its
    // file-backed pages, the binary's code, grow with the code paths the campaign touched).
    assert!(
        anon_end <= anon_start + 2 * 1024,
        "anonymous RSS {anon_start} KiB at start, {anon_end} KiB at rest"
    );
}

/// Every saved finding (`tests/fuzz/regressions/`) sent to the real agent: each is answered,
/// once and well-formed, and the agent still answers NegotiateProtocol and DumpStacks after.
#[tokio::test]
async fn saved_findings_against_the_real_agent() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let mut findings = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let message_type = u32::from_str_radix(&name[..8], 16).unwrap();
            if !SHUTDOWNS.contains(&message_type) {
                findings.push((message_type, std::fs::read(&path).unwrap()));
            }
        }
    }
    let agent = Agent::sandboxed_isolated_over_vsock(&["-loglevel", "info"]).await;
    let host = agent.host();
    agent.client.detach().await;
    let stream = tokio::time::timeout(Duration::from_secs(10), host.accept_bridge())
        .await
        .expect("the agent did not redial")
        .unwrap();
    let mut conn = Conn::new(stream);
    let mut ledger = Ledger::new();
    let negotiate = br#"{"ContainerId":"","MinimumVersion":4,"MaximumVersion":4}"#;
    let mut id = 1u64;
    conn.ask(&mut ledger, NEGOTIATE, id, negotiate)
        .await
        .unwrap();
    for (message_type, payload) in &findings {
        id += 1;
        conn.ask(&mut ledger, *message_type, id, payload)
            .await
            .unwrap();
    }
    let (n, d) = (id + 1, id + 2);
    conn.ask(&mut ledger, NEGOTIATE, n, negotiate)
        .await
        .unwrap();
    conn.ask(&mut ledger, DUMP_STACKS, d, br#"{"ContainerId":""}"#)
        .await
        .unwrap();
    // Every one is answered (well-formed, within 64 KiB, once), and the agent still serves.
    pump(&mut conn, &mut ledger, Duration::from_secs(60), |l| {
        l.pending.is_empty()
    })
    .await
    .unwrap();
    assert!(
        !findings.is_empty(),
        "no saved findings in {}",
        dir.display()
    );
    assert_eq!(ledger.answered, findings.len() as u64 + 3);
    eprintln!("{} saved findings sent to the agent", findings.len());
}
