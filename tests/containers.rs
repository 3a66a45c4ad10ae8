//! Containers over the bridge, as root, with the agent sandboxed in fresh mount, pid and cgroup
//! namespaces (private /run and cgroupfs): lifecycle, stdio, TTY, exec, signals, pods,
//! properties, notifications, concurrency, bad input, and no leaks after deletion.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{busybox_layer, join_all, read_all, Agent, HostStdio};
use gcs::protocol::messages::*;
use gcs::protocol::{Hresult, INFINITE_WAIT, NULL_CONTAINER_ID};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// The real host's spec from trace 09 for container `id`, with other arguments.
fn spec(id: &str, args: &[&str]) -> Value {
    let mut spec = common::trace_spec(args);
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    spec
}

fn settings(id: &str, spec: Value) -> ContainerSettings {
    ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(spec),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    }
}

async fn add_rootfs(agent: &Agent, id: &str) {
    common::add_rootfs(&agent.client, id, busybox_layer(agent)).await;
}

async fn remove_rootfs(agent: &Agent, id: &str) {
    let request = ModifySettingRequest {
        resource_type: "CombinedLayers".into(),
        request_type: "Remove".into(),
        settings: Some(json!({"ContainerRootPath": format!("/run/gcs/c/{id}/rootfs")})),
    };
    agent
        .client
        .modify_settings(NULL_CONTAINER_ID, request)
        .await
        .unwrap();
}

async fn create(agent: &Agent, id: &str, spec: Value) {
    add_rootfs(agent, id).await;
    agent
        .client
        .create_container(id, &settings(id, spec))
        .await
        .unwrap();
    agent.client.start_container(id).await.unwrap();
}

/// Starts the init with the given streams; returns its pid and the host ends.
async fn start_init(
    agent: &Agent,
    id: &str,
    want: [bool; 3],
) -> (
    u32,
    (
        Option<tokio::net::UnixStream>,
        Option<tokio::net::UnixStream>,
        Option<tokio::net::UnixStream>,
    ),
) {
    let mut params = ProcessParameters::default();
    let stdio = HostStdio::listen(agent, &mut params, want);
    let pid = agent
        .client
        .execute_process(id, &params, stdio.ports)
        .await
        .unwrap();
    (pid, stdio.accept().await)
}

/// Nothing of the container is left: cgroup, runtime state, bundle, mounts.
fn assert_no_leaks(agent: &Agent, id: &str) {
    let sandbox = agent.sandbox.as_ref().unwrap();
    for dir in sandbox.cgroup_dirs(&format!("pods/{id}")) {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    let root = agent.root();
    assert!(
        !root.join(format!("run/gcs/runtime/state/{id}")).exists(),
        "runtime state left behind"
    );
    assert!(
        !root.join(format!("run/gcs/c/{id}")).exists(),
        "bundle left behind"
    );
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", agent.agent_pid())).unwrap();
    let ours = |l: &&str| l.contains(&format!("/{id}/")) || l.contains(&format!("/{id} "));
    let left: Vec<&str> = mountinfo.lines().filter(ours).collect();
    assert!(left.is_empty(), "mount of {id} left behind: {left:#?}");
}

#[tokio::test]
async fn standalone_container_exit_code_stdout_stderr_and_cleanup() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-exit3";
    let args = [
        "sh",
        "-c",
        "echo hello from init; echo pid=$$; cat /etc/hostname; echo to-stderr >&2; exit 3",
    ];
    create(&agent, id, spec(id, &args)).await;
    let (pid, (_, out, err)) = start_init(&agent, id, [false, true, true]).await;
    let (out, err) = tokio::join!(read_all(out), read_all(err));
    assert_eq!(out, "hello from init\npid=1\npeerctr\n");
    assert_eq!(err, "to-stderr\n");
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        3
    );
    let n = agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (n.container_id.as_str(), n.notification_type),
        (id, NotificationType::UnexpectedExit)
    );
    // A repeated wait on init returns the stored code at once; no second notification.
    assert_eq!(agent.client.wait_for_process(id, pid, 50).await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(agent.client.try_notification().await.is_none());
    for err in [
        agent.client.shutdown_graceful(id).await.unwrap_err(),
        agent.client.shutdown_forced(id).await.unwrap_err(),
    ] {
        assert_eq!(
            err.hresult(),
            Some(Hresult::SYSTEM_ALREADY_STOPPED),
            "{err}"
        );
    }
    remove_rootfs(&agent, id).await;
    agent.client.delete_container_state(id).await.unwrap();
    let err = agent.client.delete_container_state(id).await.unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::SYSTEM_NOT_FOUND));
    assert_no_leaks(&agent, id);
    assert!(agent.client.failure().is_none());
}

