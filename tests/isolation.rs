//! Containers are the untrusted party (issue 12): the device cgroup, seccomp, and paths that
//! a container, its image, a neighbour in its pod or an id cannot redirect. As root, with the
//! agent sandboxed; each failing input of the issue is a test here.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{busybox_layer, Agent};
use gcs::protocol::Hresult;
use serde_json::{json, Value};

const MARKER: &str = "gcs-isolation-probe";

/// The real host's spec (trace 09) for container `id` running `script`.
fn spec(id: &str, script: &str) -> Value {
    let mut s = common::trace_spec(&["/bin/sh", "-c", script]);
    s["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    s
}

/// Runs `spec` as container `id` from `layer` to its end; its stdout and stderr together.
async fn run(agent: &Agent, id: &str, layer: &str, spec: Value) -> Result<String, String> {
    common::create_container(agent, id, layer, spec).await?;
    let out = common::start_process(agent, id, None, false)
        .await
        .unwrap()
        .finish(agent, id)
        .await;
    common::destroy_container(agent, id).await;
    Ok(format!("{}{}", out.stdout, out.stderr))
}

/// A loop device over a file holding [`MARKER`]; its minor number.
fn marked_loop(dir: &Path) -> (common::Loop, u64) {
    marked_loop_rw(dir, true)
}

fn marked_loop_rw(dir: &Path, read_only: bool) -> (common::Loop, u64) {
    let image = dir.join("marked.img");
    let mut data = MARKER.as_bytes().to_vec();
    data.resize(1 << 20, 0);
    std::fs::write(&image, data).unwrap();
    let lo = common::Loop::attach(&image, read_only);
    let rdev = std::fs::metadata(&lo.dev).unwrap().rdev();
    (lo, nix::sys::stat::minor(rdev))
}

/// A pod sandbox that stays up; its init's pid.
async fn sandbox(agent: &Agent, sid: &str) -> common::Started {
    let mut s = spec(sid, "echo up; exec sleep 1000");
    s["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox",
                              "io.microsoft.cri.skip-pod-networking": "true"});
    common::create_container(agent, sid, busybox_layer(agent), s)
        .await
        .unwrap();
    let started = common::start_process(agent, sid, None, false)
        .await
        .unwrap();
    // The init runs (its namespaces exist) once it has written.
    let mut started = started;
    let mut b = [0u8; 3];
    use tokio::io::AsyncReadExt;
    started
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut b)
        .await
        .unwrap();
    started
}

/// A workload spec of pod `sid` (whose init is `spid`) running `script`.
fn workload(wid: &str, sid: &str, spid: u32, script: &str) -> Value {
    let mut w = spec(wid, script);
    w.as_object_mut().unwrap().remove("hostname");
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container",
                              "io.kubernetes.cri.sandbox-id": sid});
    w["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"},
        {"type": "ipc", "path": format!("/proc/{spid}/ns/ipc")},
        {"type": "uts", "path": format!("/proc/{spid}/ns/uts")},
    ]);
    w
}

async fn stop_sandbox(agent: &Agent, sid: &str, started: common::Started) {
    common::kill_and_destroy(agent, sid, started).await;
}

#[tokio::test]
async fn device_cgroup_denies_by_default_as_runc() {
    let dir = tempfile::tempdir().unwrap();
    let (lo, minor) = marked_loop(dir.path());
    let agent = Agent::sandboxed_with_devices(&[], &lo.node("pmem0")).await;
    device_cgroup_denies_by_default(&agent, minor).await;
}

/// The same on a cgroup v2 host (what the utility VM mounts), where the device cgroup is a BPF
/// program libcgroups attaches to each container's cgroup.
#[tokio::test]
async fn device_cgroup_denies_by_default_on_cgroup_v2() {
    let dir = tempfile::tempdir().unwrap();
    let (lo, minor) = marked_loop(dir.path());
    let agent = Agent::sandboxed_on_cgroup_v2(&[], &lo.node("pmem0")).await;
    let layer = busybox_layer(&agent);
    // The container's cgroup is on the unified hierarchy, which it sees read-only.
    let mut s = spec(
        "v2-cgroup",
        "grep ' /sys/fs/cgroup ' /proc/self/mounts | cut -d' ' -f3,4 | cut -d, -f1; sed -n 's/^0:://p' /proc/self/cgroup",
    );
    s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/sys/fs/cgroup",
        "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    let out = run(&agent, "v2-cgroup", layer, s).await.unwrap();
    let (mounts, path) = out.trim_end().rsplit_once('\n').unwrap();
    assert!(
        !mounts.is_empty() && mounts.lines().all(|m| m == "cgroup2 ro"),
        "{out}"
    );
    assert!(path.ends_with("/v2-cgroup"), "{out}");
    device_cgroup_denies_by_default(&agent, minor).await;
}

