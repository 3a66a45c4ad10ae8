//! Storage resources against the real agent on this machine, as root, in the sandbox: loop
//! devices stand in for the guest's `/dev/pmem<N>` (the sandbox gives the agent a private
//! /dev holding them), so ext4 layers are really mounted, overlaid, counted and removed.
//! Device-mapper, verity and hot-plug need the guest kernel: tests/qemu.rs covers them.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use common::modify;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Agent, Loop};
use gcs::protocol::messages::{ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::{INFINITE_WAIT, NULL_CONTAINER_ID};
use serde_json::{json, Value};

async fn call(agent: &Agent, resource: &str, request: &str, settings: Value) -> Result<(), String> {
    agent
        .client
        .modify_settings(NULL_CONTAINER_ID, modify(resource, request, settings))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn mountinfo(agent: &Agent) -> String {
    std::fs::read_to_string(format!("/proc/{}/mountinfo", agent.agent_pid())).unwrap()
}

fn layers(work: &Path) -> (PathBuf, PathBuf) {
    let base = work.join("base.ext4");
    let tree = gcs::host::layers::busybox_tree(work).unwrap();
    gcs::host::layers::ext4_image(&base, Some(&tree), "16M").unwrap();
    let top_tree = work.join("top");
    std::fs::create_dir_all(top_tree.join("etc")).unwrap();
    std::fs::write(top_tree.join("etc/layer.txt"), "from the top layer\n").unwrap();
    let top = work.join("top.ext4");
    gcs::host::layers::ext4_image(&top, Some(&top_tree), "4M").unwrap();
    (base, top)
}

#[tokio::test]
async fn vpmem_layers_are_counted_overlaid_and_protected_while_used() {
    let work = tempfile::tempdir().unwrap();
    let (base, top) = layers(work.path());
    let (l0, l1) = (Loop::attach(&base, true), Loop::attach(&top, true));
    let agent =
        Agent::sandboxed_with_devices(&[], &format!("{} {}", l0.node("pmem0"), l1.node("pmem1")))
            .await;
    // DeviceNumber 0 is omitted, as Go's omitempty does.
    call(
        &agent,
        "VPMemDevice",
        "Add",
        json!({"MountPath": "/run/layers/p0"}),
    )
    .await
    .unwrap();
    call(
        &agent,
        "VPMemDevice",
        "Add",
        json!({"DeviceNumber": 1, "MountPath": "/run/layers/p1"}),
    )
    .await
    .unwrap();
    // The same layer again is counted, not mounted twice; another device there is refused.
    call(
        &agent,
        "VPMemDevice",
        "Add",
        json!({"MountPath": "/run/layers/p0"}),
    )
    .await
    .unwrap();
    let err = call(
        &agent,
        "VPMemDevice",
        "Add",
        json!({"DeviceNumber": 1, "MountPath": "/run/layers/p0"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("already mounted from a different"), "{err}");
    let err = call(
        &agent,
        "VPMemDevice",
        "Add",
        json!({"MountPath": "/run/layers"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("would cover"), "{err}");
    assert_eq!(
        mountinfo(&agent).matches(" /run/layers/p0 ").count(),
        1,
        "mounted once"
    );

    // A container on the overlay of both.
    let id = "st-ctr";
    let root = format!("/run/gcs/c/{id}/rootfs");
    call(
        &agent,
        "CombinedLayers",
        "Add",
        json!({"ContainerID": id, "ContainerRootPath": root,
        "Layers": [{"Path": "/run/layers/p1"}, {"Path": "/run/layers/p0"}],
        "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")}),
    )
    .await
    .unwrap();
    let rootfs = agent.root().join(root.trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/layer.txt")).unwrap(),
        "from the top layer\n"
    );
    assert!(rootfs.join("bin/busybox").exists());
    let mut spec = common::trace_spec(&["sleep", "1000"]);
    spec["root"]["path"] = json!(root);
    // The top layer is also bind-mounted into the container, as a host does with a volume.
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/mnt/p1",
        "type": "bind", "source": "/run/layers/p1", "options": ["rbind", "ro"]}));
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

    // While it runs: neither its rootfs nor the layer bind-mounted into it can be removed.
    let err = call(
        &agent,
        "CombinedLayers",
        "Remove",
        json!({"ContainerRootPath": root}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("still used by the running container"), "{err}");
    let err = call(
        &agent,
        "VPMemDevice",
        "Remove",
        json!({"DeviceNumber": 1, "MountPath": "/run/layers/p1"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("still used by the running container"), "{err}");
    assert!(
        rootfs.join("etc/layer.txt").exists(),
        "nothing was unmounted"
    );

    agent.client.shutdown_forced(id).await.unwrap();
    assert_eq!(
        agent
            .client
            .wait_for_process(id, init, INFINITE_WAIT)
            .await
            .unwrap(),
        137
    );
    // Exited, but its rootfs overlay still reads through the layer.
    let err = call(
        &agent,
        "VPMemDevice",
        "Remove",
        json!({"DeviceNumber": 1, "MountPath": "/run/layers/p1"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("still used by the container rootfs"), "{err}");
    call(
        &agent,
        "CombinedLayers",
        "Remove",
        json!({"ContainerRootPath": root}),
    )
    .await
    .unwrap();
    agent.client.delete_container_state(id).await.unwrap();
    call(
        &agent,
        "VPMemDevice",
        "Remove",
        json!({"DeviceNumber": 1, "MountPath": "/run/layers/p1"}),
    )
    .await
    .unwrap();
    // p0 was added twice: the first Remove counts down, the second unmounts.
    call(
        &agent,
        "VPMemDevice",
        "Remove",
        json!({"MountPath": "/run/layers/p0"}),
    )
    .await
    .unwrap();
    assert!(mountinfo(&agent).contains(" /run/layers/p0 "));
    call(
        &agent,
        "VPMemDevice",
        "Remove",
        json!({"MountPath": "/run/layers/p0"}),
    )
    .await
    .unwrap();
    let err = call(
        &agent,
        "VPMemDevice",
        "Remove",
        json!({"MountPath": "/run/layers/p0"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("no VPMemDevice was added"), "{err}");
    let info = mountinfo(&agent);
    assert!(
        !info.contains("/run/layers") && !info.contains(id),
        "{info}"
    );
    assert!(!agent.root().join("run/layers/p0").exists());
    assert!(!agent.root().join("run/layers/p1").exists());
}

#[tokio::test]
async fn bad_storage_requests_get_errors_and_leave_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let blank = work.path().join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let l0 = Loop::attach(&blank, true);
    let agent = Agent::sandboxed_with_devices(&[], &l0.node("pmem0")).await;
    let layers = agent.root().join("run/layers");
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        // No filesystem on the device: the mount fails, the directory goes.
        (
            "VPMemDevice",
            "Add",
            json!({"MountPath": "/run/layers/p0"}),
            "mount VPMem layer on",
        ),
        (
            "VPMemDevice",
            "Add",
            json!({"MountPath": "/run/../etc/p0"}),
            "must be absolute, normalised and below /run",
        ),
        (
            "VPMemDevice",
            "Add",
            json!({"MountPath": "/etc/p0"}),
            "below /run",
        ),
        (
            "VPMemDevice",
            "Add",
            json!({"MountPath": "/run"}),
            "below /run",
        ),
        (
            "CombinedLayers",
            "Add",
            json!({"ContainerID": "x", "ContainerRootPath": "/run/gcs/c/x/rootfs",
                   "Layers": [{"Path": "/run/layers/p0"}], "ScratchPath": "/run/s,lowerdir=/:/run/z"}),
            "contains ',', ':' or",
        ),
        (
            "CombinedLayers",
            "Add",
            json!({"ContainerID": "x", "ContainerRootPath": "/run/gcs/rootfs",
                   "Layers": [{"Path": "/run/layers/p0"}], "ScratchPath": "/run/scratch/x"}),
            "too close to /run",
        ),
        (
            "VPMemDevice",
            "Add",
            json!({"MountPath": "/run/layers/p1", "MappingInfo": {"DeviceOffsetInBytes": 4096, "DeviceSizeInBytes": 8388608}}),
            "beyond the end",
        ),
        (
            "VPMemDevice",
            "Add",
            json!({"MountPath": "/run/layers/p2", "MappingInfo": {"DeviceOffsetInBytes": 100, "DeviceSizeInBytes": 4096}}),
            "whole 512-byte sectors",
        ),
        (
            "VPMemDevice",
            "Add",
            json!({"MountPath": "/run/layers/p3", "VerityInfo": {"Ext4SizeInBytes": 4096, "BlockSize": 3000, "RootDigest": "ab"}}),
            "VerityInfo: BlockSize",
        ),
        (
            "VPMemDevice",
            "Add",
            json!({"MountPath": "/run/layers/p4", "VerityInfo": {"Ext4SizeInBytes": 4096, "BlockSize": 4096, "RootDigest": "not hex"}}),
            "RootDigest must be hexadecimal",
        ),
        (
            "VPMemDevice",
            "Remove",
            json!({"MountPath": "/run/layers/p0"}),
            "no VPMemDevice was added",
        ),
        (
            "CombinedLayers",
            "Remove",
            json!({"ContainerRootPath": "/run/gcs/c/none/rootfs"}),
            "no CombinedLayers was added",
        ),
        (
            "MappedVirtualDisk",
            "Add",
            json!({"MountPath": "/run/mounts/scsi/m0", "Controller": 4, "Lun": 1}),
            "controller 4 does not exist",
        ),
        (
            "MappedVirtualDisk",
            "Remove",
            json!({"MountPath": "/run/mounts/scsi/m0", "Lun": 1}),
            "no MappedVirtualDisk was added",
        ),
        (
            "MappedVirtualDisk",
            "Add",
            json!({"MountPath": "/run/mounts/scsi/m0", "Encrypted": true, "ReadOnly": true}),
            "an encrypted disk is a fresh read-write ext4 scratch",
        ),
        (
            "MappedDirectory",
            "Add",
            json!({"MountPath": "/run/mounts/m0", "Port": 564, "ShareName": "0,access=any"}),
            "contains ','",
        ),
        (
            "VPCIDevice",
            "Add",
            json!({"VMBusGUID": "../../etc"}),
            "is not a GUID",
        ),
    ];
    for (resource, request, settings, want) in cases {
        let err = call(&agent, resource, request, settings.clone())
            .await
            .expect_err(&format!("{resource} {request} {settings} succeeded"));
        assert!(err.contains(want), "{resource} {settings}: {err}");
    }
    // A VPMem device that never appears: a clear error once the bounded wait is over.
    let start = Instant::now();
    let err = call(
        &agent,
        "VPMemDevice",
        "Add",
        json!({"DeviceNumber": 5, "MountPath": "/run/layers/p5"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("/dev/pmem5 did not appear within"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(15));
    // Nothing half-made: no layer directory, no mount, and the agent still serves.
    let left: Vec<_> = std::fs::read_dir(&layers)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!mountinfo(&agent).contains("/run/layers"));
    assert!(agent.client.dump_stacks().await.is_ok());
}