/// An exec's OCI process: the container's, with other arguments.
fn exec_process(id: &str, args: &[&str], terminal: bool) -> ProcessParameters {
    let mut process = spec(id, args)["process"].clone();
    process["terminal"] = json!(terminal);
    ProcessParameters {
        oci_process: Some(process),
        ..ProcessParameters::default()
    }
}

async fn exec(
    agent: &Agent,
    id: &str,
    mut params: ProcessParameters,
    want: [bool; 3],
) -> (
    u32,
    (
        Option<tokio::net::UnixStream>,
        Option<tokio::net::UnixStream>,
        Option<tokio::net::UnixStream>,
    ),
) {
    let stdio = HostStdio::listen(agent, &mut params, want);
    let pid = agent
        .client
        .execute_process(id, &params, stdio.ports)
        .await
        .unwrap();
    (pid, stdio.accept().await)
}

async fn read_line(s: &mut tokio::net::UnixStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "EOF after {:?}", String::from_utf8_lossy(&line));
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

async fn cleanup(agent: &Agent, id: &str) {
    remove_rootfs(agent, id).await;
    agent.client.delete_container_state(id).await.unwrap();
    assert_no_leaks(agent, id);
}

#[tokio::test]
async fn stdin_is_relayed_and_half_close_is_eof() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-cat";
    create(&agent, id, spec(id, &["cat"])).await;
    let (pid, (stdin, out, _)) = start_init(&agent, id, [true, true, false]).await;
    let mut stdin = stdin.unwrap();
    stdin.write_all(b"abc\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    assert_eq!(read_all(out).await, "abc\n");
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    cleanup(&agent, id).await;
}

#[tokio::test]
async fn exec_pipes_tty_resize_and_kill() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-exec";
    create(
        &agent,
        id,
        spec(
            id,
            &["sh", "-c", "echo ready; while true; do sleep 1; done"],
        ),
    )
    .await;
    let (init, (_, out, _)) = start_init(&agent, id, [false, true, false]).await;
    let mut out = out.unwrap();
    assert_eq!(read_line(&mut out).await, "ready\n");

    // Exec with pipes: output, exit code, and its own pid namespace view.
    let (pid, (_, o, e)) = exec(
        &agent,
        id,
        exec_process(
            id,
            &[
                "sh",
                "-c",
                "echo exec-out; echo exec-err >&2; echo pid=$$; exit 4",
            ],
            false,
        ),
        [false, true, true],
    )
    .await;
    let (o, e) = tokio::join!(read_all(o), read_all(e));
    assert!(o.starts_with("exec-out\npid="), "{o}");
    assert_ne!(
        o.trim_end().rsplit('=').next().unwrap(),
        pid.to_string(),
        "exec'd pid is in the container's namespace"
    );
    assert_eq!(e, "exec-err\n");
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        4
    );
    let err = agent
        .client
        .wait_for_process(id, pid, INFINITE_WAIT)
        .await
        .unwrap_err();
    assert_eq!(
        err.hresult(),
        Some(Hresult::NOT_FOUND),
        "an exec is gone after its first wait"
    );

    // Exec with a tty, resized while it runs.
    let (pid, (i, o, _)) = exec(
        &agent,
        id,
        exec_process(id, &["sh", "-c", "read line; stty size; exit 6"], true),
        [true, true, false],
    )
    .await;
    let (mut i, mut o) = (i.unwrap(), o.unwrap());
    agent.client.resize_console(id, pid, 40, 100).await.unwrap();
    i.write_all(b"go\n").await.unwrap();
    let mut seen = String::new();
    while !seen.contains("40 100") {
        seen.push_str(&read_line(&mut o).await);
    }
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        6
    );
    // The init has no tty.
    let err = agent
        .client
        .resize_console(id, init, 10, 10)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a tty"), "{err}");

    // No pipes at all; a missing binary is a clear error.
    let (pid, _) = exec(
        &agent,
        id,
        exec_process(id, &["sh", "-c", "exit 9"], false),
        [false; 3],
    )
    .await;
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        9
    );
    let err = agent
        .client
        .execute_process(
            id,
            &exec_process(id, &["/bin/does-not-exist"], false),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap_err();
    assert_ne!(err.hresult(), Some(Hresult::OK));
    assert!(err.to_string().contains("does-not-exist"), "{err}");

    // Kill (no Options): SIGKILL, 137, ForcedExit.
    agent.client.signal_process(id, init, None).await.unwrap();
    assert_eq!(
        agent
            .client
            .wait_for_process(id, init, INFINITE_WAIT)
            .await
            .unwrap(),
        137
    );
    assert_eq!(read_all(Some(out)).await, "");
    let n = agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(n.notification_type, NotificationType::ForcedExit);
    cleanup(&agent, id).await;
}