/// Device `7:minor` (a loop device holding [`MARKER`], `/dev/pmem0` in the agent's /dev) is
/// out of reach of a plain container and of a pod workload that does not list it.
async fn device_cgroup_denies_by_default(agent: &Agent, minor: u64) {
    let layer = busybox_layer(agent);
    // The input: the real host's spec, a node made in the container.
    let probe = format!("mknod /dev/probe b 7 {minor} && head -c 19 /dev/probe");
    let out = run(agent, "dev-plain", layer, spec("dev-plain", &probe))
        .await
        .unwrap();
    assert!(
        !out.contains(MARKER),
        "the container read the UVM's disk: {out}"
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    // runc's default nodes stay usable.
    let out = run(
        agent,
        "dev-default",
        layer,
        spec(
            "dev-default",
            "echo x >/dev/null && head -c 4 /dev/urandom | wc -c && head -c 2 /dev/zero | wc -c && exec 3<>/dev/ptmx && echo ptmx",
        ),
    )
    .await
    .unwrap();
    assert_eq!(out, "4\n2\nptmx\n");

    let sid = "dev-pod";
    let sb = sandbox(agent, sid).await;
    // A node the spec names is reachable (it gets its rule), nothing else.
    let mut w = workload(
        "dev-listed",
        sid,
        sb.pid,
        &format!("head -c 19 /dev/pmem0; echo; mknod /dev/other b 7 {} 2>/dev/null; head -c 1 /dev/other 2>&1 | grep -o 'Operation not permitted'", minor + 1),
    );
    w["linux"]["devices"] = json!([{"path": "/dev/pmem0"}]);
    let out = run(agent, "dev-listed", layer, w).await.unwrap();
    assert_eq!(out, format!("{MARKER}\nOperation not permitted\n"));
    // A privileged workload opens what it likes.
    let mut w = workload("dev-priv", sid, sb.pid, &probe);
    w["annotations"]["io.microsoft.virtualmachine.lcow.privileged"] = json!("true");
    let out = run(agent, "dev-priv", layer, w).await.unwrap();
    assert_eq!(out, MARKER);
    stop_sandbox(agent, sid, sb).await;
    assert!(agent.client.failure().is_none());
}

#[tokio::test]
async fn seccomp_profiles_are_enforced_for_init_and_exec() {
    let agent = Agent::sandboxed(&[]).await;
    let layer = busybox_layer(&agent);
    let id = "seccomp";
    let mut s = spec(
        id,
        "grep Seccomp: /proc/self/status; mkdir /x 2>&1 | sed 's/.*: //'; exec sleep 1000",
    );
    s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
    common::create_container(&agent, id, layer, s)
        .await
        .unwrap();
    let mut init = common::start_process(&agent, id, None, false)
        .await
        .unwrap();
    let mut seen = String::new();
    {
        use tokio::io::AsyncReadExt;
        let out = init.stdout.as_mut().unwrap();
        let mut b = [0u8; 1];
        while seen.matches('\n').count() < 2 {
            assert_eq!(out.read(&mut b).await.unwrap(), 1);
            seen.push(b[0] as char);
        }
    }
    assert_eq!(seen, "Seccomp:\t2\nOperation not permitted\n");
    // An exec's stdout.
    let exec = |script: &'static str| {
        let agent = &agent;
        async move {
            let mut p = spec(id, script)["process"].clone();
            p["terminal"] = json!(false);
            common::start_process(agent, id, Some(p), false)
                .await
                .unwrap()
                .finish(agent, id)
                .await
                .stdout
        }
    };
    assert_eq!(
        exec("grep Seccomp: /proc/self/status; mkdir /y 2>&1 | sed 's/.*: //'").await,
        "Seccomp:\t2\nOperation not permitted\n"
    );
    common::kill_and_destroy(&agent, id, init).await;

    // The same id again, with another profile: an exec gets the new container's profile, not
    // one the runtime kept from the first (the helper keeps each container's profile).
    let mut s = spec(id, "exec sleep 1000");
    s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]});
    common::create_container(&agent, id, layer, s)
        .await
        .unwrap();
    let init = common::start_process(&agent, id, None, false)
        .await
        .unwrap();
    assert_eq!(
        exec("mkdir /y && echo made; rmdir /y 2>&1 | sed 's/.*: //'").await,
        "made\nOperation not permitted\n"
    );
    common::kill_and_destroy(&agent, id, init).await;

    // A profile that cannot be loaded fails the Create, clearly.
    let bad = "seccomp-bad";
    let mut s = spec(bad, "true");
    s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_NO_SUCH_ACTION"});
    let e = common::create_container(&agent, bad, layer, s)
        .await
        .unwrap_err();
    assert!(
        e.to_lowercase().contains("seccomp") || e.contains("SCMP_ACT_NO_SUCH_ACTION"),
        "{e}"
    );
    assert!(agent.client.failure().is_none());
}

