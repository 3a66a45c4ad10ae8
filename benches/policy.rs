//! Security policy decisions (issue 16): the time of each enforcement point under a
//! generated-style policy of 50 containers (median and p99, in process, the release build), and
//! a container's Create + Start + Wait through the agent under that policy against the same
//! under the open door, in the same run.
//!
//! The second part needs root, veritysetup (a dm-verity VPMem layer) and the test VM
//! (`make test-image`): it runs the agent in QEMU, whose kernel has device-mapper; run with
//! `make bench`.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "benchmark code"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gcs::policy::rego::{RegoEnforcer, Tuning, DEFAULT_UNPRIVILEGED_CAPABILITIES};
use gcs::policy::{EnforcementPoint as P, Enforcer};
use serde_json::{json, Value};

const CONTAINERS: usize = 50;
const ROUNDS: usize = 200;
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn hash(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Container `k` of the policy: three layers, a command, env rules, one exec, SIGTERM.
fn container(k: usize) -> Value {
    json!({
        "id": format!("app{k}"), "name": format!("app{k}"),
        "layers": [hash(&format!("{k}-0")), hash(&format!("{k}-1")), hash(&format!("{k}-2"))],
        "command": [format!("/app{k}"), "--serve"],
        "env_rules": [{"pattern": PATH, "strategy": "string", "required": true},
                      {"pattern": "APP_.+=.+", "strategy": "re2", "required": false}],
        "working_dir": "/", "mounts": [],
        "exec_processes": [{"command": ["/bin/sh", "-c", format!("echo {k}")], "signals": []}],
        "signals": [15],
        "user": {"user_idname": {"pattern": "", "strategy": "any"},
                 "group_idnames": [{"pattern": "", "strategy": "any"}], "umask": "0022"},
        "capabilities": null, "seccomp_profile_sha256": "", "allow_elevated": false,
        "allow_stdio_access": true, "no_new_privileges": false,
    })
}

fn flags() -> [(&'static str, bool); 4] {
    [
        ("allow_properties_access", true),
        ("allow_dump_stacks", true),
        ("allow_runtime_logging", true),
        ("allow_unencrypted_scratch", true),
    ]
}

fn process(args: Value) -> Value {
    let caps = DEFAULT_UNPRIVILEGED_CAPABILITIES;
    json!({
        "argList": args, "envList": [PATH, "APP_MODE=fast"], "workingDir": "/",
        "noNewPrivileges": false, "user": {"id": "0", "name": "root"},
        "groups": [{"id": "0", "name": "root"}], "umask": "0022",
        "capabilities": {"bounding": caps, "effective": caps, "inheritable": [], "permitted": caps, "ambient": []},
    })
}

fn with(mut base: Value, fields: Value) -> Value {
    for (k, v) in fields.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// One container's whole life through the policy, timing each decision.
fn round(e: &RegoEnforcer, i: usize, times: &mut BTreeMap<&'static str, Vec<Duration>>) {
    let k = i % CONTAINERS;
    let layers: Vec<String> = (0..3).map(|j| hash(&format!("{k}-{j}"))).collect();
    let cid = format!("{i:064x}");
    let targets: Vec<String> = (0..3)
        .map(|j| format!("/run/mounts/scsi/m{}", 3 * i + j))
        .collect();
    let rootfs = format!("/run/gcs/c/{cid}/rootfs");
    let mut ask = |name: &'static str, point: P, input: Value, allowed: bool| {
        let start = Instant::now();
        let d = e.decide(point, input);
        times.entry(name).or_default().push(start.elapsed());
        assert_eq!(d.is_ok(), allowed, "{name}: {d:?}");
    };
    ask(
        "mount_device (refused)",
        P::MountDevice,
        json!({"target": "/run/mounts/scsi/m999999", "deviceHash": hash("unknown"),
               "mountPathRegex": "/run/mounts/scsi/m[0-9]+"}),
        false,
    );
    for (t, h) in targets.iter().zip(&layers) {
        ask(
            "mount_device",
            P::MountDevice,
            json!({"target": t, "deviceHash": h, "mountPathRegex": "/run/mounts/scsi/m[0-9]+"}),
            true,
        );
    }
    let top_first: Vec<&String> = targets.iter().rev().collect();
    ask(
        "mount_overlay",
        P::MountOverlay,
        json!({"containerID": cid, "layerPaths": top_first, "target": rootfs}),
        true,
    );
    let command = json!([format!("/app{k}"), "--serve"]);
    let mounts: Vec<Value> = common::trace_spec(&[])["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!({"destination": m["destination"], "source": m["source"], "options": m["options"], "type": m["type"]}))
        .collect();
    ask(
        "create_container",
        P::CreateContainer,
        with(
            process(command.clone()),
            json!({"containerID": cid, "sandboxDir": format!("/run/gcs/c/{cid}/sandboxMounts"),
                   "hugePagesDir": format!("/run/gcs/c/{cid}/hugepages"), "mounts": mounts,
                   "devices": [], "privileged": false, "seccompProfileSHA256": "",
                   "isSandboxContainer": false}),
        ),
        true,
    );
    ask(
        "exec_in_container",
        P::ExecInContainer,
        with(
            process(json!(["/bin/sh", "-c", format!("echo {k}")])),
            json!({"containerID": cid}),
        ),
        true,
    );
    ask(
        "signal_container_process",
        P::SignalContainerProcess,
        json!({"containerID": cid, "signal": 15, "isInitProcess": true, "argList": command}),
        true,
    );
    ask(
        "shutdown_container",
        P::ShutdownContainer,
        json!({"containerID": cid}),
        true,
    );
    ask(
        "unmount_overlay",
        P::UnmountOverlay,
        json!({"unmountTarget": rootfs}),
        true,
    );
    for t in &targets {
        ask(
            "unmount_device",
            P::UnmountDevice,
            json!({"unmountTarget": t}),
            true,
        );
    }
}

/// The `per_mille`-th value (500: median, 990: p99).
fn percentile(v: &mut [Duration], per_mille: usize) -> Duration {
    v.sort();
    v[(v.len() - 1) * per_mille / 1000]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn decisions() {
    let containers: Vec<Value> = (0..CONTAINERS).map(container).collect();
    let text = common::policy::generated_policy(&containers, &flags());
    let start = Instant::now();
    let e = RegoEnforcer::new(&text, "x").unwrap();
    let load = start.elapsed();
    let open = gcs::policy::open_door::OpenDoor;
    let mut open_times = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let _ = open.decide(P::CreateContainer, json!({}));
        open_times.push(start.elapsed());
    }
    let mut times = BTreeMap::new();
    for i in 0..ROUNDS {
        round(&e, i, &mut times);
    }
    // The same decisions the general way: what a policy that reads the metadata itself, or
    // computes its declarations, costs.
    let general = RegoEnforcer::tuned(
        &text,
        "x",
        Tuning {
            always_with_data: true,
            never_precompute: true,
        },
    )
    .unwrap();
    let mut general_times = BTreeMap::new();
    for i in 0..ROUNDS {
        round(&general, i, &mut general_times);
    }
    println!(
        "policy of {CONTAINERS} containers ({} KiB): loaded in {:.1} ms; {ROUNDS} container lives",
        text.len() / 1024,
        load.as_secs_f64() * 1e3
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "enforcement point", "median µs", "p99 µs", "n"
    );
    let mut all = Vec::new();
    for (name, v) in &mut times {
        all.extend_from_slice(v);
        println!(
            "{name:<28} {:>10.0} {:>10.0} {:>8}",
            us(percentile(v, 500)),
            us(percentile(v, 990)),
            v.len()
        );
    }
    println!(
        "{:<28} {:>10.0} {:>10.0} {:>8}",
        "all decisions",
        us(percentile(&mut all, 500)),
        us(percentile(&mut all, 990)),
        all.len()
    );
    let mut all_general: Vec<Duration> = general_times.into_values().flatten().collect();
    println!(
        "{:<28} {:>10.0} {:>10.0} {:>8}   (general way: `with` queries, declarations per query)",
        "all decisions, general",
        us(percentile(&mut all_general, 500)),
        us(percentile(&mut all_general, 990)),
        all_general.len()
    );
    println!(
        "{:<28} {:>10.2} {:>10.2} {:>8}   (reference: the open door)",
        "open door decision",
        us(percentile(&mut open_times, 500)),
        us(percentile(&mut open_times, 990)),
        open_times.len()
    );
}

const RUNS: usize = 20;

/// One container's Create, Start, init run and wait (its rootfs added before, and removed with
/// its state after, untimed), `runs` times with ids from `first` on; the median.
/// Medians of one container's Create, Start (and the init's launch), and Wait (to the exit
/// notification), its rootfs added before and removed with its state after (untimed), `runs`
/// times with ids from `first` on; and of their sum.
async fn lifecycles(c: &gcs::host::BridgeClient, first: usize, runs: usize) -> [Duration; 4] {
    let mut phases: [Vec<Duration>; 4] = Default::default();
    // Every container has its own id: a policy never lets an id start twice, nor a scratch
    // path be mounted again (the original never asks scratch_unmount on Linux).
    for i in first..first + runs {
        let id = format!("{i:064x}");
        common::add_rootfs(c, &id, "/run/layers/p0").await;
        let mut spec = common::trace_spec(&["true"]);
        spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
        let start = Instant::now();
        c.create_container(&id, &common::container_settings(&id, spec))
            .await
            .unwrap();
        let created = Instant::now();
        c.start_container(&id).await.unwrap();
        let pid = c
            .execute_process(
                &id,
                &gcs::protocol::messages::ProcessParameters::default(),
                gcs::protocol::messages::VsockStdioRelaySettings::default(),
            )
            .await
            .unwrap();
        let started = Instant::now();
        c.wait_for_process(&id, pid, gcs::protocol::INFINITE_WAIT)
            .await
            .unwrap();
        c.next_notification(Duration::from_secs(20)).await.unwrap();
        let done = Instant::now();
        phases[0].push(created - start);
        phases[1].push(started - created);
        phases[2].push(done - started);
        phases[3].push(done - start);
        common::remove_rootfs(c, &id).await;
        c.delete_container_state(&id).await.unwrap();
    }
    phases.map(|mut v| percentile(&mut v, 500))
}

/// Medians of the guest's own times (its debug log): a Create request from decoding to response,
/// and the `create_container` decision in it; the first (warm-up) container's left out.
fn guest_create_times(log: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> [Duration; 2] {
    let (mut handled, mut decided) = (Vec::new(), Vec::new());
    while let Ok(line) = log.try_recv() {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let micros = || Duration::from_micros(v["micros"].as_u64().unwrap_or_default());
        match v["msg"].as_str() {
            Some("request handled") if v["msg_type"] == "Create" => handled.push(micros()),
            Some("policy decision") if v["point"] == "create_container" => decided.push(micros()),
            _ => {}
        }
    }
    [handled, decided].map(|mut v| {
        if v.len() > 1 {
            v.remove(0);
        }
        if v.is_empty() {
            Duration::ZERO
        } else {
            percentile(&mut v, 500)
        }
    })
}

/// Create + Start + Wait through the agent in a utility VM (QEMU under TCG, the only
/// accelerator `gcs::host::Uvm` uses: this machine's KVM cannot run it) from a dm-verity VPMem layer: under the
/// 50-container policy (plus the container that runs) against the open door, one VM each. In a
/// VM because a confidential guest mounts every layer through dm-verity, which this machine's
/// kernel may lack. The guest's own times of its Create and of the decision in it, from its
/// debug log, say how much of the difference is the decision running under emulation.
async fn through_a_vm() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (kernel, initrd) = (
        root.join("out/kernel/vmlinux"),
        root.join("out/test-initrd.img"),
    );
    assert!(
        kernel.exists() && initrd.exists(),
        "run `make test-image` first (make bench does)"
    );
    let work = tempfile::tempdir().unwrap();
    let tree = gcs::host::layers::busybox_tree(work.path()).unwrap();
    let image = work.path().join("busybox.ext4");
    gcs::host::layers::ext4_image(&image, Some(&tree), "16M").unwrap();
    let root_hash = common::policy::verity_format(&image);
    // A VPMem image spans whole 4 MiB pages, as the host's are.
    let len = std::fs::metadata(&image).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(len.next_multiple_of(4 << 20))
        .unwrap();
    let mut containers: Vec<Value> = (0..CONTAINERS).map(container).collect();
    containers.push(json!({
        "id": "busybox", "name": "busybox", "layers": [root_hash], "command": ["true"],
        "env_rules": [{"pattern": PATH, "strategy": "string", "required": true}],
        "working_dir": "/", "mounts": [], "exec_processes": [], "signals": [],
        "user": {"user_idname": {"pattern": "", "strategy": "any"},
                 "group_idnames": [{"pattern": "", "strategy": "any"}], "umask": "0022"},
        "capabilities": null, "seccomp_profile_sha256": "", "allow_elevated": false,
        "allow_stdio_access": true, "no_new_privileges": false,
    }));
    let policy = common::policy::generated_policy(&containers, &flags());
    let (mut medians, mut guest) = (Vec::new(), Vec::new());
    for with_policy in [false, true] {
        let mut cfg = gcs::host::UvmConfig::new(kernel.clone(), initrd.clone());
        cfg.pmem.push(image.clone());
        let mut uvm = gcs::host::Uvm::boot(&cfg).await.unwrap();
        let c = &uvm.client;
        if with_policy {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&policy);
            c.modify_settings(
                gcs::protocol::NULL_CONTAINER_ID,
                common::modify(
                    "SecurityPolicy",
                    "Add",
                    json!({"EncodedSecurityPolicy": encoded}),
                ),
            )
            .await
            .unwrap();
        }
        c.modify_settings(
            gcs::protocol::NULL_CONTAINER_ID,
            common::modify(
                "VPMemDevice",
                "Add",
                json!({"DeviceNumber": 0, "MountPath": "/run/layers/p0"}),
            ),
        )
        .await
        .unwrap();
        // One unmeasured run warms the runtime helper up.
        lifecycles(c, 0, 1).await;
        medians.push(lifecycles(c, 1, RUNS).await);
        guest.push(guest_create_times(&mut uvm.log));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "container Create+Start+Wait in a VM (TCG), median of {RUNS}: open door {:.2} ms, {CONTAINERS}-container policy {:.2} ms (ratio {:.2})",
        ms(medians[0][3]),
        ms(medians[1][3]),
        medians[1][3].as_secs_f64() / medians[0][3].as_secs_f64()
    );
    for (phase, name) in ["Create", "Start and launch", "Wait and exit notification"]
        .iter()
        .enumerate()
    {
        println!(
            "  {name:<28} open door {:>7.2} ms, policy {:>7.2} ms",
            ms(medians[0][phase]),
            ms(medians[1][phase])
        );
    }
    println!(
        "  {:<28} open door {:>7.2} ms, policy {:>7.2} ms, of which the create_container decision {:.2} ms",
        "Create in the guest (its log)",
        ms(guest[0][0]),
        ms(guest[1][0]),
        ms(guest[1][1])
    );
}

fn main() {
    decisions();
    if nix::unistd::geteuid().is_root() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(through_a_vm());
    } else {
        println!("container lifecycles under the policy: not measured (needs root for QEMU's vsock device)");
    }
}
