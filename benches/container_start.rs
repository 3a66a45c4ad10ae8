//! A container's whole lifecycle through the bridge against `crun run` of the same busybox
//! bundle, and exec into a running container against `crun exec`, in the same run, on cgroup v2
//! and on v1 (issue 17). Debian's `runc run` is one extra line.
//!
//! Ours: CombinedLayers Add + Create + Start + init ExecuteProcess + WaitForProcess +
//! CombinedLayers Remove + DeleteContainerState of a busybox `true` container, median of 30;
//! then 100 ExecuteProcess + WaitForProcess of `true` into a running `sleep` container, and the
//! agent's and the runtime helper's RSS after them.
//!
//! Every figure is taken in the same kind of sandbox (tests/sandbox.sh: fresh mount, pid and
//! cgroup namespaces, private /run): the references by re-executing this bench inside one as
//! `container_start --reference crun-run|crun-exec|runc-run`, with the bundle on the sandbox's
//! tmpfs /run like the agent's layer. One pass per cgroup mode this machine has: "v2" mounts only
//! the cgroup2 hierarchy at /sys/fs/cgroup (`GCS_SANDBOX_CGROUP=v2`), "v1" the machine's own
//! (v1 controllers; on a hybrid machine also its cgroup2 at /sys/fs/cgroup/unified).
//!
//! Needs root, Debian's `crun` and `runc`; run with `make bench` (`GCS_BENCH_SECCOMP=1`: all of
//! them under Docker's default seccomp profile; `GCS_BENCH_RUNS=N`: N lifecycles and N execs,
//! e.g. 1 to check a setup; `GCS_BENCH_PHASES=1`: each lifecycle's phases on stderr).

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "benchmark code"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_layer, Agent};
use gcs::protocol::messages::*;
use gcs::protocol::INFINITE_WAIT;
use serde_json::{json, Value};

/// Lifecycles per figure (after one warm-up).
const RUNS: usize = 30;
/// Execs into the running container (after one warm-up).
const EXECS: usize = 100;

fn runs() -> usize {
    env_count("GCS_BENCH_RUNS").unwrap_or(RUNS)
}

fn execs() -> usize {
    env_count("GCS_BENCH_RUNS").unwrap_or(EXECS)
}

fn env_count(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok().filter(|n| *n > 0)
}

/// The real host's spec running `args`; with `GCS_BENCH_SECCOMP=1`, under Docker's default
/// seccomp profile (for the agent and the references alike).
fn template(args: &[&str]) -> Value {
    let mut spec = common::trace_spec(args);
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

/// VmRSS, RssAnon and RssFile of `pid` in KiB (zeros if it is gone).
fn rss(pid: u32) -> [u64; 3] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    ["VmRSS:", "RssAnon:", "RssFile:"].map(|field| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    })
}

fn rss_text([total, anon, file]: [u64; 3]) -> String {
    format!("{total} KiB (RssAnon {anon}, RssFile {file})")
}

/// The cgroup modes this machine can give a sandbox: (label, `GCS_SANDBOX_CGROUP=v2`).
fn cgroup_modes() -> Vec<(&'static str, bool)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let has = |fstype: &str| {
        mounts.lines().any(|l| {
            let mut f = l.split_whitespace().skip(1);
            let (mnt, ty) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            mnt.starts_with("/sys/fs/cgroup") && ty == fstype
        })
    };
    let mut modes = Vec::new();
    if has("cgroup2") {
        modes.push(("v2", true));
    }
    if has("cgroup") {
        modes.push(("v1", false));
    }
    assert!(
        !modes.is_empty(),
        "no cgroup hierarchy under /sys/fs/cgroup"
    );
    modes
}

struct Ours {
    /// Add .. DeleteContainerState.
    lifecycle: Duration,
    /// Create .. WaitForProcess (the figure before issue 17).
    create_to_exit: Duration,
    exec: Duration,
    agent_rss: [u64; 3],
    agent_rss_idle: [u64; 3],
    helper_rss: [u64; 3],
}

