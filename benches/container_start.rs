//! Container start latency through the bridge against Debian's `runc run` of the same bundle,
//! in the same run: Create + Start + init ExecuteProcess + WaitForProcess (+ DeleteContainerState,
//! since `runc run` also deletes) of a busybox `true` container, median of 30 each. Also exec
//! latency into a running container and the agent's RSS after the containers.
//!
//! Needs root and Debian's `runc`; run with `make bench` (`GCS_BENCH_SECCOMP=1`: both under
//! Docker's default seccomp profile).

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "benchmark code"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_layer, Agent};
use gcs::protocol::messages::*;
use gcs::protocol::INFINITE_WAIT;
use serde_json::{json, Value};

const RUNS: usize = 30;

/// The real host's spec running `true`; with `GCS_BENCH_SECCOMP=1`, under Docker's default
/// seccomp profile (for the agent and runc alike).
fn template() -> Value {
    let mut spec = common::trace_spec(&["true"]);
    if std::env::var_os("GCS_BENCH_SECCOMP").is_some() {
        spec["linux"]["seccomp"] = common::docker_default_profile();
    }
    spec
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn ours() -> (Duration, Duration, Duration, u64, u64) {
    let agent = Agent::sandboxed(&["-loglevel", "warning"]).await;
    let layer = busybox_layer(&agent);
    let c = &agent.client;
    let ids: Vec<String> = (0..=RUNS).map(|i| format!("bench-{i}")).collect();
    for id in &ids {
        common::add_rootfs(c, id, layer).await;
    }
    let mut to_exit = Vec::new();
    let mut to_delete = Vec::new();
    for id in &ids {
        let mut spec = template();
        spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
        let settings = ContainerSettings {
            schema_version: SchemaVersion { major: 2, minor: 1 },
            oci_bundle_path: format!("/run/gcs/c/{id}"),
            oci_specification: Some(spec),
            scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
        };
        let t = Instant::now();
        c.create_container(id, &settings).await.unwrap();
        let created = t.elapsed();
        c.start_container(id).await.unwrap();
        let pid = c
            .execute_process(
                id,
                &ProcessParameters::default(),
                VsockStdioRelaySettings::default(),
            )
            .await
            .unwrap();
        let started = t.elapsed();
        assert_eq!(c.wait_for_process(id, pid, INFINITE_WAIT).await.unwrap(), 0);
        let exited = t.elapsed();
        if std::env::var_os("GCS_BENCH_PHASES").is_some() {
            eprintln!(
                "create {:.1} start {:.1} exit {:.1}",
                ms(created),
                ms(started - created),
                ms(exited - started)
            );
        }
        common::remove_rootfs(c, id).await;
        c.delete_container_state(id).await.unwrap();
        let deleted = t.elapsed();
        c.next_notification(Duration::from_secs(10)).await.unwrap();
        if id != "bench-0" {
            to_exit.push(exited);
            to_delete.push(deleted);
        }
    }
    // Exec latency into a running container.
    let id = "bench-exec";
    common::add_rootfs(c, id, layer).await;
    let mut spec = template();
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    spec["process"]["args"] = json!(["sleep", "1000"]);
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(spec.clone()),
        scratch_dir_path: String::new(),
    };
    c.create_container(id, &settings).await.unwrap();
    let init = c
        .execute_process(
            id,
            &ProcessParameters::default(),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap();
    let mut execs = Vec::new();
    let mut process = spec["process"].clone();
    process["args"] = json!(["true"]);
    let params = ProcessParameters {
        oci_process: Some(process),
        ..Default::default()
    };
    for _ in 0..RUNS {
        let t = Instant::now();
        let pid = c
            .execute_process(id, &params, VsockStdioRelaySettings::default())
            .await
            .unwrap();
        c.wait_for_process(id, pid, INFINITE_WAIT).await.unwrap();
        execs.push(t.elapsed());
    }
    let agent_rss = rss_kib(agent.agent_pid());
    // The helper is the agent's child (forked from whichever worker thread started it).
    let agent_pid = agent.agent_pid();
    let parent_of = |p: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        stat.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok())
    };
    let helper_rss: u64 = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with(gcs::runtime::HELPER_NAME))
        })
        .filter(|p| parent_of(*p) == Some(agent_pid))
        .map(rss_kib)
        .sum();
    c.signal_process(id, init, None).await.unwrap();
    c.wait_for_process(id, init, INFINITE_WAIT).await.unwrap();
    (
        median(to_exit),
        median(to_delete),
        median(execs),
        agent_rss,
        helper_rss,
    )
}

fn runc_reference() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let mut samples = Vec::new();
    for i in 0..=RUNS {
        let mut spec = template();
        spec["root"]["path"] = json!("rootfs");
        spec["linux"]["cgroupsPath"] = json!(format!("/gcs-bench-runc/{i}"));
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let t = Instant::now();
        let status = Command::new("runc")
            .args(["run", "-b"])
            .arg(dir.path())
            .arg(format!("gcs-bench-runc-{}-{i}", std::process::id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "runc run failed");
        if i > 0 {
            samples.push(t.elapsed());
        }
    }
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join("gcs-bench-runc"));
    }
    median(samples)
}

fn main() {
    assert!(
        Path::new("/usr/sbin/runc").exists() || Path::new("/usr/bin/runc").exists(),
        "install Debian's runc"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (to_exit, to_delete, exec, agent_rss, helper_rss) = rt.block_on(ours());
    let runc = runc_reference();
    println!(
        "runc run (create+start+wait+delete), Debian runc: {:.1} ms (median of {RUNS})",
        ms(runc)
    );
    println!(
        "gcs Create+Start+ExecuteProcess+WaitForProcess: {:.1} ms (median of {RUNS}), {:.2}x runc",
        ms(to_exit),
        ms(to_exit) / ms(runc)
    );
    println!(
        "gcs ... + DeleteContainerState: {:.1} ms (median of {RUNS}), {:.2}x runc",
        ms(to_delete),
        ms(to_delete) / ms(runc)
    );
    println!(
        "gcs exec (ExecuteProcess+WaitForProcess of `true`): {:.1} ms (median of {RUNS})",
        ms(exec)
    );
    println!(
        "agent RSS after {} containers: {} KiB; runtime helper RSS: {} KiB",
        RUNS + 2,
        agent_rss,
        helper_rss
    );
}
