//! End to end in a real VM: the agent boots as PID 1 of a QEMU utility VM (TCG, vsock served by
//! vhost-device-vsock on Unix sockets) from `out/test-initrd.img` and Debian's generic 6.1 kernel
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
    // QEMU has no Hyper-V PTP clock: a warning, and the agent goes on (the original exits).
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no Hyper-V PTP clock") && l.contains("\"level\":\"warning\"")),
        "{lines:?}"
    );
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }

    // cgroup v2 in the guest: the agent lives in /gcs, /pods is limited to total memory less
    // the default reserve (75 MiB). A kernel message at level 3 (≤ the default 4) reaches the
    // log stream; one at level 6 does not.
    let (out, code) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "echo '<3>gcs-kmsg-probe 42' > /dev/kmsg; echo '<6>gcs-kmsg-quiet' > /dev/kmsg; \
             cat /sys/fs/cgroup/pods/memory.max; sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo; \
             cat /sys/fs/cgroup/gcs/cgroup.procs; pidof gcs",
        ],
        None,
        false,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let (pods_max, total_kib): (u64, u64) = (lines[0].parse().unwrap(), lines[1].parse().unwrap());
    assert_eq!(pods_max, total_kib * 1024 - 75 * 1024 * 1024, "{out}");
    let gcs_pid = lines.last().unwrap().trim();
    assert!(lines[2..lines.len() - 1].contains(&gcs_pid), "{out}");
    let probe = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = uvm.log.recv().await.unwrap();
            // (the request that wrote it is logged too; only a relayed entry has a priority)
            assert!(
                !(line.contains("gcs-kmsg-quiet") && line.contains("\"priority\"")),
                "{line}"
            );
            if line.contains("gcs-kmsg-probe 42") && line.contains("\"priority\"") {
                return line;
            }
        }
    })
    .await
    .expect("the kernel message reaches the log stream");
    let probe: serde_json::Value = serde_json::from_str(&probe).unwrap();
    // The text is the line's `msg` (tracing reserves the name "message" for it; the original
    // logs msg "kmsg" with a separate "message" field).
    assert_eq!(
        (probe["priority"].as_u64(), probe["msg"].as_str()),
        (Some(3), Some("gcs-kmsg-probe 42"))
    );
    assert!(
        probe["seq"].is_u64() && probe["timesincebootmicro"].is_u64(),
        "{probe}"
    );

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

/// Hot-adds each (lun, image, mount path, read-only) disk over QMP and maps it in the guest as
/// the host does: a read-only layer with `Options: ["ro"]`, a read-write scratch formatted by
/// the guest (`EnsureFilesystem`).
async fn add_scsi_disks(
    c: &gcs::host::BridgeClient,
    qmp: &mut gcs::host::qmp::Qmp,
    disks: &[(u8, &Path, &str, bool)],
) {
    use serde_json::json;
    for &(lun, image, mount, ro) in disks {
        qmp.add_scsi_disk(image, lun, ro).await.unwrap();
        let mut settings = json!({"MountPath": mount, "Lun": lun});
        if ro {
            settings["ReadOnly"] = json!(true);
            settings["Options"] = json!(["ro"]);
        } else {
            settings["EnsureFilesystem"] = json!(true);
            settings["Filesystem"] = json!("ext4");
        }
        let request = gcs::protocol::messages::ModifySettingRequest {
            resource_type: "MappedVirtualDisk".into(),
            request_type: "Add".into(),
            settings: Some(settings),
        };
        c.modify_settings(NULL_CONTAINER_ID, request).await.unwrap();
    }
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
    // The scratch is a blank disk: the guest formats it (EnsureFilesystem), in process.
    let scratch = work.path().join("scratch.img");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();

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
    add_scsi_disks(
        c,
        &mut qmp,
        &[
            (1, &base, "/run/mounts/scsi/m0", true),
            (2, &top, "/run/mounts/scsi/m1", true),
            (3, &scratch, "/run/gcs/c/qemu-ctr", false),
        ],
    )
    .await;
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
    // A seccomp profile (statically linked libseccomp in the guest), and on the guest's cgroup
    // v2 the device program (statically linked libbpf) refuses the UVM's disks.
    let mut spec = gcs::host::spec::container_spec(&args, &root, false);
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["chroot"], "action": "SCMP_ACT_ERRNO"}]});
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(spec),
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
    assert_eq!(
        read_until(&mut out, "ready\n").await,
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
            "echo written > /data.txt; cat /data.txt; grep Seccomp: /proc/self/status; \
             mknod /dev/probe b 8 16 2>/dev/null; head -c 1 /dev/probe 2>&1 | grep -o 'Operation not permitted'; \
             head -c 4 /dev/urandom | wc -c; exit 6"
                .into(),
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
    assert_eq!(text, "written\nSeccomp:\t2\nOperation not permitted\n4\n");
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
    // An encrypted scratch: dm-crypt under a key that never leaves the guest, formatted in
    // process; what reaches the host's image is ciphertext.
    let secret = work.path().join("secret.img");
    std::fs::File::create(&secret)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    qmp.add_scsi_disk(&secret, 4, false).await.unwrap();
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "MappedVirtualDisk",
            "Add",
            json!({"MountPath": "/run/mounts/scsi/m4", "Lun": 4, "Encrypted": true}),
        ),
    )
    .await
    .unwrap();
    let (out, code) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "for i in $(seq 64); do echo plaintext-marker-7f3a; done > /run/mounts/scsi/m4/s.txt;              sync; grep -c plaintext-marker-7f3a /run/mounts/scsi/m4/s.txt;              grep -c '^/dev/mapper/dm-crypt-scsi-contr0-lun4-p0 /run/mounts/scsi/m4 ext4' /proc/mounts",
        ],
        None,
        false,
    )
    .await;
    assert_eq!((out.as_str(), code), ("64\n1\n", 0));
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "MappedVirtualDisk",
            "Remove",
            json!({"MountPath": "/run/mounts/scsi/m4", "Lun": 4}),
        ),
    )
    .await
    .unwrap();
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify("SCSIDevice", "Remove", json!({"Lun": 4})),
    )
    .await
    .unwrap();
    qmp.remove_scsi_disk(4).await.unwrap();
    let (out, _) = run(&uvm, &ports, &["ls", "/dev/mapper"], None, false).await;
    assert_eq!(out, "control\n", "the crypt device is gone");
    let image = std::fs::read(&secret).unwrap();
    assert!(image.iter().any(|&b| b != 0), "something was written");
    assert!(
        !image
            .windows(b"plaintext-marker".len())
            .any(|w| w == b"plaintext-marker"),
        "plaintext reached the host's image"
    );

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
    // What the guest formatted and wrote to is a clean ext4 filesystem. DeleteContainerState
    // removed the container's scratch directory from it (the original's RemoveAll of the
    // scratch path, which lies on this disk), and left the disk mounted for its Remove.
    let fsck = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(&scratch)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{fsck:?}");
    let listing = std::process::Command::new("debugfs")
        .args(["-R", "ls -p /scratch"])
        .arg(&scratch)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("/./") && !listing.contains("/qemu-ctr/"),
        "{listing}"
    );
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