/// Ours in a fresh sandbox; `Err` with the agent's answer if the first Create fails (on cgroup
/// v2 on a machine that does not let libcgroups load its device program, see `v2_hint`).
async fn ours(cgroup_v2: bool) -> Result<Ours, String> {
    let args = ["-loglevel", "warning"];
    let agent = if cgroup_v2 {
        Agent::sandboxed_on_cgroup_v2(&args, "").await
    } else {
        Agent::sandboxed(&args).await
    };
    let layer = busybox_layer(&agent);
    let c = &agent.client;
    let phases = std::env::var_os("GCS_BENCH_PHASES").is_some();
    let mut lifecycles = Vec::new();
    let mut to_exit = Vec::new();
    for i in 0..=runs() {
        let id = format!("bench-{i}");
        let mut spec = template(&["true"]);
        spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
        let settings = common::container_settings(&id, spec);
        let t = Instant::now();
        common::add_rootfs(c, &id, layer).await;
        let added = t.elapsed();
        match c.create_container(&id, &settings).await {
            Ok(()) => {}
            Err(e) if i == 0 => return Err(e.to_string()),
            Err(e) => panic!("Create {id}: {e}"),
        }
        let created = t.elapsed();
        c.start_container(&id).await.unwrap();
        let pid = c
            .execute_process(
                &id,
                &ProcessParameters::default(),
                VsockStdioRelaySettings::default(),
            )
            .await
            .unwrap();
        let started = t.elapsed();
        assert_eq!(
            c.wait_for_process(&id, pid, INFINITE_WAIT).await.unwrap(),
            0
        );
        let exited = t.elapsed();
        common::remove_rootfs(c, &id).await;
        let removed = t.elapsed();
        c.delete_container_state(&id).await.unwrap();
        let deleted = t.elapsed();
        c.next_notification(Duration::from_secs(10)).await.unwrap();
        if phases {
            eprintln!(
                "add {:.2} create {:.2} start {:.2} exit {:.2} remove {:.2} delete {:.2}",
                ms(added),
                ms(created - added),
                ms(started - created),
                ms(exited - started),
                ms(removed - exited),
                ms(deleted - removed)
            );
        }
        if i > 0 {
            lifecycles.push(deleted);
            to_exit.push(exited - added);
        }
    }
    // Exec latency into a running container.
    let id = "bench-exec";
    common::add_rootfs(c, id, layer).await;
    let mut spec = template(&["sleep", "1000"]);
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    let mut process = spec["process"].clone();
    let settings = ContainerSettings {
        scratch_dir_path: String::new(),
        ..common::container_settings(id, spec)
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
    process["args"] = json!(["true"]);
    let params = ProcessParameters {
        oci_process: Some(process),
        ..Default::default()
    };
    let mut exec_samples = Vec::new();
    for i in 0..=execs() {
        let t = Instant::now();
        let pid = c
            .execute_process(id, &params, VsockStdioRelaySettings::default())
            .await
            .unwrap();
        assert_eq!(c.wait_for_process(id, pid, INFINITE_WAIT).await.unwrap(), 0);
        if i > 0 {
            exec_samples.push(t.elapsed());
        }
    }
    let agent_pid = agent.agent_pid();
    let agent_rss = rss(agent_pid);
    // The bridge gives the heap's free memory back after 1 s with no request in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let agent_rss_idle = rss(agent_pid);
    // The helper is the agent's child (forked from whichever worker thread started it).
    let parent_of = |p: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        stat.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok())
    };
    let helper_rss = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with(gcs::runtime::HELPER_NAME))
        })
        .filter(|p| parent_of(*p) == Some(agent_pid))
        .map(rss)
        .fold([0; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]]);
    c.signal_process(id, init, None).await.unwrap();
    c.wait_for_process(id, init, INFINITE_WAIT).await.unwrap();
    Ok(Ours {
        lifecycle: median(lifecycles),
        create_to_exit: median(to_exit),
        exec: median(exec_samples),
        agent_rss,
        agent_rss_idle,
        helper_rss,
    })
}

/// Why a Create may fail on cgroup v2 on this machine: libcgroups 0.7.0 raises RLIMIT_MEMLOCK
/// to 128 MiB (soft and hard) before it loads the device BPF program of every container, which
/// needs CAP_SYS_RESOURCE when the hard limit is lower; some container hosts withhold that
/// capability even from root. A utility VM's agent has it.
fn v2_hint() -> String {
    format!(
        "libcgroups raises RLIMIT_MEMLOCK to 128 MiB for its device program; here the hard \
         limit is {} bytes and CAP_SYS_RESOURCE is {}",
        common::memlock::memlock_hard_limit(),
        if common::memlock::has_cap_sys_resource() {
            "held"
        } else {
            "missing"
        }
    )
}

/// Runs `runtime args...` with no stdio and checks that it succeeded.
fn run(runtime: &str, args: &[&str]) {
    let status = Command::new(runtime)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{runtime} {args:?} failed: {status}");
}

/// A bundle at `/run/gcs-bench` (the sandbox's tmpfs, like the agent's layer): the same busybox
/// tree as the agent's layer and the same spec, running `args`. Returns the bundle directory.
fn bundle(args: &[&str], cgroups_path: &str) -> PathBuf {
    let dir = Path::new("/run/gcs-bench");
    let rootfs = dir.join("busybox");
    if !rootfs.exists() {
        std::fs::create_dir_all(dir).unwrap();
        gcs::host::layers::busybox_tree(dir).unwrap();
    }
    let mut spec = template(args);
    // crun 1.8.1 rejects the trace's "1.3.0"; nothing in the spec is newer than 1.0.
    spec["ociVersion"] = json!("1.0.2");
    spec["root"]["path"] = json!(rootfs);
    spec["linux"]["cgroupsPath"] = json!(cgroups_path);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    dir.to_path_buf()
}