#[tokio::test]
async fn signals_timeouts_and_graceful_exit() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-signal";
    create(
        &agent,
        id,
        spec(
            id,
            &[
                "sh",
                "-c",
                "trap 'echo init got TERM; exit 42' TERM; echo ready; while true; do sleep 1; done",
            ],
        ),
    )
    .await;
    let (init, (_, out, _)) = start_init(&agent, id, [false, true, false]).await;
    let mut out = out.unwrap();
    assert_eq!(read_line(&mut out).await, "ready\n");
    let (sleeper, _) = exec(
        &agent,
        id,
        exec_process(id, &["sleep", "100"], false),
        [false; 3],
    )
    .await;
    let err = agent
        .client
        .wait_for_process(id, sleeper, 50)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::TIMEOUT));
    agent
        .client
        .signal_process(id, sleeper, Some(15))
        .await
        .unwrap();
    assert_eq!(
        agent
            .client
            .wait_for_process(id, sleeper, INFINITE_WAIT)
            .await
            .unwrap(),
        143
    );
    let err = agent
        .client
        .signal_process(id, sleeper, Some(15))
        .await
        .unwrap_err();
    assert_eq!(
        err.hresult(),
        Some(Hresult::NOT_FOUND),
        "signal to an exited process"
    );
    agent
        .client
        .signal_process(id, init, Some(15))
        .await
        .unwrap();
    assert_eq!(read_all(Some(out)).await, "init got TERM\n");
    assert_eq!(
        agent
            .client
            .wait_for_process(id, init, INFINITE_WAIT)
            .await
            .unwrap(),
        42
    );
    let n = agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(n.notification_type, NotificationType::GracefulExit);
    cleanup(&agent, id).await;
}

#[tokio::test]
async fn shutdown_graceful_and_forced() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-shutdown";
    create(&agent, id, spec(id, &["sleep", "1000"])).await;
    let (init, _) = start_init(&agent, id, [false; 3]).await;
    // Deleting a running container is refused and changes nothing.
    let err = agent.client.delete_container_state(id).await.unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::INVALID_STATE));
    agent.client.shutdown_forced(id).await.unwrap();
    assert_eq!(
        agent
            .client
            .wait_for_process(id, init, INFINITE_WAIT)
            .await
            .unwrap(),
        137
    );
    let n = agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(n.notification_type, NotificationType::ForcedExit);
    cleanup(&agent, id).await;
}

