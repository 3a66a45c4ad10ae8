//! The utility VM of a sandbox: booted on its first container, one per shim (containerd runs
//! one shim per sandbox: per container for `ctr run`, per pod for the CRI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::host::qmp::Qmp;
use crate::host::{BridgeClient, HostError, HybridVsock, StdioPorts, Uvm, UvmConfig};
use crate::protocol::messages::ModifySettingRequest;
use crate::protocol::NULL_CONTAINER_ID;

/// hcsshim's annotations for the VM's size (`pkg/annotations`): MiB of memory and vCPUs.
pub const MEMORY_ANNOTATION: &str = "io.microsoft.virtualmachine.computetopology.memory.sizeinmb";
pub const CPU_ANNOTATION: &str = "io.microsoft.virtualmachine.computetopology.processor.count";

/// The VM's memory when nothing asks for more (MiB).
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// What the VM itself needs beside a container's memory limit (MiB): the kernel, the initrd
/// (a RAM disk), the agent and the page cache of the layers.
pub const UVM_OVERHEAD_MIB: u64 = 256;
/// QEMU's `maxmem` in this harness (4 GiB) leaves room for hot-added memory; the boot size
/// stays below it.
pub const MAX_MEMORY_MIB: u64 = 3584;

/// The VM's memory (MiB) and vCPUs for a sandbox whose first container has `spec`: the
/// annotations when given; else the default, raised to the container's memory limit plus
/// [`UVM_OVERHEAD_MIB`]; capped at [`MAX_MEMORY_MIB`].
///
/// Errors: an annotation that is not a positive number.
pub fn vm_size(spec: &Value) -> Result<(u64, u32), String> {
    let annotation = |name: &str| -> Result<Option<u64>, String> {
        match spec.pointer("/annotations").and_then(|a| a.get(name)) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| format!("annotation {name}: {v} is not a positive number")),
        }
    };
    let memory = match annotation(MEMORY_ANNOTATION)? {
        Some(m) => m,
        None => {
            let limit = spec
                .pointer("/linux/resources/memory/limit")
                .and_then(Value::as_i64)
                .filter(|l| *l > 0)
                .map_or(0, |l| u64::try_from(l).unwrap_or(0).div_ceil(1 << 20));
            DEFAULT_MEMORY_MIB.max(limit + UVM_OVERHEAD_MIB)
        }
    };
    let cpus = annotation(CPU_ANNOTATION)?.unwrap_or(1);
    Ok((
        memory.min(MAX_MEMORY_MIB),
        u32::try_from(cpus.min(64)).unwrap_or(1),
    ))
}

/// The steps of an attach that were taken.
#[derive(Debug, Clone, Copy, Default)]
struct Attach {
    disk: bool,
    mounted: bool,
    combined: bool,
}

/// Where a container's layer and root are in the guest.
#[derive(Debug, Clone)]
pub struct Attached {
    pub lun: u8,
    pub layer_path: String,
    pub root: String,
    pub scratch: String,
    pub bundle: String,
}