/// Appends a dm-verity superblock and hash tree to `image` (`common::policy::verity_append`);
/// returns the `VerityInfo` the host would send.
fn verity_format(image: &Path) -> serde_json::Value {
    let v = common::policy::verity_append(image);
    serde_json::json!({"Ext4SizeInBytes": v.ext4_bytes, "Version": 1, "Algorithm": "sha256",
        "SuperBlock": true, "RootDigest": v.root_hash, "Salt": v.salt, "BlockSize": 4096})
}

/// Several layer images packed into one file at 4 MiB-aligned offsets, as the host packs
/// layers into one multi-mapped VPMem device; returns each layer's (offset, size).
fn pack(dir: &Path, layers: &[&Path]) -> (std::path::PathBuf, Vec<(u64, u64)>) {
    let mut packed = Vec::new();
    let mut at = Vec::new();
    for layer in layers {
        packed.resize(packed.len().next_multiple_of(4 << 20) + (4 << 20), 0);
        let bytes = std::fs::read(layer).unwrap();
        let offset = packed.len() as u64;
        packed.extend_from_slice(&bytes);
        at.push((offset, bytes.len() as u64));
    }
    packed.resize(packed.len().next_multiple_of(4 << 20), 0);
    let path = dir.join("packed.img");
    std::fs::write(&path, packed).unwrap();
    (path, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verity_multi_mapped_vpmem_and_scsi_hotplug_on_uevents() {
    use gcs::protocol::messages::ModifySettingRequest;
    use serde_json::json;
    let work = tempfile::tempdir().unwrap();
    let base = ext4_image(
        work.path(),
        "base.ext4",
        Some(&busybox_tree(work.path())),
        "16M",
    );
    let verity = verity_format(&base);
    // The same layer with one byte of its filesystem changed after hashing.
    let corrupt = work.path().join("corrupt.img");
    let mut bytes = std::fs::read(&base).unwrap();
    bytes[1024 + 120] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let mut trees = Vec::new();
    for name in ["one", "two"] {
        let tree = work.path().join(name);
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/layer.txt"), format!("layer {name}\n")).unwrap();
        trees.push(ext4_image(
            work.path(),
            &format!("{name}.ext4"),
            Some(&tree),
            "2M",
        ));
    }
    let (packed, at) = pack(work.path(), &[&trees[0], &trees[1]]);

    let mut cfg = config();
    cfg.pmem = vec![base.clone(), packed, corrupt];
    let mut uvm = Uvm::boot(&cfg).await.unwrap();
    let ports = StdioPorts::default();
    let modify =
        |resource: &str, request: &str, settings: serde_json::Value| ModifySettingRequest {
            resource_type: resource.into(),
            request_type: request.into(),
            settings: Some(settings),
        };
    let call = |resource: &'static str, request: &'static str, settings: serde_json::Value| {
        let c = &uvm.client;
        let m = modify(resource, request, settings);
        async move {
            c.modify_settings(NULL_CONTAINER_ID, m)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };

    // Which /dev/pmem<N> is which image: the images lie at ascending addresses.
    let (out, _) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "for p in /sys/block/pmem*; do echo ${p#*pmem} $(cat $p/device/resource); done",
        ],
        None,
        false,
    )
    .await;
    let mut by_address: Vec<(u64, u32)> = out
        .lines()
        .map(|l| {
            let (n, addr) = l.split_once(' ').unwrap();
            (
                u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap(),
                n.parse().unwrap(),
            )
        })
        .collect();
    by_address.sort_unstable();
    let [base_dev, packed_dev, corrupt_dev] = [by_address[0].1, by_address[1].1, by_address[2].1];

    // A verity-protected VPMem layer.
    call(
        "VPMemDevice",
        "Add",
        json!({"DeviceNumber": base_dev, "MountPath": "/run/layers/p0", "VerityInfo": verity}),
    )
    .await
    .unwrap();
    // Two layers packed in one device, each mapped by dm-linear.
    let mut mapped = Vec::new();
    for (offset, size) in &at {
        let path = format!("/run/layers/p1-{offset}-{size}");
        call(
            "VPMemDevice",
            "Add",
            json!({"DeviceNumber": packed_dev, "MountPath": path,
            "MappingInfo": {"DeviceOffsetInBytes": offset, "DeviceSizeInBytes": size}}),
        )
        .await
        .unwrap();
        mapped.push(path);
    }
    let digest = verity["RootDigest"].as_str().unwrap();
    let script = format!(
        "cat {0}/etc/layer.txt {1}/etc/layer.txt; /run/layers/p0/bin/busybox echo verified; \
         grep -c ' /run/layers/' /proc/mounts; grep ' /run/layers/' /proc/mounts | grep -c dax; ls /dev/mapper",
        mapped[0], mapped[1]
    );
    let (out, code) = run(&uvm, &ports, &["sh", "-c", &script], None, false).await;
    assert_eq!(code, 0, "{out}");
    let mut names: Vec<String> = vec![
        "control".into(),
        format!("dm-linear-pmem{packed_dev}-{}-{}", at[0].0, at[0].1),
        format!("dm-linear-pmem{packed_dev}-{}-{}", at[1].0, at[1].1),
        format!("dm-verity-pmem{base_dev}-{digest}"),
    ];
    names.sort();
    assert_eq!(
        out,
        // QEMU's label-less NVDIMMs are raw namespaces, which have no DAX (queue/dax is 0):
        // the agent mounts without it rather than failing.
        format!(
            "layer one\nlayer two\nverified\n3\n0\n{}\n",
            names.join("\n")
        )
    );

    // A corrupted layer and a wrong digest: clear errors, nothing left behind.
    let err = call(
        "VPMemDevice",
        "Add",
        json!({"DeviceNumber": corrupt_dev, "MountPath": "/run/layers/p2", "VerityInfo": verity}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("mount VPMem layer on"), "{err}");
    let mut wrong = verity.clone();
    wrong["RootDigest"] = json!("00".repeat(32));
    let err = call(
        "VPMemDevice",
        "Add",
        json!({"DeviceNumber": base_dev, "MountPath": "/run/layers/p3", "VerityInfo": wrong}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("mount VPMem layer on"), "{err}");
    let (out, _) = run(
        &uvm,
        &ports,
        &["sh", "-c", "ls /dev/mapper | wc -l; ls /run/layers"],
        None,
        false,
    )
    .await;
    let mut expected_dirs = [
        "p0".to_string(),
        mapped[0].trim_start_matches("/run/layers/").to_string(),
        mapped[1].trim_start_matches("/run/layers/").to_string(),
    ];
    expected_dirs.sort();
    assert_eq!(out, format!("4\n{}\n", expected_dirs.join("\n")));

    // SCSI: the Add is sent first and waits; the disk is hot-added a second later and the
    // agent is woken by the kernel's uevents. Read-only with verity.
    let mut qmp = gcs::host::qmp::Qmp::connect(&uvm.qmp_socket())
        .await
        .unwrap();
    while uvm.log.try_recv().is_ok() {}
    let add = call(
        "MappedVirtualDisk",
        "Add",
        json!({"MountPath": "/run/mounts/scsi/m0", "Lun": 1, "ReadOnly": true,
               "Options": ["ro"], "VerityInfo": verity}),
    );
    let plug = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        qmp.add_scsi_disk(&base, 1, true).await.unwrap();
    };
    let (added, ()) = tokio::join!(add, plug);
    added.unwrap();
    // The log stream runs behind the bridge: give it a moment.
    let appeared = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = uvm.log.recv().await.unwrap();
            if line.contains("device appeared") {
                return line;
            }
        }
    })
    .await
    .expect("the agent logs how it found the disk");
    let event: serde_json::Value = serde_json::from_str(&appeared).unwrap();
    assert!(event["uevents"].as_u64().unwrap() > 0, "{appeared}");
    assert!(event["waited_ms"].as_u64().unwrap() >= 900, "{appeared}");
    let (out, code) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "/run/mounts/scsi/m0/bin/busybox echo scsi verified; grep -c dm-verity-scsi-contr0-lun1-p0 /proc/mounts",
        ],
        None,
        false,
    )
    .await;
    assert_eq!((out.as_str(), code), ("scsi verified\n1\n", 0));

    // Overlay over the verity and linear layers; a layer under it cannot go.
    let root = "/run/gcs/c/vm-st/rootfs";
    call(
        "CombinedLayers",
        "Add",
        json!({"ContainerID": "vm-st", "ContainerRootPath": root,
        "Layers": [{"Path": mapped[1]}, {"Path": "/run/layers/p0"}],
        "ScratchPath": "/run/gcs/c/vm-st/scratch/vm-st"}),
    )
    .await
    .unwrap();
    let err = call(
        "VPMemDevice",
        "Remove",
        json!({"MountPath": "/run/layers/p0"}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("still used by the container rootfs"), "{err}");
    let (out, _) = run(
        &uvm,
        &ports,
        &["cat", &format!("{root}/etc/layer.txt")],
        None,
        false,
    )
    .await;
    assert_eq!(out, "layer two\n");

    // Teardown in the host's order; the disk is ejected by the guest, then unplugged.
    call(
        "CombinedLayers",
        "Remove",
        json!({"ContainerRootPath": root}),
    )
    .await
    .unwrap();
    for path in mapped
        .iter()
        .chain(std::iter::once(&"/run/layers/p0".to_string()))
    {
        call("VPMemDevice", "Remove", json!({"MountPath": path}))
            .await
            .unwrap();
    }
    call(
        "MappedVirtualDisk",
        "Remove",
        json!({"MountPath": "/run/mounts/scsi/m0", "Lun": 1, "ReadOnly": true}),
    )
    .await
    .unwrap();
    call("SCSIDevice", "Remove", json!({"Lun": 1}))
        .await
        .unwrap();
    qmp.remove_scsi_disk(1).await.unwrap();
    let (out, _) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "ls /dev/mapper; find /run/layers /run/mounts/scsi -mindepth 1 | wc -l; ls /sys/class/block | grep -c sd",
        ],
        None,
        false,
    )
    .await;
    assert_eq!(out, "control\n0\n0\n");
    assert!(uvm.shutdown().await.unwrap().success());
}

