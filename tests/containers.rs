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

use common::{read_all, Agent, HostStdio};
use gcs::protocol::messages::*;
use gcs::protocol::{Hresult, INFINITE_WAIT, NULL_CONTAINER_ID};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Makes a busybox layer inside the agent's private /run, at /run/layers/p0.
fn busybox_layer(agent: &Agent) -> &'static str {
    let layer = agent.root().join("run/layers/p0");
    if layer.join("bin/busybox").exists() {
        return "/run/layers/p0";
    }
    assert!(
        Path::new("/bin/busybox").exists(),
        "install busybox-static (make test does)"
    );
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet));
    }
    std::fs::write(
        layer.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(layer.join("etc/group"), "root:x:0:\n").unwrap();
    "/run/layers/p0"
}

/// The real host's spec from trace 09, with other arguments.
fn spec(id: &str, args: &[&str]) -> Value {
    let text =
        std::fs::read_to_string(common::traces_dir().join("09-container-lifecycle.jsonl")).unwrap();
    for line in text.lines() {
        let frame: Value = serde_json::from_str(line).unwrap();
        if frame["type"] == "0x10100101" {
            let config: Value =
                serde_json::from_str(frame["body"]["ContainerConfig"].as_str().unwrap()).unwrap();
            let mut spec = config["OciSpecification"].clone();
            spec["process"]["args"] = json!(args);
            spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
            return spec;
        }
    }
    panic!("no Create in trace 09");
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
    let layer = busybox_layer(agent);
    let request = ModifySettingRequest {
        resource_type: "CombinedLayers".into(),
        request_type: "Add".into(),
        settings: Some(
            json!({"ContainerID": id, "ContainerRootPath": format!("/run/gcs/c/{id}/rootfs"),
            "Layers": [{"Path": layer}], "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")}),
        ),
    };
    agent
        .client
        .modify_settings(NULL_CONTAINER_ID, request)
        .await
        .unwrap();
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
    assert!(
        !mountinfo.contains(id),
        "mount of {id} left behind:\n{mountinfo}"
    );
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
