//! `ctr run --rm <busybox> true` end to end through containerd (issue 18): with
//! `io.containerd.gcs.v2`, a utility VM booted under TCG for the container, against the same
//! command with containerd's `io.containerd.runc.v2` in the same run (one private containerd,
//! `tests/common/containerd.rs`). Runs alternate between the two runtimes; medians of
//! `GCS_BENCH_RUNS` (default 5) each. Then where a gcs run's time goes, from the shim's own
//! `timing <container> <phase> <µs>` log lines: VM boot, the rootfs image, its hot-add and
//! mount, Create, Start, Delete, VM stop; the rest is containerd, ctr and the shim's start.
//!
//! Run with `make bench-containerd` (root: containerd mounts snapshots and runc makes cgroups).

#![allow(clippy::unwrap_used, reason = "benchmark code")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::containerd::{text, Containerd};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ctr_run(c: &Containerd, runtime: &str, id: &str) -> Duration {
    let start = Instant::now();
    let out = c
        .run(&["--rm"], id, &["true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = start.elapsed();
    // `run` put the gcs runtime first; the reference's overrides it (ctr takes the last).
    assert!(
        out.status.success(),
        "{runtime} {id}: {}\n{}",
        text(&out.stderr),
        c.log()
    );
    took
}

/// The shim's phase times of container `id` and of its VM (ms), from containerd's log.
fn phases(log: &str, id: &str) -> Vec<(String, f64)> {
    log.lines()
        .filter_map(|l| {
            let msg = l.split("msg=\"timing ").nth(1)?;
            let mut words = msg.trim_end_matches('"').split_whitespace();
            let (who, phase, micros) = (words.next()?, words.next()?, words.next()?);
            if who != id && who != "vm" {
                return None;
            }
            Some((phase.to_string(), micros.parse::<f64>().ok()? / 1000.0))
        })
        .collect()
}

fn main() {
    let runs: usize = std::env::var("GCS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let c = Containerd::start(&[]);
    // Warm-up: the image's snapshot, page cache, both shims' binaries.
    ctr_run(&c, "gcs", "warm-gcs");
    let reference = |id: &str| {
        let start = Instant::now();
        let out = c
            .command(
                &["run"],
                &[
                    "--rm",
                    "--runtime",
                    "io.containerd.runc.v2",
                    common::containerd::IMAGE,
                    id,
                    "true",
                ],
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runc {id}: {}\n{}",
            text(&out.stderr),
            c.log()
        );
        start.elapsed()
    };
    reference("warm-runc");

    let (mut gcs, mut runc) = (Vec::new(), Vec::new());
    let mut breakdown: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for i in 0..runs {
        let id = format!("gcs-{i}");
        let log_before = c.log().len();
        gcs.push(ctr_run(&c, "gcs", &id).as_secs_f64() * 1000.0);
        // The shim's last lines may reach containerd's log after ctr returns.
        std::thread::sleep(Duration::from_millis(500));
        let log = c.log();
        for (phase, ms) in phases(&log[log_before..], &id) {
            breakdown.entry(phase).or_default().push(ms);
        }
        runc.push(reference(&format!("runc-{i}")).as_secs_f64() * 1000.0);
    }
    let (g, r) = (median(gcs.clone()), median(runc.clone()));
    println!("ctr run --rm busybox true, median of {runs} (TCG VM per container):");
    println!("  io.containerd.gcs.v2   {g:9.1} ms  (runs: {gcs:.0?})");
    println!(
        "  io.containerd.runc.v2  {r:9.1} ms  (runs: {runc:.0?}); ratio {:.1}x",
        g / r
    );
    println!("where a gcs run's time goes (median ms):");
    let order = [
        "boot", "rootfs", "attach", "create", "start", "delete", "stop",
    ];
    let mut accounted = 0.0;
    for phase in order {
        if let Some(v) = breakdown.get(phase) {
            let m = median(v.clone());
            accounted += m;
            let what = match phase {
                "boot" => "VM boot to NegotiateProtocol (QEMU, kernel, init, agent)",
                "rootfs" => "snapshot mounted, copied into an ext4 image (mkfs.ext4 -d)",
                "attach" => "SCSI hot-add (QMP), MappedVirtualDisk + CombinedLayers",
                "create" => "Create + Start on the bridge (the runtime helper's create)",
                "start" => "ExecuteProcess of the init",
                "delete" => "CombinedLayers/disk removal, DeleteContainerState",
                "stop" => "QEMU and vhost-device-vsock killed (containerd's Shutdown)",
                _ => "",
            };
            println!("  {phase:8} {m:9.1}  {what}");
        }
    }
    println!(
        "  other    {:9.1}  containerd, ctr, the shim's start, the process's run and exit",
        g - accounted
    );
}