/// Serves every connection on `listener` with Debian's `diod` (a 9P2000.L server) on that
/// connection's fds, exporting `export`. Hyper-V's own Plan9 server names shares by a counter;
/// diod names them by path, so the share name here is the exported path.
fn serve_plan9(listener: tokio::net::UnixListener, export: std::path::PathBuf) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let stream = stream.into_std().unwrap();
            stream.set_nonblocking(false).unwrap();
            let fd = std::os::fd::OwnedFd::from(stream);
            let mut child = std::process::Command::new("diod")
                .args(["-f", "-n", "-r", "0", "-w", "1", "-L", "stderr", "-e"])
                .arg(&export)
                .stdin(std::process::Stdio::from(fd.try_clone().unwrap()))
                .stdout(std::process::Stdio::from(fd))
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("diod (make qemu-deps installs it)");
            std::thread::spawn(move || child.wait());
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan9_shares_over_vsock() {
    use gcs::protocol::messages::ModifySettingRequest;
    use serde_json::json;
    let work = tempfile::tempdir().unwrap();
    let export = work.path().join("share");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::write(export.join("hello.txt"), "from the host\n").unwrap();
    let uvm = Uvm::boot(&config()).await.unwrap();
    serve_plan9(uvm.vsock().listen(564).unwrap(), export.clone());
    let ports = StdioPorts::default();
    let call = |request: &'static str, settings: serde_json::Value| {
        let c = &uvm.client;
        let m = ModifySettingRequest {
            resource_type: "MappedDirectory".into(),
            request_type: request.into(),
            settings: Some(settings),
        };
        async move {
            c.modify_settings(NULL_CONTAINER_ID, m)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    let share = export.to_str().unwrap();
    call(
        "Add",
        json!({"MountPath": "/run/gcs/c/p9/mounts/m0", "Port": 564, "ShareName": share}),
    )
    .await
    .unwrap();
    call("Add", json!({"MountPath": "/run/gcs/c/p9/mounts/m1", "Port": 564, "ShareName": share, "ReadOnly": true}))
        .await
        .unwrap();
    let (out, code) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "cd /run/gcs/c/p9/mounts; cat m0/hello.txt; echo from the guest > m0/new.txt; \
             cat m1/new.txt; echo nope > m1/ro.txt || echo read-only; \
             grep -c ' /run/gcs/c/p9/mounts/m[01] 9p ' /proc/mounts",
        ],
        None,
        false,
    )
    .await;
    assert_eq!(
        (out.as_str(), code),
        ("from the host\nfrom the guest\nread-only\n2\n", 0)
    );
    assert_eq!(
        std::fs::read_to_string(export.join("new.txt")).unwrap(),
        "from the guest\n"
    );
    assert!(!export.join("ro.txt").exists());

    // A share at a path the user chose (as `shimdiag share` does), never over the system.
    call(
        "Add",
        json!({"MountPath": "/tmp/p9share", "Port": 564, "ShareName": share}),
    )
    .await
    .unwrap();
    let (out, _) = run(
        &uvm,
        &ports,
        &["cat", "/tmp/p9share/hello.txt"],
        None,
        false,
    )
    .await;
    assert_eq!(out, "from the host\n");
    call("Remove", json!({"MountPath": "/tmp/p9share"}))
        .await
        .unwrap();
    for system in ["/etc/p9", "/usr", "/run/gcs", "/"] {
        let err = call(
            "Add",
            json!({"MountPath": system, "Port": 564, "ShareName": share}),
        )
        .await
        .unwrap_err();
        assert!(err.contains(system), "{system}: {err}");
    }

    // No server on the port: a clear error after the bounded dial, nothing mounted.
    let err = call(
        "Add",
        json!({"MountPath": "/run/gcs/c/p9/mounts/m2", "Port": 565, "ShareName": share}),
    )
    .await
    .unwrap_err();
    assert!(err.contains("Plan9 server on port 565"), "{err}");
    for m in ["m0", "m1"] {
        call(
            "Remove",
            json!({"MountPath": format!("/run/gcs/c/p9/mounts/{m}")}),
        )
        .await
        .unwrap();
    }
    let (out, _) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "ls /run/gcs/c/p9/mounts; grep -c 9p /proc/mounts",
        ],
        None,
        false,
    )
    .await;
    assert_eq!(out, "0\n");
    assert!(uvm.shutdown().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vpmem_layer_on_a_dax_capable_device_is_mounted_with_dax() {
    use gcs::protocol::messages::ModifySettingRequest;
    use serde_json::json;
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/layer.txt"), "dax layer\n").unwrap();
    // 4 KiB blocks (the page size), as DAX needs.
    let layer = ext4_image(work.path(), "dax.ext4", Some(&tree), "16M");
    let mut cfg = config();
    cfg.virtio_pmem.push(layer);
    let uvm = Uvm::boot(&cfg).await.unwrap();
    let ports = StdioPorts::default();
    let (out, _) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "ls /sys/block | grep pmem; cat /sys/block/pmem*/queue/dax",
        ],
        None,
        false,
    )
    .await;
    assert_eq!(out, "pmem0\n1\n", "one virtio-pmem device, DAX-capable");
    uvm.client
        .modify_settings(
            NULL_CONTAINER_ID,
            ModifySettingRequest {
                resource_type: "VPMemDevice".into(),
                request_type: "Add".into(),
                settings: Some(json!({"MountPath": "/run/layers/p0"})),
            },
        )
        .await
        .unwrap();
    let (out, code) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "cat /run/layers/p0/etc/layer.txt; grep ' /run/layers/p0 ' /proc/mounts | grep -c 'ro,.*dax'",
        ],
        None,
        false,
    )
    .await;
    assert_eq!((out.as_str(), code), ("dax layer\n1\n", 0));
    assert!(uvm.shutdown().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtio_nic_found_by_mac_moved_into_a_pod_configured_by_dhcp_and_reaching_the_host() {
    use gcs::protocol::messages::{ContainerSettings, ModifySettingRequest, SchemaVersion};
    use serde_json::json;
    // QEMU's user networking forwards the guest's 10.0.2.2 to this machine's loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"hello from the host\n").await.unwrap();
    });
    let work = tempfile::tempdir().unwrap();
    let layer = ext4_image(
        work.path(),
        "layer.ext4",
        Some(&busybox_tree(work.path())),
        "16M",
    );
    let mut cfg = config();
    cfg.pmem.push(layer);
    cfg.nics.push("52:54:00:12:34:56".into());
    let uvm = Uvm::boot(&cfg).await.unwrap();
    let c = &uvm.client;
    let modify =
        |resource: &str, request: &str, settings: serde_json::Value| ModifySettingRequest {
            resource_type: resource.into(),
            request_type: request.into(),
            settings: Some(settings),
        };
    let ns = "a1b2c3d4-0000-4000-8000-00000000abcd";
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "Network",
            "Add",
            // No IPConfigs: the address and route come from QEMU's DHCP server.
            json!({"NamespaceID": ns, "ID": "7a7a7a7a-0000-0000-0000-000000000001",
                   "MacAddress": "52-54-00-12-34-56", "DNSServerList": "10.0.2.3"}),
        ),
    )
    .await
    .unwrap();
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify("VPMemDevice", "Add", json!({"MountPath": "/run/layers/p0"})),
    )
    .await
    .unwrap();
    let id = "qemu-net";
    let root = format!("/run/gcs/c/{id}/rootfs");
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "CombinedLayers",
            "Add",
            json!({"ContainerID": id,
        "ContainerRootPath": root, "Layers": [{"Path": "/run/layers/p0"}],
        "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")}),
        ),
    )
    .await
    .unwrap();
    let args: Vec<String> = [
        "sh",
        "-c",
        &format!("ip -o -4 addr show; ip route; nc 10.0.2.2 {port}"),
    ]
    .map(String::from)
    .to_vec();
    let mut spec = gcs::host::spec::container_spec(&args, &root, false);
    spec["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox"});
    spec["windows"] = json!({"network": {"networkNamespace": ns}});
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(spec),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    };
    c.create_container(id, &settings).await.unwrap();
    c.start_container(id).await.unwrap();
    let ports = StdioPorts::default();
    let out_port = ports.allocate();
    let out_l = uvm.vsock().listen(out_port).unwrap();
    let params = ProcessParameters {
        create_std_out_pipe: true,
        ..Default::default()
    };
    let init = c
        .execute_process(
            id,
            &params,
            VsockStdioRelaySettings {
                std_out: out_port,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (mut s, _) = out_l.accept().await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c.wait_for_process(id, init, INFINITE_WAIT).await.unwrap(),
        0,
        "{out}"
    );
    server.await.unwrap();
    for want in [
        "inet 127.0.0.1/8",
        "inet 10.0.2.15/24",
        "default via 10.0.2.2 dev eth0",
        "hello from the host\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out}");
    }
    // The pod's namespace died with its init: the kernel hands the physical NIC back to the
    // UVM's own namespace, where the host can hot-remove it.
    let (out, _) = run(
        &uvm,
        &ports,
        &["sh", "-c", "ls /sys/class/net"],
        None,
        false,
    )
    .await;
    assert_eq!(out, "eth0\nlo\n");
    assert!(uvm.shutdown().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_in_the_vm_is_logged_and_counted_on_cgroup_v2() {
    use gcs::protocol::messages::{ContainerSettings, ModifySettingRequest, SchemaVersion};
    use serde_json::json;
    let work = tempfile::tempdir().unwrap();
    let layer = ext4_image(
        work.path(),
        "layer.ext4",
        Some(&busybox_tree(work.path())),
        "16M",
    );
    let mut cfg = config();
    cfg.pmem.push(layer);
    let mut uvm = Uvm::boot(&cfg).await.unwrap();
    let c = &uvm.client;
    let modify =
        |resource: &str, request: &str, settings: serde_json::Value| ModifySettingRequest {
            resource_type: resource.into(),
            request_type: request.into(),
            settings: Some(settings),
        };
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify("VPMemDevice", "Add", json!({"MountPath": "/run/layers/p0"})),
    )
    .await
    .unwrap();
    let id = "vm-oom";
    let root = format!("/run/gcs/c/{id}/rootfs");
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "CombinedLayers",
            "Add",
            json!({"ContainerID": id,
        "ContainerRootPath": root, "Layers": [{"Path": "/run/layers/p0"}],
        "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")}),
        ),
    )
    .await
    .unwrap();
    let args: Vec<String> = [
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=48M count=1; sleep 1000",
    ]
    .map(String::from)
    .to_vec();
    let mut spec = gcs::host::spec::container_spec(&args, &root, false);
    spec["linux"]["resources"] = json!({"memory": {"limit": 16 << 20}});
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(spec),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    };
    c.create_container(id, &settings).await.unwrap();
    c.start_container(id).await.unwrap();
    let init = c
        .execute_process(id, &ProcessParameters::default(), Default::default())
        .await
        .unwrap();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = uvm.log.recv().await.unwrap();
            if line.contains("OOM") && line.contains(id) {
                return line;
            }
        }
    })
    .await
    .expect("the OOM kill is logged");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["container_id"], id);
    assert_eq!(event["oom_kill"], 1, "{line}");
    assert_eq!(event["limit"], (16u64 << 20).to_string(), "{line}");
    let props = uvm
        .client
        .get_properties(id, &["Statistics"])
        .await
        .unwrap();
    let m = props.lcow_metrics.unwrap();
    assert_eq!(m["memory_oom_control"]["oom_kill"], 1, "{m}");
    uvm.client.shutdown_forced(id).await.unwrap();
    uvm.client
        .wait_for_process(id, init, INFINITE_WAIT)
        .await
        .unwrap();
    assert!(uvm.shutdown().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_added_memory_raises_the_pods_limit() {
    let mut cfg = config();
    cfg.gcs_args
        .extend(["-core-dump-location", "/tmp/cores/core.%p"].map(String::from));
    let uvm = Uvm::boot(&cfg).await.unwrap();
    let ports = StdioPorts::default();
    let pods_max = |out: String| out.trim().parse::<u64>().unwrap();
    let (out, _) = run(
        &uvm,
        &ports,
        &["cat", "/sys/fs/cgroup/pods/memory.max"],
        None,
        false,
    )
    .await;
    let before = pods_max(out);
    // -core-dump-location reached the kernel.
    let (out, _) = run(
        &uvm,
        &ports,
        &["cat", "/proc/sys/kernel/core_pattern"],
        None,
        false,
    )
    .await;
    assert_eq!(out, "/tmp/cores/core.%p\n");
    let mut qmp = gcs::host::qmp::Qmp::connect(&uvm.qmp_socket())
        .await
        .unwrap();
    qmp.execute(
        "object-add",
        serde_json::json!({"qom-type": "memory-backend-ram", "id": "hot1", "size": 128u64 << 20}),
    )
    .await
    .unwrap();
    qmp.execute(
        "device_add",
        serde_json::json!({"driver": "pc-dimm", "id": "dimm1", "memdev": "hot1"}),
    )
    .await
    .unwrap();
    // The memory comes online and the agent, woken by the kernel's uevent, raises the limit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (out, _) = run(
            &uvm,
            &ports,
            &["cat", "/sys/fs/cgroup/pods/memory.max"],
            None,
            false,
        )
        .await;
        let now = pods_max(out);
        if now == before + (128 << 20) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/pods limit {now}, expected {} (+128 MiB)",
            before + (128 << 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(uvm.shutdown().await.unwrap().success());
}

/// `uvmboot` finds the kernel and initrd `make test-image` built from any working directory,
/// and a missing one is named.
#[tokio::test]
async fn uvmboot_finds_its_images_from_any_directory() {
    config();
    let uvmboot = env!("CARGO_BIN_EXE_uvmboot");
    let out = tokio::process::Command::new(uvmboot)
        .args(["exec", "--", "echo", "found from /tmp"])
        .current_dir("/tmp")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("found from /tmp"),
        "{out:?}"
    );
    let out = tokio::process::Command::new(uvmboot)
        .args(["--kernel", "/nonexistent/vmlinux", "exec", "--", "true"])
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vmlinux does not exist"),
        "{out:?}"
    );
}