/// A directory of this machine shared into the VM over Plan9 (`MappedDirectory`), as hcsshim
/// shares a bind mount's source with its Linux guest: its own vsock port, served by Debian's
/// `diod` (a 9P2000.L server), one process per connection the guest makes.
#[derive(Debug)]
pub struct Share {
    pub port: u32,
    /// Where the guest mounts it (hcsshim's `/mounts/m%d`).
    pub guest_path: String,
    pub export: PathBuf,
    pub read_only: bool,
    server: tokio::task::JoinHandle<()>,
    socket: PathBuf,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The first port of the Plan9 shares (the port of Hyper-V's own Plan9 server); the shim
/// gives each share the next.
pub const FIRST_PLAN9_PORT: u32 = 564;

/// Serves each connection on `listener` with `diod` exporting `export` (read-only when asked),
/// on the connection itself (`-r 0 -w 1`). The diod processes die with the task
/// (kill-on-drop) or with the thread that started them (`setpriv --pdeathsig`).
async fn serve_plan9(listener: tokio::net::UnixListener, export: PathBuf, read_only: bool) {
    let mut servers = Vec::new();
    while let Ok((stream, _)) = listener.accept().await {
        let fd = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(std::os::fd::OwnedFd::from(s))
        }) {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!("Plan9 connection for {}: {e}", export.display());
                continue;
            }
        };
        let stdin = match fd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!("Plan9 connection for {}: {e}", export.display());
                continue;
            }
        };
        let mut diod = tokio::process::Command::new("setpriv");
        diod.args([
            "--pdeathsig",
            "KILL",
            "--",
            "diod",
            "-f",
            "-n",
            "-r",
            "0",
            "-w",
            "1",
            "-L",
            "stderr",
        ]);
        if read_only {
            diod.args(["-o", "ro"]);
        }
        diod.arg("-e")
            .arg(&export)
            .stdin(std::process::Stdio::from(stdin))
            .stdout(std::process::Stdio::from(fd))
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        match diod.spawn() {
            Ok(child) => {
                servers
                    .retain_mut(|c: &mut tokio::process::Child| matches!(c.try_wait(), Ok(None)));
                servers.push(child);
            }
            Err(e) => log::warn!("diod for {} (install diod): {e}", export.display()),
        }
    }
}

/// A booted VM and what is attached to it.
#[derive(Debug)]
pub struct Sandbox {
    uvm: Arc<tokio::sync::Mutex<Option<Uvm>>>,
    pub client: Arc<BridgeClient>,
    pub vsock: HybridVsock,
    pub ports: StdioPorts,
    qmp: tokio::sync::Mutex<Qmp>,
    luns: Mutex<BTreeSet<u8>>,
    plan9_ports: std::sync::atomic::AtomicU32,
    pids: (Option<u32>, Option<u32>),
    dir: PathBuf,
}

fn modify(resource: &str, request: &str, settings: Value) -> ModifySettingRequest {
    ModifySettingRequest {
        resource_type: resource.into(),
        request_type: request.into(),
        settings: Some(settings),
    }
}