#[tokio::test]
async fn ids_cannot_reach_outside_run() {
    let agent = Agent::sandboxed(&[]).await;
    let before: Vec<String> = ["etc/hostname", "etc/hosts", "etc/resolv.conf"]
        .iter()
        .map(|f| std::fs::read_to_string(agent.root().join(f)).unwrap_or_default())
        .collect();
    let id = "../../../../../etc";
    let mut s = spec("x", "true");
    s["hostname"] = json!("pwned");
    s["annotations"] = json!({"io.microsoft.cri.virtual-pod-id": id,
                              "io.microsoft.cri.skip-pod-networking": "true"});
    let e = agent
        .client
        .create_container(id, &common::container_settings(id, s.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.hresult(), Some(Hresult::INVALID_ARG), "{e}");
    // A valid id with a hostile virtual pod id, and a workload naming a hostile pod.
    let e = agent
        .client
        .create_container("v", &common::container_settings("v", s))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid virtual pod ID"), "{e}");
    let mut w = spec("w", "true");
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container",
                              "io.kubernetes.cri.sandbox-id": "../../etc"});
    let e = agent
        .client
        .create_container("w", &common::container_settings("w", w))
        .await
        .unwrap_err();
    assert_eq!(e.hresult(), Some(Hresult::INVALID_ARG), "{e}");
    let after: Vec<String> = ["etc/hostname", "etc/hosts", "etc/resolv.conf"]
        .iter()
        .map(|f| std::fs::read_to_string(agent.root().join(f)).unwrap_or_default())
        .collect();
    assert_eq!(before, after);
    for d in [
        "sandboxMounts",
        "hugepages",
        "sandboxTmpfsMounts",
        "virtual-pods",
    ] {
        assert!(!agent.root().join("etc").join(d).exists(), "/etc/{d} made");
    }
    assert!(agent.client.failure().is_none());
}

#[tokio::test]
async fn symlinks_cannot_redirect_what_the_agent_makes() {
    let agent = Agent::sandboxed(&[]).await;
    let layer = busybox_layer(&agent);

    // A pod: one workload plants a symlink in a shared sandbox mount; another asks for it as
    // its mount source.
    let sid = "ln-pod";
    let sb = sandbox(&agent, sid).await;
    let mut w1 = workload("ln-w1", sid, sb.pid, "ln -s / /shared/root && echo planted");
    w1["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/shared", "type": "bind", "source": "sandbox://shared", "options": ["rbind"]}));
    assert_eq!(run(&agent, "ln-w1", layer, w1).await.unwrap(), "planted\n");
    let mut w2 = workload("ln-w2", sid, sb.pid, "ls /uvmroot/run/gcs/c");
    w2["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/uvmroot", "type": "bind", "source": "sandbox://shared/root", "options": ["rbind"]}));
    let e = run(&agent, "ln-w2", layer, w2).await.unwrap_err();
    assert!(e.contains("sandbox"), "{e}");
    stop_sandbox(&agent, sid, sb).await;

    // An image whose `evil` is a symlink to /etc, with its cwd below it.
    let evil_layer = "/run/layers/evil";
    let host_layer = agent.root().join("run/layers/evil");
    if !host_layer.exists() {
        let tmp = tempfile::tempdir_in(agent.root().join("run/layers")).unwrap();
        let tree = gcs::host::layers::busybox_tree(tmp.path()).unwrap();
        std::os::unix::fs::symlink("/etc", tree.join("evil")).unwrap();
        std::fs::rename(tree, &host_layer).unwrap();
    }
    let mut s = spec("cwd-evil", "pwd");
    s["process"]["cwd"] = json!("/evil/x-gcs-probe");
    let out = run(&agent, "cwd-evil", evil_layer, s).await.unwrap();
    // Inside the container the link leads to its own /etc.
    assert_eq!(out, "/etc/x-gcs-probe\n");
    assert!(
        !agent.root().join("etc/x-gcs-probe").exists(),
        "made in the UVM's /etc"
    );

    // A bundle path that is a symlink to /etc.
    let link = agent.root().join("run/gcs/c/b");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let mut s = spec("b", "true");
    s["root"]["path"] = json!("/run/layers/p0");
    let mut settings = common::container_settings("b", s);
    settings.oci_bundle_path = "/run/gcs/c/b".into();
    assert!(agent.client.create_container("b", &settings).await.is_err());
    assert!(!agent.root().join("etc/config.json").exists());
    assert!(!agent.root().join("etc/hostname.gcs").exists());
    std::fs::remove_file(&link).unwrap();
    assert!(agent.client.failure().is_none());
}