/// `/bin/install-drivers` as the host runs it for `io.microsoft.virtualmachine.kerneldrivers`:
/// a driver disk (real modules of the test kernel: macvtap and what it depends on) is mounted,
/// overlaid and its modules loaded in dependency order, in process; a second run does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_drivers_loads_a_driver_disk_in_dependency_order() {
    use gcs::protocol::messages::ModifySettingRequest;
    use serde_json::json;
    let drivers = Path::new(env!("CARGO_MANIFEST_DIR")).join("out/kernel/drivers");
    assert!(
        drivers.is_dir(),
        "run `make test-image` first (make test does)"
    );
    let work = tempfile::tempdir().unwrap();
    let disk = ext4_image(work.path(), "drivers.ext4", Some(&drivers), "16M");
    let uvm = Uvm::boot(&config()).await.unwrap();
    let c = &uvm.client;
    let ports = StdioPorts::default();
    let mut qmp = gcs::host::qmp::Qmp::connect(&uvm.qmp_socket())
        .await
        .unwrap();
    qmp.add_scsi_disk(&disk, 5, true).await.unwrap();
    c.modify_settings(
        NULL_CONTAINER_ID,
        ModifySettingRequest {
            resource_type: "MappedVirtualDisk".into(),
            request_type: "Add".into(),
            settings: Some(json!({"MountPath": "/run/drivers/disk", "Lun": 5, "ReadOnly": true, "Options": ["ro"]})),
        },
    )
    .await
    .unwrap();
    let (out, code) = run(
        &uvm,
        &ports,
        &["sh", "-c", "grep -c -E '^(macvtap|macvlan|tap) ' /proc/modules; \
           /bin/install-drivers /run/drivers/overlay /run/drivers/disk 2>&1 | sed 's/^install-drivers: //'; \
           grep -c -E '^(macvtap|macvlan|tap) ' /proc/modules; \
           /bin/install-drivers /run/drivers/overlay /run/drivers/disk 2>&1 | grep -o 'already installed'; \
           /bin/install-drivers /run/x 2>&1; echo rc=$?"],
        None,
        false,
    )
    .await;
    assert_eq!(
        (out.as_str(), code),
        (
            "0\nloaded 3 kernel modules from /run/drivers/disk\n3\nalready installed\ninstall-drivers: expected two args, instead got 1\nrc=1\n",
            0
        )
    );
    assert!(uvm.shutdown().await.unwrap().success());
}