#[tokio::test]
async fn properties_process_list_and_statistics() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-props";
    create(
        &agent,
        id,
        spec(
            id,
            &["sh", "-c", "echo ready; while true; do sleep 1; done"],
        ),
    )
    .await;
    let (init, (_, out, _)) = start_init(&agent, id, [false, true, false]).await;
    let mut out = out.unwrap();
    assert_eq!(read_line(&mut out).await, "ready\n");
    let (sleeper, _) = exec(
        &agent,
        id,
        exec_process(id, &["sleep", "100"], false),
        [false; 3],
    )
    .await;
    let props = agent
        .client
        .get_properties(id, &["ProcessList"])
        .await
        .unwrap();
    let pids: Vec<u32> = props.process_list.iter().map(|p| p.process_id).collect();
    assert!(
        pids.contains(&init) && pids.contains(&sleeper),
        "{pids:?} lacks {init} or {sleeper}"
    );
    let props = agent
        .client
        .get_properties(id, &["Statistics"])
        .await
        .unwrap();
    let m = props.lcow_metrics.unwrap();
    assert!(m["pids"]["current"].as_u64().unwrap() >= 2, "{m}");
    assert!(m["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["blkio"], json!({}));
    let props = agent
        .client
        .get_properties(id, &["Memory", "ProcessorTopology"])
        .await
        .unwrap();
    assert_eq!(props, Properties::default());
    agent.client.shutdown_forced(id).await.unwrap();
    agent
        .client
        .wait_for_process(id, init, INFINITE_WAIT)
        .await
        .unwrap();
    let props = agent
        .client
        .get_properties(id, &["ProcessList"])
        .await
        .unwrap();
    assert!(props.process_list.is_empty(), "{props:?}");
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    cleanup(&agent, id).await;
}

#[tokio::test]
async fn cri_pod_sandbox_and_workload_share_namespaces() {
    let agent = Agent::sandboxed(&[]).await;
    let sid = "pod-sandbox";
    // As PID 1 of its namespace the shell ignores SIGTERM unless it traps it.
    let mut s = spec(
        sid,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo ready; while true; do sleep 1; done",
        ],
    );
    s["hostname"] = json!("podhost");
    s["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox", "io.microsoft.cri.skip-pod-networking": "true"});
    create(&agent, sid, s).await;
    let (spid, (_, out, _)) = start_init(&agent, sid, [false, true, false]).await;
    let mut out = out.unwrap();
    assert_eq!(read_line(&mut out).await, "ready\n");

    let wid = "pod-workload";
    let mut w = spec(
        wid,
        &[
            "sh",
            "-c",
            "cat /etc/hostname; hostname; readlink /proc/1/ns/ipc",
        ],
    );
    w.as_object_mut().unwrap().remove("hostname");
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": sid});
    w["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"},
        {"type": "ipc", "path": format!("/proc/{spid}/ns/ipc")},
        {"type": "uts", "path": format!("/proc/{spid}/ns/uts")},
        {"type": "network", "path": format!("/proc/{spid}/ns/net")},
    ]);
    create(&agent, wid, w).await;
    let sandbox = agent.sandbox.as_ref().unwrap();
    assert!(
        sandbox
            .cgroup_dirs(&format!("pods/{sid}/{wid}"))
            .iter()
            .any(|d| d.exists()),
        "workload cgroup under its pod"
    );
    let (wpid, (_, wout, _)) = start_init(&agent, wid, [false, true, false]).await;
    let text = match tokio::time::timeout(Duration::from_secs(20), read_all(wout)).await {
        Ok(t) => t,
        Err(_) => panic!("workload output did not end; agent log:\n{}", agent.log()),
    };
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("podhost"));
    assert_eq!(lines.next(), Some("podhost"));
    let sandbox_ipc =
        std::fs::read_link(format!("/proc/{}/ns/ipc", host_pid(&agent, spid))).unwrap();
    assert_eq!(
        lines.next(),
        Some(sandbox_ipc.to_string_lossy().as_ref()),
        "workload joined the sandbox's ipc namespace"
    );
    assert_eq!(
        agent
            .client
            .wait_for_process(wid, wpid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    cleanup(&agent, wid).await;

    agent.client.shutdown_graceful(sid).await.unwrap();
    assert_eq!(
        agent
            .client
            .wait_for_process(sid, spid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    let n = agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (n.container_id.as_str(), n.notification_type),
        (sid, NotificationType::GracefulExit)
    );
    cleanup(&agent, sid).await;
    for dir in sandbox.cgroup_dirs(&format!("pods/{sid}")) {
        assert!(!dir.exists(), "pod cgroup {} left behind", dir.display());
    }
}

#[tokio::test]
async fn twenty_concurrent_containers_without_leaks() {
    let agent = Agent::sandboxed(&[]).await;
    let agent = &agent;
    let runs = (0..20).map(|i| async move {
        let id = format!("c-many-{i}");
        create(
            agent,
            &id,
            spec(&id, &["sh", "-c", &format!("echo container {i}; exit {i}")]),
        )
        .await;
        let (pid, (_, out, _)) = start_init(agent, &id, [false, true, false]).await;
        assert_eq!(read_all(out).await, format!("container {i}\n"));
        assert_eq!(
            agent
                .client
                .wait_for_process(&id, pid, INFINITE_WAIT)
                .await
                .unwrap(),
            i
        );
        id
    });
    let ids = join_all(runs).await;
    let mut notified = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let n = agent
            .client
            .next_notification(Duration::from_secs(20))
            .await
            .unwrap();
        assert!(
            notified.insert(n.container_id.clone()),
            "second notification for {}",
            n.container_id
        );
    }
    assert_eq!(notified.len(), 20);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(agent.client.try_notification().await.is_none());
    for id in ids {
        cleanup(agent, &id).await;
    }
    let stacks = agent.client.dump_stacks().await.unwrap();
    assert!(stacks.contains("containers 0"), "{stacks}");
}

/// The pid on this machine of a pid in the agent's namespace.
fn host_pid(agent: &Agent, pid: u32) -> u32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(host) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap_or_default();
        let Some(nspid) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else {
            continue;
        };
        let ids: Vec<&str> = nspid.split_whitespace().collect();
        if ids.len() >= 2 && ids[1] == pid.to_string() && is_descendant(host, agent.agent_pid()) {
            return host;
        }
    }
    panic!("pid {pid} of the agent's namespace not found");
}

