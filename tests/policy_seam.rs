//! The policy seam (issue 16): every enforcement point the guest reaches is asked with the
//! original's input before anything is done, and a refusal is an error response with the
//! original's wording around the enforcer's text. A recording stub enforcer stands in for the
//! policy; everything here is refused, so nothing touches the machine.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::modify;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use gcs::guest::Guest;
use gcs::host::BridgeClient;
use gcs::policy::{Decision, EnforcementPoint as P, Enforcer, PolicyError};
use gcs::protocol::messages::{ModifySettingRequest, ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::NULL_CONTAINER_ID;
use serde_json::{json, Value};

/// Records every question; refuses the points in `refused`, allows the rest.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<(P, Value)>>,
    refused: HashSet<P>,
}

impl Enforcer for Recorder {
    fn decide(&self, point: P, input: Value) -> Result<Decision, PolicyError> {
        self.seen.lock().unwrap().push((point, input));
        if self.refused.contains(&point) {
            return Err(PolicyError::Denied(format!(
                "stub refused {}",
                point.name()
            )));
        }
        Ok(Decision::allowed_with(&[(
            "allow_stdio_access",
            json!(true),
        )]))
    }
}

impl Recorder {
    fn refusing(points: &[P]) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::default(),
            refused: points.iter().copied().collect(),
        })
    }

    fn take(&self) -> Vec<(P, Value)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// An in-process agent (guest and bridge) asking `enforcer`, and a negotiated host client;
/// the guest's dials go to a fresh directory where nothing listens.
async fn agent(enforcer: Arc<Recorder>) -> (Arc<Guest>, BridgeClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (guest, bridge) = common::in_process_bridge(dir.path(), Some(enforcer));
    let (host_side, guest_side) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { bridge.serve(guest_side).await });
    let client = BridgeClient::new(host_side);
    client.negotiate().await.unwrap();
    (guest, client, dir)
}

/// Sends one request that must be refused; returns the error text.
async fn refused(client: &BridgeClient, request: ModifySettingRequest) -> String {
    let err = client
        .modify_settings(NULL_CONTAINER_ID, request)
        .await
        .unwrap_err();
    assert_eq!(
        err.hresult(),
        Some(gcs::protocol::Hresult::FAIL),
        "a refusal is a plain failure: {err}"
    );
    err.to_string()
}

#[tokio::test]
async fn storage_removals_are_asked_with_their_target_before_anything_is_checked() {
    let stub = Recorder::refusing(&[P::UnmountDevice, P::RwUnmountDevice, P::UnmountBlockdev]);
    let (guest, client, _dir) = agent(Arc::clone(&stub)).await;
    // None of these paths is mounted: the policy answers first, so a host learns nothing about
    // paths it may not touch.
    let cases = [
        (
            json!({"MountPath": "/run/mounts/scsi/m1", "Lun": 1, "ReadOnly": true}),
            P::UnmountDevice,
            "unmounting scsi device at /run/mounts/scsi/m1 denied by policy: stub refused unmount_device",
        ),
        (
            json!({"MountPath": "/run/gcs/c/abc", "Lun": 2}),
            P::RwUnmountDevice,
            "unmounting scsi device at /run/gcs/c/abc denied by policy: stub refused rw_unmount_device",
        ),
        (
            json!({"MountPath": "/run/mounts/scsi/b3", "Lun": 3, "BlockDev": true}),
            P::UnmountBlockdev,
            "removing blockdev symlink at /run/mounts/scsi/b3 denied by policy: stub refused unmount_blockdev",
        ),
    ];
    for (settings, point, text) in cases {
        let target = settings["MountPath"].clone();
        let err = refused(&client, modify("MappedVirtualDisk", "Remove", settings)).await;
        assert!(err.contains(text), "{err}");
        assert_eq!(stub.take(), vec![(point, json!({"unmountTarget": target}))]);
    }
    let err = refused(
        &client,
        modify(
            "VPMemDevice",
            "Remove",
            json!({"DeviceNumber": 0, "MountPath": "/run/layers/p0"}),
        ),
    )
    .await;
    assert!(
        err.contains("unmounting pmem device from /run/layers/p0 denied by policy: stub refused unmount_device"),
        "{err}"
    );
    assert_eq!(
        stub.take(),
        vec![(P::UnmountDevice, json!({"unmountTarget": "/run/layers/p0"}))]
    );
    assert!(guest.mounts().is_empty());
}

