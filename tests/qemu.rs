//! End to end in a real VM: the agent boots as PID 1 of a QEMU utility VM (TCG, vsock served by
//! vhost-device-vsock on Unix sockets) from `out/test-initrd.img` and Debian's cloud kernel
//! (`make test-image` builds both; `make test` does that first), and a host drives it.
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

use common::join_all;
use gcs::host::{StdioPorts, Uvm, UvmConfig};
use gcs::protocol::messages::{ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::{Hresult, INFINITE_WAIT, NULL_CONTAINER_ID};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> UvmConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (kernel, initrd) = (
        root.join("out/kernel/vmlinux"),
        root.join("out/test-initrd.img"),
    );
    assert!(
        kernel.exists() && initrd.exists(),
        "run `make test-image` first (make test does)"
    );
    UvmConfig::new(kernel, initrd)
}

fn params(args: &[&str]) -> ProcessParameters {
    ProcessParameters {
        command_args: args.iter().map(|s| s.to_string()).collect(),
        working_directory: "/".into(),
        environment: Some(
            [(
                "PATH".to_string(),
                "/sbin:/usr/sbin:/bin:/usr/bin".to_string(),
            )]
            .into(),
        ),
        ..ProcessParameters::default()
    }
}

/// Runs `args` in the UVM with stdout (and stdin when `input` is given); returns (stdout, code).
async fn run(
    uvm: &Uvm,
    ports: &StdioPorts,
    args: &[&str],
    input: Option<&[u8]>,
    tty: bool,
) -> (String, u32) {
    let mut p = params(args);
    p.emulate_console = tty;
    p.create_std_out_pipe = true;
    let out_port = ports.allocate();
    let out_l = uvm.vsock().listen(out_port).unwrap();
    let mut relay = VsockStdioRelaySettings {
        std_out: out_port,
        ..Default::default()
    };
    let in_l = input.map(|_| {
        p.create_std_in_pipe = true;
        relay.std_in = ports.allocate();
        uvm.vsock().listen(relay.std_in).unwrap()
    });
    let input = input.map(<[u8]>::to_vec);
    let feeder = tokio::spawn(async move {
        if let (Some(l), Some(data)) = (in_l, input) {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(&data).await.unwrap();
            // vhost-device-vsock turns a host half-close into a full close: wait for output instead.
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut sink)).await;
        }
    });
    let reader = tokio::spawn(async move {
        let (mut s, _) = out_l.accept().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    });
    let pid = uvm
        .client
        .execute_process(NULL_CONTAINER_ID, &p, relay)
        .await
        .unwrap();
    let code = uvm
        .client
        .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
        .await
        .unwrap();
    let out = reader.await.unwrap();
    feeder.abort();
    (out, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_serve_and_shut_down_a_real_vm() {
    let mut uvm = Uvm::boot(&config()).await.unwrap();
    let t = uvm.timings.clone();
    eprintln!(
        "boot: first log line {:?}, bridge {:?}, negotiated {:?}",
        t.first_log_line, t.bridge_connected, t.negotiated
    );
    let ports = StdioPorts::default();

    // Processes in the UVM: output, exit code, environment of PID 1's making.
    let (out, code) = run(
        &uvm,
        &ports,
        &["sh", "-c", "echo hello from the utility VM; exit 3"],
        None,
        false,
    )
    .await;
    assert_eq!((out.as_str(), code), ("hello from the utility VM\n", 3));
    // init mounted what the spec lists, with cgroup v2, and fed the host's entropy.
    let (out, _) = run(&uvm, &ports, &["sh", "-c", "grep -E ' (/proc|/run|/tmp|/dev/pts|/sys|/sys/fs/cgroup) ' /proc/mounts | cut -d' ' -f2,3 | sort; cat /sys/fs/cgroup/cgroup.subtree_control"], None, false).await;
    for want in [
        "/proc proc",
        "/run tmpfs",
        "/tmp tmpfs",
        "/dev/pts devpts",
        "/sys sysfs",
        "/sys/fs/cgroup cgroup2",
    ] {
        assert!(out.lines().any(|l| l == want), "{want} missing:\n{out}");
    }
    assert!(
        out.contains("memory") && out.contains("pids"),
        "controllers enabled: {out}"
    );
    assert!(
        uvm.console().contains("added 512 bytes of boot entropy"),
        "{}",
        uvm.console()
    );
    // stdin and a tty.
    let (out, code) = run(
        &uvm,
        &ports,
        &["sh", "-c", "read line; echo got=$line"],
        Some(b"abc\n"),
        false,
    )
    .await;
    assert_eq!((out.as_str(), code), ("got=abc\n", 0));
    let (out, code) = run(&uvm, &ports, &["sh", "-c", "tty; exit 4"], None, true).await;
    assert!(out.starts_with("/dev/pts/"), "{out}");
    assert_eq!(code, 4);
    // Concurrency and a wait timeout.
    let runs = (0..5).map(|i| {
        let (uvm, ports) = (&uvm, &ports);
        async move {
            run(
                uvm,
                ports,
                &["sh", "-c", &format!("echo {i}; exit {i}")],
                None,
                false,
            )
            .await
        }
    });
    for (i, (out, code)) in join_all(runs).await.into_iter().enumerate() {
        assert_eq!((out, code), (format!("{i}\n"), i as u32));
    }
    let pid = uvm
        .client
        .execute_process(
            NULL_CONTAINER_ID,
            &params(&["sleep", "5"]),
            Default::default(),
        )
        .await
        .unwrap();
    let err = uvm
        .client
        .wait_for_process(NULL_CONTAINER_ID, pid, 50)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::TIMEOUT));

    // The log stream on port 109 carries logrus JSON.
    let mut lines = Vec::new();
    while let Ok(line) = uvm.log.try_recv() {
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.contains("\"msg\":\"GCS started\"")),
        "{lines:?}"
    );
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }

    // ShutdownForced of the UVM powers it off: QEMU exits cleanly.
    let status = uvm.shutdown().await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// An ext4 image of `tree`, as a host would attach a layer or scratch VHD.