#[tokio::test]
async fn bundles_are_private_and_a_mounted_rootfs_is_not_deleted_through() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "private";
    common::create_container(
        &agent,
        id,
        busybox_layer(&agent),
        spec(id, "echo secret-write > /written"),
    )
    .await
    .unwrap();
    let bundle = agent.root().join(format!("run/gcs/c/{id}"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&bundle), 0o700);
    assert_eq!(mode(&bundle.join("config.json")), 0o600);
    assert_eq!(mode(&agent.root().join("run/gcs/runtime/state")), 0o700);
    let out = common::start_process(&agent, id, None, false)
        .await
        .unwrap()
        .finish(&agent, id)
        .await;
    assert_eq!(out.code, 0);
    agent
        .client
        .next_notification(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    // DeleteContainerState with the rootfs still mounted: refused, the writes kept.
    let e = agent.client.delete_container_state(id).await.unwrap_err();
    assert!(e.to_string().contains("still mounted"), "{e}");
    let upper = bundle.join(format!("scratch/{id}"));
    let found = std::process::Command::new("find")
        .arg(&upper)
        .args(["-name", "written"])
        .output()
        .unwrap();
    assert!(!found.stdout.is_empty(), "the container's write is gone");
    common::remove_rootfs(&agent.client, id).await;
    agent.client.delete_container_state(id).await.unwrap();
    assert!(!bundle.exists());
    assert!(agent.client.failure().is_none());
}

#[tokio::test]
async fn docker_default_profile_runs_busybox_workloads() {
    const SCRIPT: &str = "grep Seccomp: /proc/self/status; echo hi > /tmp/x && cat /tmp/x; \
        ls / | wc -l | grep -q . && echo ls; (sleep 0.1 &); wait; ps -o pid,comm | grep -q sh && echo ps; \
        id -u; date +%Y | grep -q . && echo date; unshare -U true 2>&1 | sed 's/.*: //'";
    let agent = Agent::sandboxed(&[]).await;
    // Without a profile the script may make a user namespace (unshare(2) needs no
    // capability): the profile is what refuses it below.
    let unconfined = run(
        &agent,
        "no-seccomp",
        busybox_layer(&agent),
        spec("no-seccomp", SCRIPT),
    )
    .await
    .unwrap();
    assert_eq!(unconfined, "Seccomp:\t0\nhi\nls\nps\n0\ndate\n");
    let id = "docker-seccomp";
    let mut s = spec(id, SCRIPT);
    s["linux"]["seccomp"] = common::docker_default_profile();
    let out = run(&agent, id, busybox_layer(&agent), s).await.unwrap();
    assert_eq!(
        out,
        "Seccomp:\t2\nhi\nls\nps\n0\ndate\nOperation not permitted\n"
    );
    assert!(agent.client.failure().is_none());
}

