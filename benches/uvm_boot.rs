//! The utility VM under TCG on this machine: median of 5 boots of kernel start → the agent's
//! first log line → bridge connected → NegotiateProtocol answered, and container start (Create
//! to the init's exit) in each; the agent's RSS in the guest after boot and after 10 containers;
//! image sizes. Run with `make bench-uvm` (needs `make test-image`).

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "benchmark code"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gcs::host::qmp::Qmp;
use gcs::host::{StdioPorts, Uvm, UvmConfig};
use gcs::protocol::messages::*;
use gcs::protocol::{INFINITE_WAIT, NULL_CONTAINER_ID};
use serde_json::json;
use tokio::io::AsyncReadExt;

const BOOTS: usize = 5;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn busybox_layer(dir: &Path) -> PathBuf {
    let tree = gcs::host::layers::busybox_tree(dir).unwrap();
    let image = dir.join("busybox.ext4");
    gcs::host::layers::ext4_image(&image, Some(&tree), "16M").unwrap();
    image
}

fn modify(resource: &str, request: &str, settings: serde_json::Value) -> ModifySettingRequest {
    ModifySettingRequest {
        resource_type: resource.into(),
        request_type: request.into(),
        settings: Some(settings),
    }
}

/// Create → Start → init → exit of a `true` container on the layer mounted at m0.
async fn container(uvm: &Uvm, id: &str) -> Duration {
    let c = &uvm.client;
    let root = format!("/run/gcs/c/{id}/rootfs");
    c.modify_settings(NULL_CONTAINER_ID, modify("CombinedLayers", "Add", json!({"ContainerID": id, "ContainerRootPath": root,
        "Layers": [{"Path": "/run/mounts/scsi/m0"}], "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")})))
        .await
        .unwrap();
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(gcs::host::spec::container_spec(
            &["true".into()],
            &root,
            false,
        )),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    };
    let t = Instant::now();
    c.create_container(id, &settings).await.unwrap();
    c.start_container(id).await.unwrap();
    let pid = c
        .execute_process(
            id,
            &ProcessParameters::default(),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap();
    assert_eq!(c.wait_for_process(id, pid, INFINITE_WAIT).await.unwrap(), 0);
    let elapsed = t.elapsed();
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
    elapsed
}

/// The agent's RSS inside the guest, in KiB (`GCS_BENCH_BOOT_LOG=1`: its mappings on stderr).
async fn guest_rss(uvm: &Uvm, ports: &StdioPorts) -> String {
    if std::env::var_os("GCS_BENCH_BOOT_LOG").is_some() {
        let maps = "awk '/^[0-9a-f]+-/ {m=$0} /^(Rss|Anonymous):/ && $2 > 0 {print $1, $2, m}' /proc/$(pidof gcs)/smaps";
        eprintln!("{}", guest_output(uvm, ports, maps).await);
    }
    let out = guest_output(uvm, ports, "grep VmRSS /proc/$(pidof gcs)/status").await;
    out.split_whitespace().nth(1).unwrap_or("?").to_string()
}

/// The guest's side of the boot, from its kernel log: when our init started, how long its
/// module loading took, and when the agent answered NegotiateProtocol (its kmsg marker), all by
/// the guest's clock since the kernel started.
#[derive(Debug, Default, Clone, Copy)]
struct GuestBoot {
    init_started: Duration,
    /// The vsock transports, loaded before the agent starts.
    bridge_modules: Duration,
    /// The rest, loaded while the agent starts (other requests wait for them).
    other_modules: Duration,
    negotiated: Duration,
}

async fn guest_boot(uvm: &Uvm, ports: &StdioPorts) -> GuestBoot {
    let log = guest_output(uvm, ports, "dmesg").await;
    let stamp = |line: &str| -> Option<Duration> {
        let t = line.strip_prefix('[')?.split(']').next()?.trim();
        Some(Duration::from_secs_f64(t.parse().ok()?))
    };
    let mut boot = GuestBoot::default();
    for line in log.lines() {
        if let Some(rest) = line.split("init: started at ").nth(1) {
            let secs = rest.split_whitespace().next().and_then(|s| s.parse().ok());
            boot.init_started = Duration::from_secs_f64(secs.unwrap_or(0.0));
        } else if line.contains(" kernel modules (") {
            let ms = line
                .rsplit(" in ")
                .next()
                .and_then(|r| r.trim_end_matches(" ms").parse().ok());
            let took = Duration::from_millis(ms.unwrap_or(0));
            if line.contains("(the bridge's)") {
                boot.bridge_modules = took;
            } else {
                boot.other_modules = took;
            }
        } else if line.contains("gcs: NegotiateProtocol answered") {
            boot.negotiated = stamp(line).unwrap_or_default();
        }
    }
    if std::env::var_os("GCS_BENCH_BOOT_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(
        boot.negotiated > Duration::ZERO,
        "no boot markers in the guest's kernel log:\n{log}"
    );
    boot
}