fn is_descendant(mut pid: u32, ancestor: u32) -> bool {
    while pid > 1 {
        if pid == ancestor {
            return true;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        pid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
    }
    false
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_agent_keeps_serving() {
    let agent = Agent::sandboxed(&[]).await;
    let c = &agent.client;
    let id = "c-bad";
    create(&agent, id, spec(id, &["sleep", "1000"])).await;
    // Duplicate id.
    let err = c
        .create_container(id, &settings(id, spec(id, &["true"])))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::SYSTEM_ALREADY_EXISTS));
    // Hostile bundle paths.
    for bundle in ["/run/../etc/evil", "/etc/evil", "relative/path"] {
        let mut s = settings("c-hostile", spec("c-hostile", &["true"]));
        s.oci_bundle_path = bundle.into();
        let err = c.create_container("c-hostile", &s).await.unwrap_err();
        assert_eq!(err.hresult(), Some(Hresult::FAIL), "{bundle}: {err}");
    }
    assert!(!Path::new("/etc/evil").exists());
    // A workload for a pod that does not exist; an invalid hostname.
    let mut w = spec("c-orphan", &["true"]);
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "nope"});
    let err = c
        .create_container("c-orphan", &settings("c-orphan", w))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pod nope does not exist"), "{err}");
    let mut h = spec("c-host", &["true"]);
    h["hostname"] = json!("bad host name");
    let err = c
        .create_container("c-host", &settings("c-host", h))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid hostname"), "{err}");
    // Annotations and users refused as the original refuses them, before anything is made:
    // no sandbox directory or mount is left behind.
    for (cid, annotations, user, want) in [
        (
            "c-type",
            json!({"io.kubernetes.cri.container-type": ""}),
            None,
            "unsupported 'io.kubernetes.cri.container-type': ''",
        ),
        (
            "c-type2",
            json!({"io.kubernetes.cri.container-type": "Pod"}),
            None,
            "unsupported",
        ),
        (
            "c-core",
            json!({"io.kubernetes.cri.container-type": "sandbox", "io.microsoft.cri.skip-pod-networking": "true",
                          "io.microsoft.lcow.rlimitcore": "1"}),
            None,
            "wrong number of values supplied for rlimit core",
        ),
        (
            "c-core2",
            json!({"io.kubernetes.cri.container-type": "sandbox", "io.microsoft.cri.skip-pod-networking": "true",
                           "io.microsoft.lcow.rlimitcore": "1;x"}),
            None,
            "failed to parse hard core rlimit",
        ),
        (
            "c-user",
            json!({"io.kubernetes.cri.container-type": "sandbox", "io.microsoft.cri.skip-pod-networking": "true"}),
            Some("bob"),
            "user \"bob\" not found in the container's /etc/passwd",
        ),
        (
            "c-group",
            json!({}),
            Some("root:wheel"),
            "group \"wheel\" not found in the container's /etc/group",
        ),
        (
            "c-uid",
            json!({}),
            Some("4294967296"),
            "exceeds uint32 bounds",
        ),
        (
            "c-userstr",
            json!({}),
            Some("a:b:c"),
            "invalid user \"a:b:c\"",
        ),
    ] {
        add_rootfs(&agent, cid).await;
        let mut bad = spec(cid, &["true"]);
        bad["annotations"] = annotations;
        if let Some(user) = user {
            bad["process"]["user"]["username"] = json!(user);
        }
        let err = c
            .create_container(cid, &settings(cid, bad))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(want), "{cid}: {err}");
        let mountinfo =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", agent.agent_pid())).unwrap();
        let left: Vec<&str> = mountinfo
            .lines()
            .filter(|l| l.contains(&format!("/{cid}/")) && !l.contains("/rootfs "))
            .collect();
        assert!(left.is_empty(), "{cid}: mounts left behind: {left:#?}");
        remove_rootfs(&agent, cid).await;
    }
    // Hostile CombinedLayers paths.
    let request = ModifySettingRequest {
        resource_type: "CombinedLayers".into(),
        request_type: "Add".into(),
        settings: Some(
            json!({"ContainerRootPath": "/etc/x", "Layers": [{"Path": "/run/layers/p0"}]}),
        ),
    };
    assert!(c.modify_settings(NULL_CONTAINER_ID, request).await.is_err());
    // Unknown process; exec in an unknown container; start twice.
    let err = c
        .wait_for_process(id, 999_999, INFINITE_WAIT)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::NOT_FOUND));
    let err = c
        .execute_process(
            "c-none",
            &exec_process(id, &["true"], false),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::SYSTEM_NOT_FOUND));
    let (init, _) = start_init(&agent, id, [false; 3]).await;
    let err = c
        .execute_process(
            id,
            &ProcessParameters::default(),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::INVALID_STATE), "{err}");
    // Still serving, and the container still works.
    c.signal_process(id, init, Some(9)).await.unwrap();
    assert_eq!(
        c.wait_for_process(id, init, INFINITE_WAIT).await.unwrap(),
        137
    );
    c.next_notification(Duration::from_secs(10)).await.unwrap();
    cleanup(&agent, id).await;
    assert!(c.failure().is_none());
}