/// `--reference KIND` (inside a sandbox): prints the median in nanoseconds.
fn reference(kind: &str) {
    let mut samples = Vec::new();
    match kind {
        "crun-run" | "runc-run" => {
            let runtime = &kind[..4];
            for i in 0..=runs() {
                let dir = bundle(&["true"], &format!("/pods/{runtime}-{i}"));
                let id = format!("{runtime}-{i}");
                let t = Instant::now();
                if runtime == "crun" {
                    run("crun", &["run", "--bundle", dir.to_str().unwrap(), &id]);
                } else {
                    run("runc", &["run", "--bundle", dir.to_str().unwrap(), &id]);
                }
                if i > 0 {
                    samples.push(t.elapsed());
                }
            }
        }
        "crun-exec" => {
            let dir = bundle(&["sleep", "1000"], "/pods/crun-exec");
            let id = "crun-exec";
            run(
                "crun",
                &["run", "--detach", "--bundle", dir.to_str().unwrap(), id],
            );
            for i in 0..=execs() {
                let t = Instant::now();
                run("crun", &["exec", id, "true"]);
                if i > 0 {
                    samples.push(t.elapsed());
                }
            }
            run("crun", &["delete", "--force", id]);
        }
        _ => panic!("unknown reference {kind}"),
    }
    println!("median_ns {}", median(samples).as_nanos());
}

/// The median of reference `kind` measured inside a fresh sandbox of the given cgroup mode.
fn reference_in_sandbox(kind: &str, cgroup_v2: bool) -> Duration {
    let exe = std::env::current_exe().unwrap();
    let out = common::run_sandboxed(&exe, &["--reference", kind], cgroup_v2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reference {kind}: {}\n{text}",
        out.status
    );
    let ns = text
        .lines()
        .find_map(|l| l.strip_prefix("median_ns "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("reference {kind} printed no median: {text}"));
    Duration::from_nanos(ns)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--reference") {
        reference(args.get(i + 1).map_or("", String::as_str));
        return;
    }
    for runtime in ["crun", "runc"] {
        assert!(
            ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(runtime).exists()),
            "install Debian's {runtime}"
        );
    }
    let (runs, execs) = (runs(), execs());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (mode, cgroup_v2) in cgroup_modes() {
        let ours = rt.block_on(ours(cgroup_v2));
        let crun_run = reference_in_sandbox("crun-run", cgroup_v2);
        let crun_exec = reference_in_sandbox("crun-exec", cgroup_v2);
        let runc_run = reference_in_sandbox("runc-run", cgroup_v2);
        println!("== cgroup {mode} (each figure a median, each in the same kind of sandbox)");
        if cgroup_v2 && common::memlock::raise_would_fail() {
            println!(
                "(root here cannot raise RLIMIT_MEMLOCK, which libcgroups insists on before it \
                 loads a device program: every runtime of this pass runs under a seccomp filter \
                 that makes that raise a no-op, tests/common/memlock.rs)"
            );
        }
        println!(
            "crun run (create+start+wait+delete), crun 1.8.1: {:.2} ms (of {runs})",
            ms(crun_run)
        );
        println!("runc run, Debian runc: {:.2} ms (of {runs})", ms(runc_run));
        println!(
            "crun exec of `true` into a running container: {:.2} ms (of {execs})",
            ms(crun_exec)
        );
        let ours = match ours {
            Ok(ours) => ours,
            Err(e) => {
                let hint = if cgroup_v2 { v2_hint() } else { String::new() };
                println!(
                    "gcs: NOT MEASURED on cgroup {mode}, the first Create failed: {e}; {hint}"
                );
                continue;
            }
        };
        println!(
            "gcs lifecycle (Add+Create+Start+ExecuteProcess+WaitForProcess+Remove+DeleteContainerState): \
             {:.2} ms (of {runs}), {:.2}x crun run (goal <= 0.50x), {:.2}x runc run",
            ms(ours.lifecycle),
            ms(ours.lifecycle) / ms(crun_run),
            ms(ours.lifecycle) / ms(runc_run)
        );
        println!(
            "gcs Create..WaitForProcess alone: {:.2} ms (of {runs}), {:.2}x crun run",
            ms(ours.create_to_exit),
            ms(ours.create_to_exit) / ms(crun_run)
        );
        println!(
            "gcs exec (ExecuteProcess+WaitForProcess of `true`): {:.2} ms (of {execs}), \
             {:.2}x crun exec (goal <= 0.50x)",
            ms(ours.exec),
            ms(ours.exec) / ms(crun_exec)
        );
        println!(
            "agent RSS after {} lifecycles and {} execs: {} (goal after 100 execs <= 4096 KiB)",
            runs + 1,
            execs + 1,
            rss_text(ours.agent_rss)
        );
        println!(
            "agent RSS 1500 ms later, idle: {}",
            rss_text(ours.agent_rss_idle)
        );
        println!("runtime helper RSS: {}", rss_text(ours.helper_rss));
    }
}