/// Starts container `id` (its rootfs already added) and returns its init pid and stdout.
async fn start_vm_container(
    uvm: &Uvm,
    ports: &StdioPorts,
    id: &str,
    spec: serde_json::Value,
) -> (u32, tokio::net::UnixStream) {
    use gcs::protocol::messages::{ContainerSettings, SchemaVersion};
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(spec),
        scratch_dir_path: String::new(),
    };
    uvm.client.create_container(id, &settings).await.unwrap();
    uvm.client.start_container(id).await.unwrap();
    let (pid, listener) =
        common::start_init_stdout_only(&uvm.client, &uvm.vsock(), id, ports.allocate()).await;
    (pid, listener.accept().await.unwrap().0)
}

/// A pod in the VM (cgroup v2): `/pods/<sandbox>` carries the sandbox's resources, and a
/// workload reads and writes a raw SCSI disk mounted as `blockdev://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_limits_and_a_raw_scsi_block_volume() {
    use gcs::protocol::messages::ModifySettingRequest;
    use serde_json::json;
    const MARK: &[u8] = b"raw-volume-marker";
    let work = tempfile::tempdir().unwrap();
    let base = ext4_image(
        work.path(),
        "base.ext4",
        Some(&busybox_tree(work.path())),
        "16M",
    );
    let raw = work.path().join("raw.img");
    let mut data = MARK.to_vec();
    data.resize(4 << 20, 0);
    std::fs::write(&raw, data).unwrap();
    let uvm = Uvm::boot(&config()).await.unwrap();
    let c = &uvm.client;
    let ports = StdioPorts::default();
    let mut qmp = gcs::host::qmp::Qmp::connect(&uvm.qmp_socket())
        .await
        .unwrap();
    let modify =
        |resource: &str, request: &str, settings: serde_json::Value| ModifySettingRequest {
            resource_type: resource.into(),
            request_type: request.into(),
            settings: Some(settings),
        };
    qmp.add_scsi_disk(&base, 1, true).await.unwrap();
    qmp.add_scsi_disk(&raw, 2, false).await.unwrap();
    c.modify_settings(NULL_CONTAINER_ID, modify("MappedVirtualDisk", "Add",
        json!({"MountPath": "/run/mounts/scsi/m0", "Lun": 1, "ReadOnly": true, "Options": ["ro"]})))
        .await
        .unwrap();
    c.modify_settings(
        NULL_CONTAINER_ID,
        modify(
            "MappedVirtualDisk",
            "Add",
            json!({"MountPath": "/run/mounts/scsi/raw", "Lun": 2, "BlockDev": true}),
        ),
    )
    .await
    .unwrap();
    for id in ["qpod", "qwork"] {
        c.modify_settings(NULL_CONTAINER_ID, modify("CombinedLayers", "Add", json!({"ContainerID": id,
            "ContainerRootPath": format!("/run/gcs/c/{id}/rootfs"), "Layers": [{"Path": "/run/mounts/scsi/m0"}],
            "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")})))
            .await
            .unwrap();
    }
    let args = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    let mut sandbox = gcs::host::spec::container_spec(
        &args("echo up; exec sleep 1000"),
        "/run/gcs/c/qpod/rootfs",
        false,
    );
    sandbox["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox",
                                    "io.microsoft.cri.skip-pod-networking": "true"});
    sandbox["linux"]["resources"] =
        json!({"memory": {"limit": 64u64 << 20}, "pids": {"limit": 99}});
    let (spid, mut sout) = start_vm_container(&uvm, &ports, "qpod", sandbox).await;
    let mut up = [0u8; 3];
    sout.read_exact(&mut up).await.unwrap();
    let (out, _) = run(
        &uvm,
        &ports,
        &[
            "sh",
            "-c",
            "cat /sys/fs/cgroup/pods/qpod/memory.max /sys/fs/cgroup/pods/qpod/pids.max",
        ],
        None,
        false,
    )
    .await;
    assert_eq!(out, format!("{}\n99\n", 64u64 << 20));

    let mut w = gcs::host::spec::container_spec(
        &args("head -c 17 /dev/raw; echo; printf written | dd of=/dev/raw bs=1 seek=100 conv=notrunc,fsync 2>/dev/null; \
               dd if=/dev/raw bs=1 skip=100 count=7 2>/dev/null; echo"),
        "/run/gcs/c/qwork/rootfs",
        false,
    );
    w.as_object_mut().unwrap().remove("hostname");
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container",
                              "io.kubernetes.cri.sandbox-id": "qpod"});
    w["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"},
        {"type": "uts", "path": format!("/proc/{spid}/ns/uts")}]);
    w["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "blockdev:///dev/raw",
        "type": "bind", "source": "/run/mounts/scsi/raw", "options": ["rbind"]}));
    let (wpid, mut wout) = start_vm_container(&uvm, &ports, "qwork", w).await;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(60), wout.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text, "raw-volume-marker\nwritten\n");
    assert_eq!(
        c.wait_for_process("qwork", wpid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    let on_host = std::fs::read(&raw).unwrap();
    assert_eq!(&on_host[100..107], b"written");
    assert!(uvm.shutdown().await.unwrap().success());
}

/// Spec §10.3 across a real vhost-vsock connection: the host drops the bridge while a wait is
/// outstanding and takes the guest's redial; the wait is answered with its old id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_survives_a_bridge_drop_in_the_vm() {
    let uvm = Uvm::boot(&config()).await.unwrap();
    let pid = uvm
        .client
        .execute_process(
            NULL_CONTAINER_ID,
            &params(&["sh", "-c", "sleep 2; exit 5"]),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap();
    let wait = uvm
        .client
        .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT);
    let migrate = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        uvm.client.detach().await;
        let bridge = tokio::time::timeout(Duration::from_secs(20), uvm.vsock().accept_bridge())
            .await
            .expect("the guest did not redial its bridge")
            .unwrap();
        uvm.client.resume(bridge).await.unwrap();
    };
    let (code, ()) = tokio::join!(wait, migrate);
    assert_eq!(code.unwrap(), 5);
    assert!(uvm.shutdown().await.unwrap().success());
}