/// What `sh -c script` prints to stdout in the guest.
async fn guest_output(uvm: &Uvm, ports: &StdioPorts, script: &str) -> String {
    let port = ports.allocate();
    let listener = uvm.vsock().listen(port).unwrap();
    let params = ProcessParameters {
        command_args: ["sh", "-c", script].map(String::from).to_vec(),
        environment: Some([("PATH".to_string(), "/bin".to_string())].into()),
        create_std_out_pipe: true,
        ..Default::default()
    };
    let pid = uvm
        .client
        .execute_process(
            NULL_CONTAINER_ID,
            &params,
            VsockStdioRelaySettings {
                std_out: port,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (mut s, _) = listener.accept().await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    uvm.client
        .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
        .await
        .unwrap();
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let (kernel, initrd) = (
        root().join("out/kernel/vmlinux"),
        root().join("out/test-initrd.img"),
    );
    assert!(
        kernel.exists() && initrd.exists(),
        "run `make test-image` first"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let layer = busybox_layer(work.path());
    let (mut first, mut bridge, mut negotiated, mut starts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut kernel_share, mut agent_share, mut modules, mut other_modules, mut host_share) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut first_request = Vec::new();
    let mut rss = (String::new(), String::new());
    for boot in 0..BOOTS {
        rt.block_on(async {
            let uvm = Uvm::boot(&UvmConfig::new(&kernel, &initrd)).await.unwrap();
            first.push(uvm.timings.first_log_line.unwrap_or_default());
            bridge.push(uvm.timings.bridge_connected);
            negotiated.push(uvm.timings.negotiated);
            let ports = StdioPorts::default();
            let asked = std::time::Instant::now();
            let guest = guest_boot(&uvm, &ports).await;
            first_request.push(asked.elapsed());
            kernel_share.push(guest.init_started);
            agent_share.push(guest.negotiated.saturating_sub(guest.init_started));
            modules.push(guest.bridge_modules);
            other_modules.push(guest.other_modules);
            host_share.push(uvm.timings.negotiated.saturating_sub(guest.negotiated));
            if boot == 0 {
                rss.0 = guest_rss(&uvm, &ports).await;
            }
            let mut qmp = Qmp::connect(&uvm.qmp_socket()).await.unwrap();
            qmp.add_scsi_disk(&layer, 1, true).await.unwrap();
            uvm.client
                .modify_settings(NULL_CONTAINER_ID, modify("MappedVirtualDisk", "Add", json!({"MountPath": "/run/mounts/scsi/m0", "Lun": 1, "ReadOnly": true, "Options": ["ro"]})))
                .await
                .unwrap();
            starts.push(container(&uvm, "bench-0").await);
            if boot == 0 {
                for i in 1..=10 {
                    container(&uvm, &format!("bench-{i}")).await;
                }
                rss.1 = guest_rss(&uvm, &ports).await;
            }
            uvm.shutdown().await.unwrap();
        });
    }
    let size = |p: &str| {
        std::fs::metadata(root().join(p))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    println!("median of {BOOTS} boots under TCG (from QEMU start):");
    println!("  agent's first log line: {:?}", median(first));
    println!("  bridge connected:       {:?}", median(bridge));
    println!("  NegotiateProtocol done: {:?}", median(negotiated));
    println!("  container Create..exit: {:?}", median(starts));
    println!("the guest's own clock (its kernel log), median of {BOOTS}:");
    println!(
        "  kernel, to our init's first instruction:      {:?}",
        median(kernel_share)
    );
    println!(
        "  the agent's share, init to NegotiateProtocol: {:?}",
        median(agent_share)
    );
    println!(
        "    of which loading the bridge's modules:     {:?}",
        median(modules)
    );
    println!(
        "  the other modules, loaded meanwhile (requests but NegotiateProtocol wait): {:?}",
        median(other_modules)
    );
    println!(
        "  the first request after NegotiateProtocol (a UVM exec), answered in: {:?}",
        median(first_request)
    );
    println!(
        "  before the guest's clock (QEMU, firmware) and the host's side: {:?}",
        median(host_share)
    );
    println!(
        "agent RSS in the guest: {} KiB after boot, {} KiB after 11 containers",
        rss.0, rss.1
    );
    println!(
        "out/initrd.img: {} bytes; out/test-initrd.img: {} bytes",
        size("out/initrd.img"),
        size("out/test-initrd.img")
    );
}