#[tokio::test]
async fn cgroupfs_mounted_read_only_is_read_only() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-rocg";
    let mut s = spec(id, &["sh", "-c", "grep ' /sys/fs/cgroup ' /proc/mounts; mkdir /sys/fs/cgroup/probe && echo WRITABLE || echo read-only"]);
    s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    create(&agent, id, s).await;
    let (pid, (_, out, _)) = start_init(&agent, id, [false, true, true]).await;
    let out = read_all(out).await;
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    assert!(out.trim_end().ends_with("read-only"), "{out}");
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    cleanup(&agent, id).await;
}

#[tokio::test]
async fn a_host_that_never_closes_its_end_cannot_hang_the_wait() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-silent";
    create(&agent, id, spec(id, &["sh", "-c", "echo hi"])).await;
    let (pid, (_, out, _)) = start_init(&agent, id, [false, true, false]).await;
    let mut out = out.unwrap();
    assert_eq!(read_line(&mut out).await, "hi\n");
    // The host keeps `out` open and never reads EOF or closes: the clean-close handshake is
    // bounded, so the exit still arrives.
    let start = std::time::Instant::now();
    let code = tokio::time::timeout(
        Duration::from_secs(20),
        agent.client.wait_for_process(id, pid, INFINITE_WAIT),
    )
    .await;
    assert_eq!(code.expect("wait hung on a silent host").unwrap(), 0);
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(
        agent
            .log()
            .contains("host did not close its end of the relay"),
        "{}",
        agent.log()
    );
    drop(out);
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    cleanup(&agent, id).await;
}

#[tokio::test]
async fn sandbox_mounts_and_log_dir_reach_workloads() {
    let agent = Agent::sandboxed(&[]).await;
    let sid = "pod-mounts";
    let mut s = spec(
        sid,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ],
    );
    s["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox", "io.microsoft.cri.skip-pod-networking": "true"});
    create(&agent, sid, s).await;
    let (spid, _) = start_init(&agent, sid, [false; 3]).await;
    let wid = "pod-mounts-w";
    let mut w = spec(
        wid,
        &[
            "sh",
            "-c",
            "echo shared > /data/f; echo log > /logs/l; cat /etc/hosts | head -1",
        ],
    );
    w.as_object_mut().unwrap().remove("hostname");
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": sid,
        "io.microsoft.container.lcow.tee-log-dir-mount": "/logs"});
    w["mounts"].as_array_mut().unwrap().push(json!({"destination": "/data", "type": "bind", "source": "sandbox://shared", "options": ["rbind", "rw"]}));
    create(&agent, wid, w).await;
    let (wpid, (_, out, _)) = start_init(&agent, wid, [false, true, false]).await;
    assert_eq!(read_all(out).await, "127.0.0.1 localhost\n");
    assert_eq!(
        agent
            .client
            .wait_for_process(wid, wpid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    let root = agent.root().join(format!("run/gcs/c/{sid}"));
    assert_eq!(
        std::fs::read_to_string(root.join("sandboxMounts/shared/f")).unwrap(),
        "shared\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("logs/l")).unwrap(),
        "log\n"
    );
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    cleanup(&agent, wid).await;
    agent.client.shutdown_forced(sid).await.unwrap();
    agent
        .client
        .wait_for_process(sid, spid, INFINITE_WAIT)
        .await
        .unwrap();
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    cleanup(&agent, sid).await;
}

#[tokio::test]
async fn init_with_a_terminal_gets_a_pty_and_can_be_resized() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-tty-init";
    let mut s = spec(id, &["sh", "-c", "tty; read line; stty size; exit 8"]);
    s["process"]["terminal"] = json!(true);
    create(&agent, id, s).await;
    let (pid, (stdin, out, _)) = start_init(&agent, id, [true, true, false]).await;
    let (mut stdin, mut out) = (stdin.unwrap(), out.unwrap());
    assert!(
        read_line(&mut out).await.starts_with("/dev/"),
        "init's stdin is a terminal"
    );
    agent.client.resize_console(id, pid, 33, 77).await.unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let mut seen = String::new();
    while !seen.contains("33 77") {
        seen.push_str(&read_line(&mut out).await);
    }
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        8
    );
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    cleanup(&agent, id).await;
}