/// `…tee-log-path`: the init's stdout and stderr are also appended to a file in the pod's log
/// directory (bound into containers with `…tee-log-dir-mount`, relative destinations too); a
/// path out of that directory is refused, and a symlink a container plants there is not
/// followed.
#[tokio::test]
async fn tee_logs_append_init_output_and_follow_no_symlink() {
    let agent = Agent::sandboxed(&[]).await;
    let layer = busybox_layer(&agent);
    let sid = "tee-pod";
    let sb = sandbox(&agent, sid).await;
    let mut w = workload(
        "tee-w",
        sid,
        sb.pid,
        "echo to-out; echo to-err >&2; ls /logs/w",
    );
    w["annotations"]["io.microsoft.container.lcow.tee-log-path"] = json!("w/out.log");
    w["annotations"]["io.microsoft.container.lcow.tee-log-dir-mount"] = json!("logs");
    let out = run(&agent, "tee-w", layer, w).await.unwrap();
    assert!(
        out.contains("to-out\n") && out.contains("to-err\n") && out.contains("out.log"),
        "{out}"
    );
    let log = agent.root().join(format!("run/gcs/c/{sid}/logs/w/out.log"));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("to-out\n") && text.contains("to-err\n"),
        "{text:?}"
    );

    // Out of the log directory: refused at Create.
    let mut w = workload("tee-out", sid, sb.pid, "true");
    w["annotations"]["io.microsoft.container.lcow.tee-log-path"] = json!("../../escape.log");
    let e = run(&agent, "tee-out", layer, w).await.unwrap_err();
    assert!(e.contains("is not within sandbox's log dir"), "{e}");

    // A workload plants a symlink in the log directory; another's tee log is that name.
    let target = agent.root().join("etc/gcs-tee-target");
    let _ = std::fs::remove_file(&target);
    let mut w = workload(
        "tee-plant",
        sid,
        sb.pid,
        "ln -s /etc/gcs-tee-target /logs/evil.log && echo planted",
    );
    w["annotations"]["io.microsoft.container.lcow.tee-log-dir-mount"] = json!("/logs");
    assert_eq!(
        run(&agent, "tee-plant", layer, w).await.unwrap(),
        "planted\n"
    );
    let mut w = workload("tee-victim", sid, sb.pid, "echo secret");
    w["annotations"]["io.microsoft.container.lcow.tee-log-path"] = json!("evil.log");
    common::create_container(&agent, "tee-victim", layer, w)
        .await
        .unwrap();
    let e = common::start_process(&agent, "tee-victim", None, false)
        .await
        .err()
        .unwrap();
    assert!(e.contains("tee log"), "{e}");
    assert!(
        !target.exists(),
        "the agent wrote through the planted symlink"
    );
    stop_sandbox(&agent, sid, sb).await;
    assert!(agent.client.failure().is_none());
}

/// Raw block volumes (`blockdev://` destinations): the node the `BlockDev` symlink names is
/// bound at the destination with its device rule; `ro` allows reading only.
#[tokio::test]
async fn raw_block_volumes_are_read_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let (lo, _) = marked_loop_rw(dir.path(), false);
    let agent = Agent::sandboxed_with_devices(&[], &lo.node("pmem0")).await;
    let layer = busybox_layer(&agent);
    // What a MappedVirtualDisk with BlockDev leaves at its MountPath.
    let link = agent.root().join("run/mounts/raw0");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/dev/pmem0", &link).unwrap();
    let sid = "raw-pod";
    let sb = sandbox(&agent, sid).await;
    let mut w = workload(
        "raw-rw",
        sid,
        sb.pid,
        "head -c 19 /dev/raw; echo; printf written | dd of=/dev/raw bs=1 seek=100 conv=notrunc 2>/dev/null && dd if=/dev/raw bs=1 skip=100 count=7 2>/dev/null; echo",
    );
    w["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "blockdev:///dev/raw", "type": "bind", "source": "/run/mounts/raw0", "options": ["rbind"]}),
    );
    let out = run(&agent, "raw-rw", layer, w).await.unwrap();
    assert_eq!(out, format!("{MARKER}\nwritten\n"));
    let mut w = workload(
        "raw-ro",
        sid,
        sb.pid,
        "head -c 19 /dev/raw; echo; printf x | dd of=/dev/raw bs=1 conv=notrunc 2>&1 | grep -o -m1 'Operation not permitted\\|Read-only file system'",
    );
    w["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "blockdev:///dev/raw", "type": "bind", "source": "/run/mounts/raw0", "options": ["rbind", "ro"]}),
    );
    let out = run(&agent, "raw-ro", layer, w).await.unwrap();
    assert!(out.starts_with(&format!("{MARKER}\n")), "{out}");
    assert!(
        out.len() > MARKER.len() + 1,
        "the write went through: {out}"
    );
    // A source that is no symlink to a block device.
    let mut w = workload("raw-bad", sid, sb.pid, "true");
    w["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "blockdev:///dev/raw", "type": "bind", "source": "/run/mounts", "options": ["rbind"]}),
    );
    let e = run(&agent, "raw-bad", layer, w).await.unwrap_err();
    assert!(e.contains("readlink"), "{e}");
    stop_sandbox(&agent, sid, sb).await;
    assert!(agent.client.failure().is_none());
}
