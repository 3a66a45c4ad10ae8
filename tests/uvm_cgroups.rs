//! The UVM's cgroups against the real agent in the sandbox (cgroup v1 on this machine): `/gcs`
//! holds the agent, `/pods` is limited to total memory less the reserve and is recomputed by
//! PodCgroupMemoryLimit, and ContainerConstraints changes a running container's limits.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::path::PathBuf;

use common::Agent;
use gcs::protocol::messages::{ModifySettingRequest, ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::{INFINITE_WAIT, NULL_CONTAINER_ID};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

fn total_memory() -> u64 {
    gcs::cgroups::total_memory(&std::fs::read_to_string("/proc/meminfo").unwrap()).unwrap()
}

/// `<sandbox cgroup>/<rel>` in the memory (or another) hierarchy.
fn dir(agent: &Agent, controller: &str, rel: &str) -> PathBuf {
    agent
        .sandbox
        .as_ref()
        .unwrap()
        .cgroup_dirs(rel)
        .into_iter()
        .find(|d| d.to_string_lossy().contains(&format!("/{controller}/")))
        .unwrap_or_else(|| panic!("no {controller} cgroup {rel}"))
}

fn read_u64(path: PathBuf) -> u64 {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

async fn modify(
    agent: &Agent,
    cid: &str,
    resource: &str,
    settings: Option<Value>,
) -> Result<(), String> {
    agent
        .client
        .modify_settings(
            cid,
            ModifySettingRequest {
                resource_type: resource.into(),
                request_type: "Update".into(),
                settings,
            },
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn gcs_and_pods_cgroups_pod_limit_and_container_constraints() {
    let reserve = total_memory() - 16 * MIB;
    let agent = Agent::sandboxed(&["-root-mem-reserve-bytes", &reserve.to_string()]).await;

    // Start-up: the agent lives in /gcs; /pods is limited to total memory less the reserve.
    let procs = std::fs::read_to_string(dir(&agent, "memory", "gcs").join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|p| p == agent.agent_pid().to_string()),
        "agent {} not in /gcs: {procs}",
        agent.agent_pid()
    );
    let pods_limit = dir(&agent, "memory", "pods").join("memory.limit_in_bytes");
    assert_eq!(read_u64(pods_limit.clone()), 16 * MIB);

    // PodCgroupMemoryLimit recomputes it (as after memory hot-add).
    std::fs::write(&pods_limit, (64 * MIB).to_string()).unwrap();
    modify(&agent, NULL_CONTAINER_ID, "PodCgroupMemoryLimit", None)
        .await
        .unwrap();
    assert_eq!(read_u64(pods_limit.clone()), 16 * MIB);

    // A running container's limits go up and down; bad values are refused and change nothing.
    let id = "constrained";
    common::add_rootfs(&agent.client, id, common::busybox_layer(&agent)).await;
    let mut spec = common::trace_spec(&["sleep", "1000"]);
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    agent
        .client
        .create_container(id, &common::container_settings(id, spec))
        .await
        .unwrap();
    agent.client.start_container(id).await.unwrap();
    let init = agent
        .client
        .execute_process(
            id,
            &ProcessParameters::default(),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap();
    let limit = dir(&agent, "memory", &format!("pods/{id}")).join("memory.limit_in_bytes");
    let shares = dir(&agent, "cpu", &format!("pods/{id}")).join("cpu.shares");
    for (mem, cpu) in [(8 * MIB, 512), (12 * MIB, 256)] {
        modify(
            &agent,
            id,
            "ContainerConstraints",
            Some(
                json!({"Windows": {}, "Linux": {"memory": {"limit": mem}, "cpu": {"shares": cpu}}}),
            ),
        )
        .await
        .unwrap();
        assert_eq!(read_u64(limit.clone()), mem);
        assert_eq!(read_u64(shares.clone()), cpu);
    }
    for bad in [
        json!({"memory": {"limit": -7}}),
        json!({"memory": {"limit": 1024}}),
        json!({"cpu": {"shares": 1}}),
    ] {
        let err = modify(
            &agent,
            id,
            "ContainerConstraints",
            Some(json!({"Windows": {}, "Linux": bad})),
        )
        .await
        .unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        assert_eq!(read_u64(limit.clone()), 12 * MIB, "old limit kept");
    }
    let err = modify(
        &agent,
        "no-such-container",
        "ContainerConstraints",
        Some(json!({"Windows": {}, "Linux": {}})),
    )
    .await
    .unwrap_err();
    assert!(err.contains("0xc037010e"), "{err}");

    // A pod limit below what the pods use now is refused; the old limit stays.
    std::fs::write(&pods_limit, (64 * MIB).to_string()).unwrap();
    modify(
        &agent,
        id,
        "ContainerConstraints",
        Some(json!({"Linux": {"memory": {"limit": -1}}})),
    )
    .await
    .unwrap();
    let mut fill = ProcessParameters {
        oci_process: Some(
            json!({"args": ["sh", "-c", "head -c 24m /dev/zero > /dev/shm/fill"],
            "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}),
        ),
        ..ProcessParameters::default()
    };
    fill.create_std_out_pipe = false;
    let pid = agent
        .client
        .execute_process(id, &fill, VsockStdioRelaySettings::default())
        .await
        .unwrap();
    assert_eq!(
        agent
            .client
            .wait_for_process(id, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    let err = modify(&agent, NULL_CONTAINER_ID, "PodCgroupMemoryLimit", None)
        .await
        .unwrap_err();
    assert!(err.contains("below its current usage"), "{err}");
    assert_eq!(read_u64(pods_limit.clone()), 64 * MIB);

    agent.client.shutdown_forced(id).await.unwrap();
    agent
        .client
        .wait_for_process(id, init, INFINITE_WAIT)
        .await
        .unwrap();
    common::remove_rootfs(&agent.client, id).await;
    agent.client.delete_container_state(id).await.unwrap();
}

/// A container that allocates past its 16 MiB limit is OOM-killed; the agent logs the event
/// with the container's id, and its Statistics count the kill.
#[tokio::test]
async fn oom_kills_are_logged_and_counted() {
    let agent = Agent::sandboxed(&[]).await;
    let id = "oom-victim";
    common::add_rootfs(&agent.client, id, common::busybox_layer(&agent)).await;
    // dd's 48 MiB buffer does not fit in 16 MiB; a sleep keeps the container for the query.
    let mut spec = common::trace_spec(&[
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=48M count=1; sleep 1000",
    ]);
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    spec["linux"]["resources"]["memory"] = json!({"limit": 16 * MIB, "swap": 16 * MIB});
    agent
        .client
        .create_container(id, &common::container_settings(id, spec))
        .await
        .unwrap();
    agent.client.start_container(id).await.unwrap();
    let init = agent
        .client
        .execute_process(
            id,
            &ProcessParameters::default(),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let line = loop {
        let log = agent.log();
        if let Some(l) = log.lines().find(|l| l.contains("OOM") && l.contains(id)) {
            break l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no OOM line in:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        line.contains("oom_kill=1") || line.contains("\"oom_kill\":1"),
        "{line}"
    );
    let props = agent
        .client
        .get_properties(id, &["Statistics"])
        .await
        .unwrap();
    let m = props.lcow_metrics.unwrap();
    assert!(
        m["memory_oom_control"]["oom_kill"].as_u64().unwrap() >= 1,
        "{m}"
    );
    agent.client.shutdown_forced(id).await.unwrap();
    agent
        .client
        .wait_for_process(id, init, INFINITE_WAIT)
        .await
        .unwrap();
    common::remove_rootfs(&agent.client, id).await;
    agent.client.delete_container_state(id).await.unwrap();
}

/// `/gcs` above `-gcs-mem-limit-bytes` is a logged warning (not a limit: the agent serves on).
#[tokio::test]
async fn the_agent_warns_when_its_cgroup_passes_the_threshold() {
    let agent = Agent::sandboxed(&["-gcs-mem-limit-bytes", "4096"]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = agent.log();
        if log.contains("uses more memory than -gcs-mem-limit-bytes")
            && log.contains("threshold=4096")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning in:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(agent.client.dump_stacks().await.is_ok());
}

/// A pod's cgroup `/pods/<sandbox>` carries the sandbox spec's `linux.resources`, so that all
/// of the pod's containers share its limits; its devices stay the containers' own business.
#[tokio::test]
async fn pod_cgroup_carries_the_sandbox_resources() {
    let agent = Agent::sandboxed(&[]).await;
    let sid = "limited-pod";
    let mut s = common::trace_spec(&["sh", "-c", "echo up; exec sleep 1000"]);
    s["root"]["path"] = json!(format!("/run/gcs/c/{sid}/rootfs"));
    s["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox",
                              "io.microsoft.cri.skip-pod-networking": "true"});
    s["linux"]["resources"] =
        json!({"memory": {"limit": 48 * MIB}, "pids": {"limit": 77}, "cpu": {"shares": 300}});
    common::create_container(&agent, sid, common::busybox_layer(&agent), s)
        .await
        .unwrap();
    let pod = format!("pods/{sid}");
    assert_eq!(
        read_u64(dir(&agent, "memory", &pod).join("memory.limit_in_bytes")),
        48 * MIB
    );
    assert_eq!(read_u64(dir(&agent, "pids", &pod).join("pids.max")), 77);
    assert_eq!(read_u64(dir(&agent, "cpu", &pod).join("cpu.shares")), 300);
    // The pod's device rules allow all; the sandbox's own cgroup below it is restricted.
    let devices =
        std::fs::read_to_string(dir(&agent, "devices", &pod).join("devices.list")).unwrap();
    assert_eq!(devices.trim(), "a *:* rwm");
    let own = std::fs::read_to_string(
        dir(&agent, "devices", &format!("{pod}/{sid}")).join("devices.list"),
    )
    .unwrap();
    assert!(
        !own.contains("a *:* rwm") && own.contains("c 1:3 rwm"),
        "{own}"
    );
    let init = common::start_process(&agent, sid, None, false)
        .await
        .unwrap();
    common::kill_and_destroy(&agent, sid, init).await;
    assert!(agent.client.failure().is_none());
}