/// The V2 shim's layout: bundles under `/run/gcs/pods/<pod>/`, scratch outside the bundle (the
/// bundle is bound onto `<scratch>/bundle`), a virtual pod whose NICs the host has not added,
/// and the pod directory gone with its sandbox.
#[tokio::test]
async fn v2_shim_layout_with_a_virtual_pod() {
    let agent = Agent::sandboxed(&[]).await;
    let c = &agent.client;
    let layer = busybox_layer(&agent);
    let add = |id: &'static str| {
        let request = ModifySettingRequest {
            resource_type: "CombinedLayers".into(),
            request_type: "Add".into(),
            settings: Some(json!({"ContainerID": id,
                "ContainerRootPath": format!("/run/gcs/pods/v2pod/{id}/rootfs"),
                "Layers": [{"Path": layer}], "ScratchPath": format!("/run/scratch/{id}")})),
        };
        c.modify_settings(NULL_CONTAINER_ID, request)
    };
    let remove = |id: &'static str| {
        let request = ModifySettingRequest {
            resource_type: "CombinedLayers".into(),
            request_type: "Remove".into(),
            settings: Some(
                json!({"ContainerRootPath": format!("/run/gcs/pods/v2pod/{id}/rootfs")}),
            ),
        };
        c.modify_settings(NULL_CONTAINER_ID, request)
    };
    let settings = |id: &str, spec: Value| ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/pods/v2pod/{id}"),
        oci_specification: Some(spec),
        scratch_dir_path: format!("/run/scratch/{id}"),
    };
    let sid = "v2-sandbox";
    add(sid).await.unwrap();
    let mut s = common::trace_spec(&["sh", "-c", "echo up; exec sleep 1000"]);
    s["root"]["path"] = json!(format!("/run/gcs/pods/v2pod/{sid}/rootfs"));
    s["hostname"] = json!("vpodhost");
    s["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox",
                              "io.microsoft.cri.virtual-pod-id": sid});
    // Its namespace's NICs were never added: created all the same.
    s["windows"] = json!({"network": {"networkNamespace": "ns-not-added-yet"}});
    c.create_container(sid, &settings(sid, s)).await.unwrap();
    c.start_container(sid).await.unwrap();
    let mut sandbox = common::start_process(&agent, sid, None, false)
        .await
        .unwrap();
    {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 3];
        sandbox
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut b)
            .await
            .unwrap();
    }
    // The bundle lives on the scratch: bound onto <scratch>/bundle.
    let root = agent.root();
    assert!(root
        .join(format!("run/scratch/{sid}/bundle/config.json"))
        .exists());
    assert!(root
        .join(format!("run/gcs/pods/v2pod/virtual-pods/{sid}/hostname"))
        .exists());

    let wid = "v2-workload";
    add(wid).await.unwrap();
    let mut w = common::trace_spec(&["sh", "-c", "cat /etc/hostname"]);
    w.as_object_mut().unwrap().remove("hostname");
    w["root"]["path"] = json!(format!("/run/gcs/pods/v2pod/{wid}/rootfs"));
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container",
                              "io.microsoft.cri.virtual-pod-id": sid});
    w["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"},
        {"type": "uts", "path": format!("/proc/{}/ns/uts", sandbox.pid)}]);
    c.create_container(wid, &settings(wid, w)).await.unwrap();
    c.start_container(wid).await.unwrap();
    let out = common::start_process(&agent, wid, None, false)
        .await
        .unwrap()
        .finish(&agent, wid)
        .await;
    assert_eq!(out.stdout, "vpodhost\n");
    c.next_notification(Duration::from_secs(20)).await.unwrap();
    remove(wid).await.unwrap();
    c.delete_container_state(wid).await.unwrap();
    assert!(!root.join(format!("run/gcs/pods/v2pod/{wid}")).exists());

    c.signal_process(sid, sandbox.pid, Some(9)).await.unwrap();
    sandbox.finish(&agent, sid).await;
    c.next_notification(Duration::from_secs(20)).await.unwrap();
    remove(sid).await.unwrap();
    c.delete_container_state(sid).await.unwrap();
    assert!(
        !root.join("run/gcs/pods/v2pod").exists(),
        "the pod directory outlived its sandbox"
    );
    assert!(c.failure().is_none());
}