fn ext4_image(dir: &Path, name: &str, tree: Option<&Path>, size: &str) -> std::path::PathBuf {
    let image = dir.join(name);
    gcs::host::layers::ext4_image(&image, tree, size).unwrap();
    image
}

fn busybox_tree(dir: &Path) -> std::path::PathBuf {
    gcs::host::layers::busybox_tree(dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_from_scsi_layers_and_a_scratch_disk() {
    use gcs::protocol::messages::{
        ContainerSettings, ModifySettingRequest, NotificationType, SchemaVersion,
    };
    use serde_json::json;
    let work = tempfile::tempdir().unwrap();
    let base = ext4_image(
        work.path(),
        "base.ext4",
        Some(&busybox_tree(work.path())),
        "16M",
    );
    let top_tree = work.path().join("top");
    std::fs::create_dir_all(top_tree.join("etc")).unwrap();
    std::fs::write(top_tree.join("etc/layer.txt"), "from the top layer\n").unwrap();
    let top = ext4_image(work.path(), "top.ext4", Some(&top_tree), "4M");
    let scratch = ext4_image(work.path(), "scratch.ext4", None, "16M");

    let uvm = Uvm::boot(&config()).await.unwrap();
    let c = &uvm.client;
    let mut qmp = gcs::host::qmp::Qmp::connect(&uvm.qmp_socket())
        .await
        .unwrap();
    let modify =
        |resource: &str, request: &str, settings: serde_json::Value| ModifySettingRequest {
            resource_type: resource.into(),
            request_type: request.into(),
            settings: Some(settings),
        };
    // Two read-only layers and a read-write scratch mounted at the bundle, as the V1 shim does.
    let id = "qemu-ctr";
    for (lun, image, mount, ro) in [
        (1u8, &base, "/run/mounts/scsi/m0", true),
        (2, &top, "/run/mounts/scsi/m1", true),
        (3, &scratch, "/run/gcs/c/qemu-ctr", false),
    ] {
        qmp.add_scsi_disk(image, lun, ro).await.unwrap();
        let mut settings = json!({"MountPath": mount, "Lun": lun});
        if ro {
            settings["ReadOnly"] = json!(true);
            settings["Options"] = json!(["ro"]);
        }
        c.modify_settings(
            NULL_CONTAINER_ID,
            modify("MappedVirtualDisk", "Add", settings),
        )
        .await
        .unwrap();
    }
    let root = format!("/run/gcs/c/{id}/rootfs");
    c.modify_settings(NULL_CONTAINER_ID, modify("CombinedLayers", "Add", json!({"ContainerID": id, "ContainerRootPath": root,
        "Layers": [{"Path": "/run/mounts/scsi/m1"}, {"Path": "/run/mounts/scsi/m0"}], "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")})))
        .await
        .unwrap();
    let args: Vec<String> = [
        "sh",
        "-c",
        "cat /etc/layer.txt; echo to-stderr >&2; echo ready; while true; do sleep 1; done",
    ]
    .map(String::from)
    .to_vec();
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(gcs::host::spec::container_spec(&args, &root, false)),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    };
    c.create_container(id, &settings).await.unwrap();
    c.start_container(id).await.unwrap();
    let ports = StdioPorts::default();
    let (out_port, err_port) = (ports.allocate(), ports.allocate());
    let (out_l, err_l) = (
        uvm.vsock().listen(out_port).unwrap(),
        uvm.vsock().listen(err_port).unwrap(),
    );
    let params = ProcessParameters {
        create_std_out_pipe: true,
        create_std_err_pipe: true,
        ..Default::default()
    };
    let init = c
        .execute_process(
            id,
            &params,
            VsockStdioRelaySettings {
                std_out: out_port,
                std_err: err_port,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (mut out, _) = out_l.accept().await.unwrap();
    let (mut err, _) = err_l.accept().await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("ready\n") {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(30), out.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&b[..n]);
    }
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "from the top layer\nready\n"
    );
    let mut e = [0u8; 10];
    err.read_exact(&mut e).await.unwrap();
    assert_eq!(&e, b"to-stderr\n");

    // Exec into it; the scratch disk takes writes.
    let mut exec = gcs::host::spec::container_spec(
        &[
            "sh".into(),
            "-c".into(),
            "echo written > /data.txt; cat /data.txt; exit 6".into(),
        ],
        &root,
        false,
    )["process"]
        .clone();
    exec["terminal"] = json!(false);
    let exec_port = ports.allocate();
    let exec_l = uvm.vsock().listen(exec_port).unwrap();
    let params = ProcessParameters {
        create_std_out_pipe: true,
        oci_process: Some(exec),
        ..Default::default()
    };
    let pid = c
        .execute_process(
            id,
            &params,
            VsockStdioRelaySettings {
                std_out: exec_port,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (mut s, _) = exec_l.accept().await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text, "written\n");
    assert_eq!(c.wait_for_process(id, pid, INFINITE_WAIT).await.unwrap(), 6);

    // ShutdownForced of the container: 137, ForcedExit.
    c.shutdown_forced(id).await.unwrap();
    assert_eq!(
        c.wait_for_process(id, init, INFINITE_WAIT).await.unwrap(),
        137
    );
    let n = c.next_notification(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (n.container_id.as_str(), n.notification_type),
        (id, NotificationType::ForcedExit)
    );

    // Teardown in the host's order, with the guest-side unplug before QMP removes each disk.
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "CombinedLayers",
            "Remove",
            json!({"ContainerRootPath": root}),
        ),
    )
    .await
    .unwrap();
    c.delete_container_state(id).await.unwrap();
    for (lun, mount) in [
        (3u8, "/run/gcs/c/qemu-ctr"),
        (2, "/run/mounts/scsi/m1"),
        (1, "/run/mounts/scsi/m0"),
    ] {
        c.modify_settings(
            NULL_CONTAINER_ID,
            modify(
                "MappedVirtualDisk",
                "Remove",
                json!({"MountPath": mount, "Lun": lun}),
            ),
        )
        .await
        .unwrap();
        c.modify_settings(
            NULL_CONTAINER_ID,
            modify("SCSIDevice", "Remove", json!({"Lun": lun})),
        )
        .await
        .unwrap();
        qmp.remove_scsi_disk(lun).await.unwrap();
    }
    // A disk that never appears is a clear error within the deadline, not a hang.
    let err = c
        .modify_settings(
            NULL_CONTAINER_ID,
            modify(
                "MappedVirtualDisk",
                "Add",
                json!({"MountPath": "/run/mounts/scsi/m9", "Lun": 9, "Controller": 4}),
            ),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("controller 4"), "{err}");
    assert!(uvm.shutdown().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_from_a_vpmem_layer_with_a_tty() {
    use gcs::protocol::messages::{ContainerSettings, ModifySettingRequest, SchemaVersion};
    use serde_json::json;
    let work = tempfile::tempdir().unwrap();
    let layer = ext4_image(
        work.path(),
        "pmem.ext4",
        Some(&busybox_tree(work.path())),
        "16M",
    );
    let mut cfg = config();
    cfg.pmem.push(layer);
    let uvm = Uvm::boot(&cfg).await.unwrap();
    let c = &uvm.client;
    let modify =
        |resource: &str, request: &str, settings: serde_json::Value| ModifySettingRequest {
            resource_type: resource.into(),
            request_type: request.into(),
            settings: Some(settings),
        };
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "VPMemDevice",
            "Add",
            json!({"DeviceNumber": 0, "MountPath": "/run/layers/p0"}),
        ),
    )
    .await
    .unwrap();
    let id = "qemu-pmem";
    let root = format!("/run/gcs/c/{id}/rootfs");
    c.modify_settings(NULL_CONTAINER_ID, modify("CombinedLayers", "Add", json!({"ContainerID": id, "ContainerRootPath": root,
        "Layers": [{"Path": "/run/layers/p0"}], "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")})))
        .await
        .unwrap();
    let args: Vec<String> = [
        "sh",
        "-c",
        "tty; read line; echo got=$line; stty size; exit 7",
    ]
    .map(String::from)
    .to_vec();
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(gcs::host::spec::container_spec(&args, &root, true)),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    };
    c.create_container(id, &settings).await.unwrap();
    c.start_container(id).await.unwrap();
    let ports = StdioPorts::default();
    let (in_port, out_port) = (ports.allocate(), ports.allocate());
    let (in_l, out_l) = (
        uvm.vsock().listen(in_port).unwrap(),
        uvm.vsock().listen(out_port).unwrap(),
    );
    let params = ProcessParameters {
        create_std_in_pipe: true,
        create_std_out_pipe: true,
        ..Default::default()
    };
    let init = c
        .execute_process(
            id,
            &params,
            VsockStdioRelaySettings {
                std_in: in_port,
                std_out: out_port,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (mut stdin, _) = in_l.accept().await.unwrap();
    let (mut out, _) = out_l.accept().await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains('\n') {
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(30), out.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&b[..n]);
    }
    assert!(
        String::from_utf8_lossy(&seen).starts_with("/dev/"),
        "the init has a terminal"
    );
    c.resize_console(id, init, 30, 90).await.unwrap();
    stdin.write_all(b"pmem\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), out.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.contains("got=pmem") && text.contains("30 90"),
        "{text}"
    );
    assert_eq!(
        c.wait_for_process(id, init, INFINITE_WAIT).await.unwrap(),
        7
    );
    c.next_notification(Duration::from_secs(30)).await.unwrap();
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "CombinedLayers",
            "Remove",
            json!({"ContainerRootPath": root}),
        ),
    )
    .await
    .unwrap();
    c.delete_container_state(id).await.unwrap();
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "VPMemDevice",
            "Remove",
            json!({"DeviceNumber": 0, "MountPath": "/run/layers/p0"}),
        ),
    )
    .await
    .unwrap();
    assert!(uvm.shutdown().await.unwrap().success());
}
