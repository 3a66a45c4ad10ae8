//! Storage requests, timed from the ModifySettings request to its response:
//! 1. on this machine (root, sandboxed agent): a VPMem layer that is a loop device, Add and
//!    Remove, against the bare `mount(2)`/`umount(2)` of the same device in this process;
//! 2. in the QEMU utility VM (TCG): a SCSI disk hot-added over QMP and then requested
//!    (`MappedVirtualDisk` Add: device discovery by uevents + mount), against the same Add for a
//!    disk that is already present (mount only), and the Remove + eject.
//!
//! Medians of 20 (host) and 12 (QEMU). Run with `make bench-storage` (needs `make test-image`).

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "benchmark code"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Agent, Loop};
use gcs::host::{Uvm, UvmConfig};
use gcs::protocol::messages::ModifySettingRequest;
use gcs::protocol::NULL_CONTAINER_ID;
use nix::mount::{mount, umount, MsFlags};
use serde_json::{json, Value};

const HOST_RUNS: usize = 20;
const VM_RUNS: usize = 12;

fn modify(resource: &str, request: &str, settings: Value) -> ModifySettingRequest {
    ModifySettingRequest {
        resource_type: resource.into(),
        request_type: request.into(),
        settings: Some(settings),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn timed(client: &gcs::host::BridgeClient, m: ModifySettingRequest) -> Duration {
    let start = Instant::now();
    client.modify_settings(NULL_CONTAINER_ID, m).await.unwrap();
    start.elapsed()
}

fn layer(dir: &Path) -> std::path::PathBuf {
    let tree = gcs::host::layers::busybox_tree(dir).unwrap();
    let image = dir.join("busybox.ext4");
    gcs::host::layers::ext4_image(&image, Some(&tree), "16M").unwrap();
    image
}

async fn host_loop_layer(work: &Path) {
    let image = layer(work);
    let lo = Loop::attach(&image, true);
    // Reference: the bare mount and unmount of the same device, in this process.
    let target = work.join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    let (mut bare_mount, mut bare_umount) = (Vec::new(), Vec::new());
    for _ in 0..HOST_RUNS {
        let t = Instant::now();
        mount(
            Some(&lo.dev),
            &target,
            Some("ext4"),
            MsFlags::MS_RDONLY,
            Some("noload"),
        )
        .unwrap();
        bare_mount.push(t.elapsed());
        let t = Instant::now();
        umount(&target).unwrap();
        bare_umount.push(t.elapsed());
    }
    let agent = Agent::sandboxed_with_devices(&[], &lo.node("pmem0")).await;
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for _ in 0..HOST_RUNS {
        let settings = json!({"MountPath": "/run/layers/p0"});
        add.push(
            timed(
                &agent.client,
                modify("VPMemDevice", "Add", settings.clone()),
            )
            .await,
        );
        remove.push(timed(&agent.client, modify("VPMemDevice", "Remove", settings)).await);
    }
    let (add, remove) = (median(add), median(remove));
    let (bm, bu) = (median(bare_mount), median(bare_umount));
    println!("host, VPMem layer on a loop device (median of {HOST_RUNS}):");
    println!(
        "  Add    request→response {:7.3} ms   bare mount(2)  {:7.3} ms   ratio {:.2}",
        ms(add),
        ms(bm),
        add.as_secs_f64() / bm.as_secs_f64()
    );
    println!(
        "  Remove request→response {:7.3} ms   bare umount(2) {:7.3} ms   ratio {:.2}",
        ms(remove),
        ms(bu),
        remove.as_secs_f64() / bu.as_secs_f64()
    );
}

async fn vm_scsi_hot_add(work: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let image = layer(work);
    let uvm = Uvm::boot(&UvmConfig::new(
        root.join("out/kernel/vmlinux"),
        root.join("out/test-initrd.img"),
    ))
    .await
    .unwrap();
    let mut qmp = gcs::host::qmp::Qmp::connect(&uvm.qmp_socket())
        .await
        .unwrap();
    let settings =
        json!({"MountPath": "/run/mounts/scsi/m0", "Lun": 1, "ReadOnly": true, "Options": ["ro"]});
    let (mut hot, mut present, mut remove) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..VM_RUNS {
        qmp.add_scsi_disk(&image, 1, true).await.unwrap();
        hot.push(
            timed(
                &uvm.client,
                modify("MappedVirtualDisk", "Add", settings.clone()),
            )
            .await,
        );
        // The same request again for the disk now present: mount only.
        timed(
            &uvm.client,
            modify("MappedVirtualDisk", "Remove", settings.clone()),
        )
        .await;
        present.push(
            timed(
                &uvm.client,
                modify("MappedVirtualDisk", "Add", settings.clone()),
            )
            .await,
        );
        let t = Instant::now();
        uvm.client
            .modify_settings(
                NULL_CONTAINER_ID,
                modify("MappedVirtualDisk", "Remove", settings.clone()),
            )
            .await
            .unwrap();
        uvm.client
            .modify_settings(
                NULL_CONTAINER_ID,
                modify("SCSIDevice", "Remove", json!({"Lun": 1})),
            )
            .await
            .unwrap();
        remove.push(t.elapsed());
        qmp.remove_scsi_disk(1).await.unwrap();
    }
    let (hot, present, remove) = (median(hot), median(present), median(remove));
    println!("QEMU (TCG), SCSI disk (median of {VM_RUNS}):");
    println!(
        "  hot-added, then MappedVirtualDisk Add: {:7.2} ms  (device already present: {:7.2} ms; \
         ratio {:.2}; the difference is discovery)",
        ms(hot),
        ms(present),
        hot.as_secs_f64() / present.as_secs_f64()
    );
    println!(
        "  MappedVirtualDisk Remove + SCSIDevice Remove (eject): {:7.2} ms",
        ms(remove)
    );
    assert!(uvm.shutdown().await.unwrap().success());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let work = tempfile::tempdir().unwrap();
    host_loop_layer(work.path()).await;
    vm_scsi_hot_add(work.path()).await;
}