impl Sandbox {
    /// Boots the VM (QEMU under TCG, vhost-device-vsock) and negotiates the bridge. The guest's
    /// log lines go to this shim's log at debug level.
    pub async fn boot(config: &UvmConfig) -> Result<Sandbox, HostError> {
        let mut uvm = Uvm::boot(config).await?;
        let (_unused, empty) = tokio::sync::mpsc::unbounded_channel();
        let mut log = std::mem::replace(&mut uvm.log, empty);
        tokio::spawn(async move {
            while let Some(line) = log.recv().await {
                log::debug!("guest: {line}");
            }
        });
        let client = Arc::clone(&uvm.client);
        // Container notifications are not needed (exits come from WaitForProcess): drained.
        let notifications = Arc::clone(&client);
        tokio::spawn(async move {
            loop {
                match notifications
                    .next_notification(std::time::Duration::from_secs(3600))
                    .await
                {
                    Ok(n) => log::debug!("notification {n:?}"),
                    Err(HostError::Timeout) => {}
                    Err(_) => break,
                }
            }
        });
        let qmp = Qmp::connect(&uvm.qmp_socket()).await?;
        let sandbox = Sandbox {
            client,
            vsock: uvm.vsock(),
            ports: StdioPorts::default(),
            qmp: tokio::sync::Mutex::new(qmp),
            luns: Mutex::new(BTreeSet::new()),
            plan9_ports: std::sync::atomic::AtomicU32::new(FIRST_PLAN9_PORT),
            pids: uvm.pids(),
            dir: uvm.dir().to_path_buf(),
            uvm: Arc::new(tokio::sync::Mutex::new(Some(uvm))),
        };
        // A VM that dies (a guest panic, QEMU killed) takes vhost-device-vsock with it: its
        // streams close, every bridge call fails, and each process's wait ends (exit 255).
        let watched = Arc::downgrade(&sandbox.uvm);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let Some(uvm) = watched.upgrade() else { return };
                let mut guard = uvm.lock().await;
                let Some(status) = guard.as_mut().and_then(Uvm::try_wait) else {
                    if guard.is_none() {
                        return;
                    }
                    continue;
                };
                if let Some(vm) = guard.take() {
                    log::error!(
                        "the utility VM ended ({status}): {}",
                        vm.qemu_messages().trim()
                    );
                    vm.kill().await;
                }
                return;
            }
        });
        Ok(sandbox)
    }

    /// QEMU's and vhost-device-vsock's process ids.
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        self.pids
    }

    /// The VM's directory on this machine (sockets, console).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn allocate_lun(&self) -> Result<u8, HostError> {
        let mut luns = self.luns.lock().unwrap_or_else(|p| p.into_inner());
        let lun = (1..=u8::MAX)
            .find(|l| !luns.contains(l))
            .ok_or_else(|| HostError::Closed("all 255 SCSI LUNs are in use".into()))?;
        luns.insert(lun);
        Ok(lun)
    }

    fn release_lun(&self, lun: u8) {
        self.luns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lun);
    }

    /// Hot-adds `image` read-only, mounts it in the guest and combines it with a scratch into
    /// container `id`'s root, as hcsshim's host does for a one-layer image.
    pub async fn attach_rootfs(&self, id: &str, image: &Path) -> Result<Attached, HostError> {
        let lun = self.allocate_lun()?;
        let attached = Attached {
            lun,
            layer_path: format!("/run/mounts/scsi/m{lun}"),
            root: format!("/run/gcs/c/{id}/rootfs"),
            scratch: format!("/run/gcs/c/{id}/scratch/{id}"),
            bundle: format!("/run/gcs/c/{id}"),
        };
        // How far the attach got, so that a failure undoes exactly that.
        let mut done = Attach::default();
        let result = async {
            self.qmp.lock().await.add_scsi_disk(image, lun, true).await?;
            done.disk = true;
            self.client
                .modify_settings(
                    NULL_CONTAINER_ID,
                    modify(
                        "MappedVirtualDisk",
                        "Add",
                        json!({"MountPath": attached.layer_path, "Lun": lun, "ReadOnly": true, "Options": ["ro"]}),
                    ),
                )
                .await?;
            done.mounted = true;
            self.client
                .modify_settings(
                    NULL_CONTAINER_ID,
                    modify(
                        "CombinedLayers",
                        "Add",
                        json!({"ContainerID": id, "ContainerRootPath": attached.root,
                               "Layers": [{"Path": attached.layer_path}], "ScratchPath": attached.scratch}),
                    ),
                )
                .await?;
            done.combined = true;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(attached),
            Err(e) => {
                self.undo_attach(&attached, done).await;
                Err(e)
            }
        }
    }

    /// Undoes [`Sandbox::attach_rootfs`]. When the guest could not unmount the layer (a
    /// process of the container still holds it), the disk stays attached and its LUN taken:
    /// pulling it, or handing its LUN and mount path to the next container, would break both.
    pub async fn detach_rootfs(&self, a: &Attached) {
        let all = Attach {
            disk: true,
            mounted: true,
            combined: true,
        };
        self.undo_attach(a, all).await;
    }

    /// Takes back the steps of an attach that `done` says were taken, last first. The LUN is
    /// free again only once QEMU has let go of its disk (or never had it).
    async fn undo_attach(&self, a: &Attached, done: Attach) {
        let mut steps = Vec::new();
        if done.combined {
            steps.push(modify(
                "CombinedLayers",
                "Remove",
                json!({"ContainerRootPath": a.root}),
            ));
        }
        if done.mounted {
            steps.push(modify(
                "MappedVirtualDisk",
                "Remove",
                json!({"MountPath": a.layer_path, "Lun": a.lun, "ReadOnly": true}),
            ));
        }
        for step in steps {
            let what = format!("{} {}", step.resource_type, step.request_type);
            if let Err(e) = self.client.modify_settings(NULL_CONTAINER_ID, step).await {
                log::warn!(
                    "{what} of LUN {}: {e}; the disk stays attached (its layer is still in use)",
                    a.lun
                );
                return;
            }
        }
        if done.disk {
            let eject = modify("SCSIDevice", "Remove", json!({"Lun": a.lun}));
            if let Err(e) = self.client.modify_settings(NULL_CONTAINER_ID, eject).await {
                log::debug!("SCSIDevice Remove of LUN {}: {e}", a.lun);
            }
            if let Err(e) = self.qmp.lock().await.remove_scsi_disk(a.lun).await {
                log::warn!("QMP removal of LUN {}: {e}; the LUN stays taken", a.lun);
                return;
            }
        }
        self.release_lun(a.lun);
    }

    /// Shares `export` (a directory of this machine) into the VM: a port and its server here,
    /// then MappedDirectory Add in the guest at `/mounts/m<port>`.
    ///
    /// Errors: a path the agent cannot name (a ',' in it), the listener, the guest's mount.
    pub async fn add_share(&self, export: &Path, read_only: bool) -> Result<Share, HostError> {
        let name = export.to_string_lossy().into_owned();
        if name.contains(',') {
            return Err(HostError::Closed(format!(
                "{name}: a Plan9 share's path cannot contain ','"
            )));
        }
        let port = self
            .plan9_ports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let listener = self.vsock.listen(port)?;
        let share = Share {
            port,
            guest_path: format!("/mounts/m{port}"),
            export: export.to_path_buf(),
            read_only,
            server: tokio::spawn(serve_plan9(listener, export.to_path_buf(), read_only)),
            socket: self.vsock.path(port),
        };
        self.client
            .modify_settings(
                NULL_CONTAINER_ID,
                modify("MappedDirectory", "Add", share_settings(&share)),
            )
            .await?;
        Ok(share)
    }

    /// Unmounts `share` in the guest (MappedDirectory Remove) and stops its server.
    pub async fn remove_share(&self, share: Share) {
        if let Err(e) = self
            .client
            .modify_settings(
                NULL_CONTAINER_ID,
                modify("MappedDirectory", "Remove", share_settings(&share)),
            )
            .await
        {
            log::debug!("MappedDirectory Remove of {}: {e}", share.guest_path);
        }
        drop(share);
    }

    /// Stops the VM: QEMU and vhost-device-vsock are killed and reaped, the VM's directory
    /// removed. Only when no container is left (the guest's state dies with it).
    pub async fn stop(&self) {
        if let Some(uvm) = self.uvm.lock().await.take() {
            uvm.kill().await;
        }
    }
}

