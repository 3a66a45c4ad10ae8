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