/// Reads from a stream until what was read contains `marker` (each read bounded); all of it.
async fn read_until(stream: &mut tokio::net::UnixStream, marker: &str) -> String {
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the stream ended before {marker:?}");
        seen.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Reads a stream to its end (bounded).
async fn read_to_end(mut s: tokio::net::UnixStream) -> String {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_host_flow_under_a_generated_policy_with_verity_vpmem_and_scsi_layers() {
    use gcs::protocol::messages::{ContainerSettings, SchemaVersion};
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
    let (base_hash, top_hash) = (
        common::policy::verity_format(&base),
        common::policy::verity_format(&top),
    );
    // A VPMem image spans whole 4 MiB pages, as the host's are.
    let len = std::fs::metadata(&base).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&base)
        .unwrap()
        .set_len(len.next_multiple_of(4 << 20))
        .unwrap();
    // A layer the policy does not name.
    std::fs::write(top_tree.join("etc/layer.txt"), "tampered\n").unwrap();
    let rogue = ext4_image(work.path(), "rogue.ext4", Some(&top_tree), "4M");
    common::policy::verity_format(&rogue);
    let scratch = work.path().join("scratch.img");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();

    // Container ids are 64 hex digits, as confidential hosts send them.
    let id = "c0ffee".repeat(10) + "c0ff";
    let root = format!("/run/gcs/c/{id}/rootfs");
    let args: Vec<String> = [
        "sh",
        "-c",
        "cat /etc/layer.txt; echo ready; while true; do sleep 1; done",
    ]
    .map(String::from)
    .to_vec();
    let exec_args: Vec<String> = ["cat", "/etc/layer.txt"].map(String::from).to_vec();
    let mut spec = gcs::host::spec::container_spec(&args, &root, false);
    spec["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["chroot"], "action": "SCMP_ACT_ERRNO"}]});
    let seccomp = gcs::policy::seccomp::profile_sha256(spec.pointer("/linux/seccomp")).unwrap();
    let container = json!({
        "id": "app", "name": "app", "layers": [base_hash, top_hash],
        "command": args,
        "env_rules": [
            {"pattern": "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "strategy": "string", "required": true},
            {"pattern": "TERM=xterm", "strategy": "string", "required": false}],
        "working_dir": "/", "mounts": [],
        "exec_processes": [{"command": exec_args, "signals": []}],
        "signals": [9],
        "user": {"user_idname": {"pattern": "root", "strategy": "name"},
                 "group_idnames": [{"pattern": "", "strategy": "any"}], "umask": "0022"},
        "capabilities": null, "seccomp_profile_sha256": seccomp, "allow_elevated": false,
        "allow_stdio_access": true, "no_new_privileges": true,
    });
    let policy = common::policy::generated_policy(
        &[container],
        &[
            ("allow_properties_access", true),
            ("allow_dump_stacks", false),
            ("allow_runtime_logging", true),
            ("allow_unencrypted_scratch", true),
        ],
    );

    // The base layer on VPMem, the top one on SCSI: both verified with what the guest reads.
    let mut cfg = config();
    cfg.pmem.push(base.clone());
    let uvm = Uvm::boot(&cfg).await.unwrap();
    let c = &uvm.client;
    let mut qmp = gcs::host::qmp::Qmp::connect(&uvm.qmp_socket())
        .await
        .unwrap();
    let modify = common::modify;
    // The confidential host sends the policy right after negotiation.
    {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&policy);
        c.modify_settings(
            NULL_CONTAINER_ID,
            modify(
                "SecurityPolicy",
                "Add",
                json!({"EncodedSecurityPolicy": encoded}),
            ),
        )
        .await
        .unwrap();
    }
    let err = c.dump_stacks().await.unwrap_err().to_string();
    assert!(err.contains("dump stacks denied due to policy"), "{err}");

    // The rogue layer is refused after the guest reads its root hash; the policy's are mounted.
    qmp.add_scsi_disk(&rogue, 5, true).await.unwrap();
    let err = c
        .modify_settings(
            NULL_CONTAINER_ID,
            modify("MappedVirtualDisk", "Add",
                json!({"MountPath": "/run/mounts/scsi/m5", "Lun": 5, "ReadOnly": true, "Options": ["ro"]})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "mounting scsi device controller 0 lun 5 onto /run/mounts/scsi/m5 denied by policy"
        ),
        "{err}"
    );
    assert!(common::policy::decision_of(&err)["reason"]["errors"]
        .as_array()
        .unwrap()
        .contains(&json!("deviceHash not found")));
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
    let scratch_mount = format!("/run/gcs/c/{id}");
    add_scsi_disks(
        c,
        &mut qmp,
        &[
            (2, &top, "/run/mounts/scsi/m1", true),
            (3, &scratch, &scratch_mount, false),
        ],
    )
    .await;
    c.modify_settings(NULL_CONTAINER_ID, modify("CombinedLayers", "Add", json!({"ContainerID": id, "ContainerRootPath": root,
        "Layers": [{"Path": "/run/mounts/scsi/m1"}, {"Path": "/run/layers/p0"}], "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")})))
        .await
        .unwrap();
    let settings = |spec: serde_json::Value| ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(spec),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    };
    // Another command than the policy's is refused; the policy's runs.
    let mut wrong = spec.clone();
    wrong["process"]["args"] = json!(["sh", "-c", "cat /etc/shadow"]);
    let err = c
        .create_container(&id, &settings(wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("container creation denied due to policy"),
        "{err}"
    );
    c.create_container(&id, &settings(spec.clone()))
        .await
        .unwrap();
    c.start_container(&id).await.unwrap();
    let ports = StdioPorts::default();
    let out_port = ports.allocate();
    let out_l = uvm.vsock().listen(out_port).unwrap();
    let params = ProcessParameters {
        create_std_out_pipe: true,
        ..Default::default()
    };
    let init = c
        .execute_process(
            &id,
            &params,
            VsockStdioRelaySettings {
                std_out: out_port,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (mut out, _) = out_l.accept().await.unwrap();
    assert_eq!(
        read_until(&mut out, "ready\n").await,
        "from the top layer\nready\n"
    );

    // The policy's exec runs; another is refused; SIGTERM is refused, SIGKILL allowed.
    let exec = |args: &[String]| {
        let mut p = spec["process"].clone();
        p["args"] = json!(args);
        p
    };
    let exec_port = ports.allocate();
    let exec_l = uvm.vsock().listen(exec_port).unwrap();
    let pid = c
        .execute_process(
            &id,
            &ProcessParameters {
                create_std_out_pipe: true,
                oci_process: Some(exec(&exec_args)),
                ..Default::default()
            },
            VsockStdioRelaySettings {
                std_out: exec_port,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (s, _) = exec_l.accept().await.unwrap();
    assert_eq!(read_to_end(s).await, "from the top layer\n");
    assert_eq!(
        c.wait_for_process(&id, pid, INFINITE_WAIT).await.unwrap(),
        0
    );
    let err = c
        .execute_process(
            &id,
            &ProcessParameters {
                oci_process: Some(exec(&["cat".into(), "/etc/passwd".into()])),
                ..Default::default()
            },
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exec in container denied due to policy"),
        "{err}"
    );
    let err = c
        .signal_process(&id, init, Some(15))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("policyDecision"), "{err}");
    c.signal_process(&id, init, Some(9)).await.unwrap();
    assert_eq!(
        c.wait_for_process(&id, init, INFINITE_WAIT).await.unwrap(),
        137
    );
    c.next_notification(Duration::from_secs(30)).await.unwrap();

    // Teardown in the host's order; every removal is allowed for what was mounted.
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
    c.delete_container_state(&id).await.unwrap();
    for (lun, mount, ro) in [
        (3u8, format!("/run/gcs/c/{id}"), false),
        (2, "/run/mounts/scsi/m1".to_string(), true),
    ] {
        c.modify_settings(
            NULL_CONTAINER_ID,
            modify(
                "MappedVirtualDisk",
                "Remove",
                json!({"MountPath": mount, "Lun": lun, "ReadOnly": ro}),
            ),
        )
        .await
        .unwrap();
    }
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
