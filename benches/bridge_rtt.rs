//! Round trips over the bridge against the real binary on a socketpair (`-use-inouterr`):
//! NegotiateProtocol (one per fresh agent), DumpStacks and a no-op Start. The reference is a
//! plain echo of a same-sized frame over the same kind of socketpair in this process, so the
//! ratio shows what the agent adds on top of the kernel's socket round trip.
//!
//! Run with `make bench` (or `cargo bench --bench bridge_rtt`).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gcs::host::BridgeClient;
use gcs::protocol::{MessageType, NULL_CONTAINER_ID};

fn gcs_binary() -> std::path::PathBuf {
    // `cargo bench` builds the binary next to the bench executable's parent directory.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    for candidate in [dir.join("gcs"), dir.join("release/gcs")] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("gcs binary not found next to {}", exe.display());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn start_agent(bin: &std::path::Path) -> (std::process::Child, BridgeClient) {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let child = Command::new(bin)
        .args(["-use-inouterr", "-v4", "-loglevel", "warning"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(
            theirs.try_clone().unwrap(),
        )))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ours.set_nonblocking(true).unwrap();
    (
        child,
        BridgeClient::new(tokio::net::UnixStream::from_std(ours).unwrap()),
    )
}

/// Echo round trip of `len` bytes through a thread on a socketpair.
fn reference_rtt(len: usize, rounds: usize) -> Duration {
    let (mut a, mut b) = StdUnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; len];
        for _ in 0..rounds {
            b.read_exact(&mut buf).unwrap();
            b.write_all(&buf).unwrap();
        }
    });
    let msg = vec![7u8; len];
    let mut back = vec![0u8; len];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        a.write_all(&msg).unwrap();
        a.read_exact(&mut back).unwrap();
        samples.push(t.elapsed());
    }
    echo.join().unwrap();
    median(samples)
}

fn main() {
    let bin = gcs_binary();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reference = reference_rtt(161, 2000);

    let negotiate = rt.block_on(async {
        let mut samples = Vec::new();
        for _ in 0..30 {
            let (mut child, client) = start_agent(&bin);
            // Let the agent reach its read loop so process start-up is not counted.
            client.start_container("warm-up").await.ok();
            let t = Instant::now();
            client.negotiate().await.unwrap();
            samples.push(t.elapsed());
            drop(client);
            let _ = child.kill();
            let _ = child.wait();
        }
        median(samples)
    });

    let (dump, start) = rt.block_on(async {
        let (mut child, client) = start_agent(&bin);
        client.negotiate().await.unwrap();
        let mut dump = Vec::new();
        let mut start = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            client.dump_stacks().await.unwrap();
            dump.push(t.elapsed());
            let t = Instant::now();
            client
                .request_raw(
                    MessageType::START,
                    format!("{{\"ContainerId\":\"{NULL_CONTAINER_ID}\"}}").as_bytes(),
                )
                .await
                .unwrap();
            start.push(t.elapsed());
        }
        drop(client);
        let _ = child.kill();
        let _ = child.wait();
        (median(dump), median(start))
    });

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "reference: socketpair echo of a 161-byte frame: {:.1} us (median of 2000)",
        us(reference)
    );
    println!(
        "NegotiateProtocol round trip: {:.1} us (median of 30 fresh agents), {:.1}x reference",
        us(negotiate),
        us(negotiate) / us(reference)
    );
    println!(
        "DumpStacks round trip: {:.1} us (median of 1000), {:.1}x reference",
        us(dump),
        us(dump) / us(reference)
    );
    println!(
        "Start (no-op) round trip: {:.1} us (median of 1000), {:.1}x reference",
        us(start),
        us(start) / us(reference)
    );
}