#[tokio::test]
async fn read_write_and_block_device_adds_are_asked_before_the_device_is_waited_for() {
    let stub = Recorder::refusing(&[P::RwMountDevice, P::MountBlockdev]);
    let (guest, client, _dir) = agent(Arc::clone(&stub)).await;
    // No such disk exists: an answer at once shows the policy came before the device wait.
    let started = std::time::Instant::now();
    let err = refused(
        &client,
        modify(
            "MappedVirtualDisk",
            "Add",
            json!({"MountPath": "/run/gcs/c/abc", "Controller": 0, "Lun": 5, "Encrypted": true,
                   "EnsureFilesystem": true, "Filesystem": "xfs"}),
        ),
    )
    .await;
    assert!(
        err.contains("mounting scsi device controller 0 lun 5 onto /run/gcs/c/abc denied by policy: stub refused rw_mount_device"),
        "{err}"
    );
    assert_eq!(
        stub.take(),
        vec![(
            P::RwMountDevice,
            json!({"target": "/run/gcs/c/abc", "encrypted": true, "ensureFilesystem": true,
                   "filesystem": "xfs", "mountPathRegex": "/run/gcs/c/[0-9a-fA-F]{64}"})
        )]
    );
    let err = refused(
        &client,
        modify(
            "MappedVirtualDisk",
            "Add",
            json!({"MountPath": "/run/mounts/scsi/b1", "Controller": 1, "Lun": 2, "BlockDev": true}),
        ),
    )
    .await;
    assert!(
        err.contains("creating blockdev symlink at /run/mounts/scsi/b1 (-> scsi controller 1 lun 2) denied by policy: stub refused mount_blockdev"),
        "{err}"
    );
    assert_eq!(
        stub.take(),
        vec![(P::MountBlockdev, json!({"target": "/run/mounts/scsi/b1"}))]
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(guest.mounts().is_empty());
}

#[tokio::test]
async fn combined_layers_ask_scratch_then_overlay_and_removal_asks_unmount_overlay() {
    let stub = Recorder::refusing(&[P::MountOverlay, P::UnmountOverlay]);
    let (guest, client, _dir) = agent(Arc::clone(&stub)).await;
    let err = refused(
        &client,
        modify(
            "CombinedLayers",
            "Add",
            json!({"ContainerID": "c1", "ContainerRootPath": "/run/gcs/c/c1/rootfs",
                   "Layers": [{"Path": "/run/mounts/scsi/m2"}, {"Path": "/run/mounts/scsi/m1"}],
                   "ScratchPath": "/run/gcs/c/c1/scratch/c1"}),
        ),
    )
    .await;
    assert!(
        err.contains("overlay creation denied by policy: stub refused mount_overlay"),
        "{err}"
    );
    assert_eq!(
        stub.take(),
        vec![
            (
                P::ScratchMount,
                json!({"target": "/run/gcs/c/c1/scratch/c1", "encrypted": false})
            ),
            (
                P::MountOverlay,
                json!({"containerID": "c1", "layerPaths": ["/run/mounts/scsi/m2", "/run/mounts/scsi/m1"],
                       "target": "/run/gcs/c/c1/rootfs"})
            ),
        ]
    );
    let err = refused(
        &client,
        modify(
            "CombinedLayers",
            "Remove",
            json!({"ContainerRootPath": "/run/gcs/c/c1/rootfs"}),
        ),
    )
    .await;
    assert!(
        err.contains("overlay removal denied by policy: stub refused unmount_overlay"),
        "{err}"
    );
    assert_eq!(
        stub.take(),
        vec![(
            P::UnmountOverlay,
            json!({"unmountTarget": "/run/gcs/c/c1/rootfs"})
        )]
    );
    assert!(guest.mounts().is_empty());
}

#[tokio::test]
async fn plan9_shares_are_asked_before_the_host_is_dialled() {
    let stub = Recorder::refusing(&[P::Plan9Mount, P::Plan9Unmount]);
    let (_guest, client, _dir) = agent(Arc::clone(&stub)).await;
    // No Plan9 server listens on port 564 here: a dial would fail with another error.
    let err = refused(
        &client,
        modify(
            "MappedDirectory",
            "Add",
            json!({"MountPath": "/run/gcs/c/c1/mounts/m0", "Port": 564, "ShareName": "1"}),
        ),
    )
    .await;
    assert!(
        err.contains("mounting plan9 device at /run/gcs/c/c1/mounts/m0 denied by policy: stub refused plan9_mount"),
        "{err}"
    );
    assert_eq!(
        stub.take(),
        vec![(
            P::Plan9Mount,
            json!({"rootPrefix": "/run/gcs/c", "mountPathPrefix": "/mounts/m[0-9]+",
                   "target": "/run/gcs/c/c1/mounts/m0"})
        )]
    );
    let err = refused(
        &client,
        modify(
            "MappedDirectory",
            "Remove",
            json!({"MountPath": "/run/gcs/c/c1/mounts/m0"}),
        ),
    )
    .await;
    assert!(err.contains("unmounting plan9 device at /run/gcs/c/c1/mounts/m0 denied by policy"));
    assert_eq!(
        stub.take(),
        vec![(
            P::Plan9Unmount,
            json!({"unmountTarget": "/run/gcs/c/c1/mounts/m0"})
        )]
    );
}

#[tokio::test]
async fn uvm_processes_properties_and_stacks_are_asked_first() {
    let stub = Recorder::refusing(&[P::ExecExternal, P::GetProperties, P::DumpStacks]);
    let (guest, client, _dir) = agent(Arc::clone(&stub)).await;
    let params = ProcessParameters {
        command_args: vec!["/bin/true".into(), "x".into()],
        working_directory: "/tmp".into(),
        environment: Some([("B".to_string(), "2".to_string()), ("A".into(), "1".into())].into()),
        ..Default::default()
    };
    let err = client
        .execute_process(
            NULL_CONTAINER_ID,
            &params,
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exec is denied due to policy: stub refused exec_external"),
        "{err}"
    );
    assert_eq!(
        stub.take(),
        vec![(
            P::ExecExternal,
            json!({"argList": ["/bin/true", "x"], "envList": ["A=1", "B=2"], "workingDir": "/tmp"})
        )]
    );
    assert_eq!(guest.uvm_process_count(), 0);

    // Asked before the container is looked up: the refusal, not "not found".
    let err = client
        .get_properties("no-such-container", &["ProcessList"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("get properties denied due to policy: stub refused get_properties"),
        "{err}"
    );
    let err = client.dump_stacks().await.unwrap_err().to_string();
    assert!(
        err.contains("dump stacks denied due to policy: stub refused dump_stacks"),
        "{err}"
    );
    assert_eq!(
        stub.take(),
        vec![(P::GetProperties, json!({})), (P::DumpStacks, json!({}))]
    );
}

#[tokio::test]
async fn an_allowed_uvm_process_without_stdio_access_never_dials_the_host() {
    // The open door allows stdio; this stub allows the process but not its stdio.
    #[derive(Debug)]
    struct NoStdio;
    impl Enforcer for NoStdio {
        fn decide(&self, _: P, _: Value) -> Result<Decision, PolicyError> {
            Ok(Decision::allowed_with(&[
                ("allow_stdio_access", json!(false)),
                ("env_list", json!(["KEEP=1"])),
            ]))
        }
    }
    let reaper = gcs::guest::Reaper::new();
    reaper.start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dialer = gcs::transport::Dialer::new(Some(dir.path().join("vm.vsock")));
    let (mut guest, _queue) = Guest::new(dialer, reaper, std::env::temp_dir());
    guest.set_initial_enforcer(Arc::new(NoStdio));
    // Ports that nothing listens on: dialling any would fail the request.
    let ports = VsockStdioRelaySettings {
        std_in: 40001,
        std_out: 40002,
        std_err: 40003,
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let params = ProcessParameters {
        command_args: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("env > {}; cat; echo gone", out.display()),
        ],
        environment: Some(
            [
                ("KEEP".to_string(), "1".to_string()),
                ("DROP".into(), "2".into()),
            ]
            .into(),
        ),
        create_std_in_pipe: true,
        create_std_out_pipe: true,
        create_std_err_pipe: true,
        ..Default::default()
    };
    let pid = guest.exec_external(&params, ports).await.unwrap();
    // Its stdin ended at once (cat returns), its output went nowhere, and it exited cleanly.
    let code = guest.wait_external(pid, 10_000).await.unwrap();
    assert_eq!(code, 0);
    let env = std::fs::read_to_string(&out).unwrap();
    assert!(env.contains("KEEP=1"), "{env}");
    assert!(
        !env.contains("DROP=2"),
        "the policy's env_list filters: {env}"
    );
}