fn share_settings(share: &Share) -> Value {
    json!({"MountPath": share.guest_path, "Port": share.port,
           "ShareName": share.export, "ReadOnly": share.read_only})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_size_from_annotations_or_the_memory_limit() {
        assert_eq!(vm_size(&json!({})).unwrap(), (512, 1));
        let limited = json!({"linux": {"resources": {"memory": {"limit": 1_073_741_824i64}}}});
        assert_eq!(vm_size(&limited).unwrap(), (1024 + 256, 1));
        let small = json!({"linux": {"resources": {"memory": {"limit": 67_108_864i64}}}});
        assert_eq!(vm_size(&small).unwrap(), (512, 1));
        let annotated = json!({"annotations": {MEMORY_ANNOTATION: "2048", CPU_ANNOTATION: "2"}});
        assert_eq!(vm_size(&annotated).unwrap(), (2048, 2));
        let huge = json!({"annotations": {MEMORY_ANNOTATION: "999999"}});
        assert_eq!(vm_size(&huge).unwrap().0, MAX_MEMORY_MIB);
        let bad = json!({"annotations": {CPU_ANNOTATION: "two"}});
        assert!(vm_size(&bad).unwrap_err().contains(CPU_ANNOTATION));
        let zero = json!({"annotations": {MEMORY_ANNOTATION: "0"}});
        assert!(vm_size(&zero).is_err());
    }
}