/// Spec §7.4: when the host goes away, the init's stdout redials the same port (every 100 ms)
/// and, once reconnected, sends again the last 128 KiB it had written, then goes on; a Kill
/// ends the redialing.
#[tokio::test]
async fn init_stdout_reconnects_after_the_host_goes_away() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "c-redial";
    create(
        &agent,
        id,
        spec(
            id,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 300 ]; do echo tick$i; i=$((i+1)); sleep 0.05; done",
            ],
        ),
    )
    .await;
    let (pid, listener) =
        common::start_init_stdout_only(&agent.client, &agent.host(), id, 47_011).await;
    let (mut first, _) = listener.accept().await.unwrap();
    assert_eq!(read_line(&mut first).await, "tick0\n");
    assert_eq!(read_line(&mut first).await, "tick1\n");
    drop(first);
    let (mut second, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the init's stdout did not redial")
        .unwrap();
    // What was written before comes again, then the output goes on.
    assert_eq!(read_line(&mut second).await, "tick0\n");
    let mut last = String::new();
    while !last.starts_with("tick8") {
        last = read_line(&mut second).await;
    }
    agent.client.signal_process(id, pid, Some(9)).await.unwrap();
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        137
    );
    agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(agent.log().contains("reconnected"), "{}", agent.log());
    cleanup(&agent, id).await;
}

/// Spec §7.4 and §10.3 together, as a migrating host sees them: a container init prints a
/// numbered line every 100 ms for 3 s with its WaitForProcess outstanding; the host drops the
/// bridge and the init's stdout, then listens again on the same ports. The wait is answered on
/// the new bridge, the exit notification arrives, and every line arrives at least once.
#[tokio::test]
async fn a_migration_loses_neither_the_wait_nor_the_output() {
    let agent = Agent::sandboxed_over_vsock(&[]).await;
    let id = "c-migrate";
    create(
        &agent,
        id,
        spec(
            id,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 30 ]; do echo line$i; i=$((i+1)); sleep 0.1; done",
            ],
        ),
    )
    .await;
    let port = 47_021;
    let (pid, listener) =
        common::start_init_stdout_only(&agent.client, &agent.host(), id, port).await;
    let (mut first, _) = listener.accept().await.unwrap();
    let wait = agent.client.wait_for_process(id, pid, INFINITE_WAIT);
    let migrate = async {
        let mut seen = String::new();
        for _ in 0..3 {
            seen.push_str(&read_line(&mut first).await);
        }
        // The host goes away: the bridge and the init's stdout.
        agent.client.detach().await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bridge = tokio::time::timeout(Duration::from_secs(10), agent.host().accept_bridge())
            .await
            .expect("the agent did not redial its bridge")
            .unwrap();
        agent.client.resume(bridge).await.unwrap();
        let (second, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the init's stdout did not redial")
            .unwrap();
        seen.push_str(&read_all(Some(second)).await);
        seen
    };
    let (code, seen) = tokio::join!(wait, migrate);
    assert_eq!(code.unwrap(), 0);
    for i in 0..30 {
        assert!(
            seen.contains(&format!("line{i}\n")),
            "line{i} lost: {seen:?}"
        );
    }
    let n = agent
        .client
        .next_notification(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(n.container_id, id);
    assert!(agent.client.failure().is_none());
    cleanup(&agent, id).await;
}
