//! `containerd-shim-gcs-v2`: a containerd runtime (shim v2, `io.containerd.gcs.v2`) that runs
//! each sandbox's containers in a QEMU utility VM through this agent, over the HCS bridge.
//!
//! containerd starts the binary with the `start` action; it spawns the long-lived shim server
//! (the `containerd-shim` crate's bootstrap) and prints its ttrpc address. That server
//! implements the Task service ([`task::TaskService`]): the first Create boots the VM
//! ([`sandbox::Sandbox`]), each container's snapshot becomes a read-only layer disk
//! ([`rootfs`]), its FIFOs are relayed to the agent's vsock stdio ports ([`stdio`]), and exits
//! become containerd events. When the server is gone, containerd runs the `delete` action,
//! which kills what a record in the bundle names ([`Record`]).
//!
//! One shim, one VM: a plain container is its own sandbox; a CRI container whose
//! `io.kubernetes.cri.sandbox-id` names a pod joins its pod's shim and VM.

pub mod metrics;
pub mod rootfs;
pub mod sandbox;
pub mod spec;
pub mod stdio;
mod task;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{run, spawn, ExitSignal, Shim};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{api, Config, Error, Flags, StartOpts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The runtime's name in containerd (`ctr run --runtime io.containerd.gcs.v2`); containerd
/// finds the binary `containerd-shim-gcs-v2` on its `PATH`.
pub const RUNTIME_ID: &str = "io.containerd.gcs.v2";

/// The CRI's annotations (containerd `pkg/cri/annotations`), also those hcsshim's guest reads.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The file in a container's bundle that says what its shim started, for the `delete`
/// action when the shim is gone.
pub const RECORD_FILE: &str = "gcs-shim.json";

/// What a shim started for a container: its VM's processes and directories, and the shim
/// itself. A process is named by its pid and its start time (`/proc/<pid>/stat` field 22), so
/// that a pid the kernel has given to another process since is never taken for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub work_dir: PathBuf,
    pub vm_dir: PathBuf,
    pub qemu: Option<Started>,
    pub vhost: Option<Started>,
    pub shim: Option<Started>,
}

/// A process: its pid and its start time in clock ticks after boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub pid: u32,
    pub start: u64,
}

impl Started {
    /// `pid` as it is now, if it runs.
    pub fn of(pid: u32) -> Option<Started> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name, which is in parentheses and may hold anything.
        let rest = &stat[stat.rfind(')')? + 2..];
        let start = rest.split(' ').nth(19)?.parse().ok()?;
        Some(Started { pid, start })
    }

    /// Whether this very process still runs (a zombie, killed but not yet reaped, does not).
    pub fn alive(&self) -> bool {
        let zombie = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                let rest = stat.get(stat.rfind(')')? + 2..)?.to_string();
                rest.chars().next()
            })
            .is_some_and(|state| state == 'Z' || state == 'X');
        !zombie && Started::of(self.pid) == Some(*self)
    }
}

/// The shim grouping of the container whose OCI spec is `spec`: its pod for a CRI workload
/// container, itself otherwise.
pub fn grouping(id: &str, spec: &Value) -> String {
    match spec::role(spec) {
        spec::Role::Workload => spec
            .pointer("/annotations")
            .and_then(|a| a.get(SANDBOX_ID_ANNOTATION))
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_string(),
        _ => id.to_string(),
    }
}

fn read_spec(bundle: &Path) -> Value {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// A name a shim's temporary directory has (`tempfile`'s `.tmpXXXXXX` or `gcs-shim-XXXXXX`),
/// so that a record can never make the `delete` action remove anything else.
fn is_shim_dir(path: &Path) -> bool {
    path.is_absolute()
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".tmp") || n.starts_with("gcs-shim-"))
}

/// Kills `process` if it is still that process (not a later one with its pid).
fn kill_if_alive(process: Option<Started>) {
    let Some(p) = process.filter(Started::alive) else {
        return;
    };
    if let Ok(raw) = i32::try_from(p.pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The `delete` action's clean-up from the record in `bundle`: QEMU and vhost-device-vsock
/// killed, what a killed shim left mounted unmounted, the directories removed. A record is
/// only there for a container that was created and not yet deleted, and containerd runs the
/// action when it has given up on that container's shim (dead, or alive but unreachable): a
/// shim still running is killed first, so that no VM is left without a way to reach it.
pub fn clean_up(bundle: &Path) {
    let Ok(text) = std::fs::read(bundle.join(RECORD_FILE)) else {
        return;
    };
    let _ = std::fs::remove_file(bundle.join(RECORD_FILE));
    let Ok(record) = serde_json::from_slice::<Record>(&text) else {
        return;
    };
    kill_if_alive(record.shim);
    kill_if_alive(record.qemu);
    kill_if_alive(record.vhost);
    if is_shim_dir(&record.work_dir) {
        rootfs::remove_dir(&record.work_dir);
    }
    if is_shim_dir(&record.vm_dir) {
        let _ = std::fs::remove_dir_all(&record.vm_dir);
    }
}

#[derive(Clone)]
struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    bundle: PathBuf,
}

#[async_trait]
impl Shim for Service {
    type T = task::TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            bundle,
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let grouping = grouping(&opts.id, &read_spec(&self.bundle));
        spawn(opts, &grouping, Vec::new()).await
    }

    async fn delete_shim(&mut self) -> Result<api::DeleteResponse, Error> {
        clean_up(&self.bundle);
        let mut response = api::DeleteResponse::new();
        // As containerd's own shims answer for a task whose shim is gone: killed.
        response.exit_status = 137;
        response.exited_at = Some(containerd_shim::util::timestamp()?).into();
        Ok(response)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        task::TaskService::new(self.namespace.clone(), publisher, Arc::clone(&self.exit))
    }
}

/// The binary's entry: containerd's actions (`start`, `delete`, `-info`, `-v`) and the shim
/// server, on a two-worker runtime. The shim reaps only its own children (QEMU and the vsock
/// daemon, through tokio), so the crate's reaper and subreaper stay off.
pub fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            std::process::exit(1);
        }
    };
    let config = Config {
        no_reaper: true,
        no_sub_reaper: true,
        ..Config::default()
    };
    runtime.block_on(async {
        let served = tokio::spawn(run::<Service>(RUNTIME_ID, Some(config)));
        let _ = served.await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_cri_workload_joins_its_pod_and_anything_else_is_its_own_sandbox() {
        assert_eq!(grouping("c1", &Value::Null), "c1");
        let sandbox = json!({"annotations": {CONTAINER_TYPE_ANNOTATION: "sandbox", SANDBOX_ID_ANNOTATION: "p"}});
        assert_eq!(grouping("p", &sandbox), "p");
        let workload = json!({"annotations": {CONTAINER_TYPE_ANNOTATION: "container", SANDBOX_ID_ANNOTATION: "p"}});
        assert_eq!(grouping("c2", &workload), "p");
        let empty = json!({"annotations": {CONTAINER_TYPE_ANNOTATION: "container", SANDBOX_ID_ANNOTATION: ""}});
        assert_eq!(grouping("c3", &empty), "c3");
    }

    #[test]
    fn a_record_can_only_name_shim_directories() {
        assert!(is_shim_dir(Path::new("/tmp/.tmpAbC123")));
        assert!(is_shim_dir(Path::new("/tmp/gcs-shim-x1")));
        assert!(!is_shim_dir(Path::new("/")));
        assert!(!is_shim_dir(Path::new("/var/lib/containerd")));
        assert!(!is_shim_dir(Path::new("relative/.tmpX")));
    }

    #[test]
    fn clean_up_removes_what_the_record_names_and_nothing_else() {
        let bundle = tempfile::tempdir().unwrap();
        let work = tempfile::Builder::new()
            .prefix("gcs-shim-")
            .tempdir()
            .unwrap()
            .keep();
        let vm = tempfile::tempdir().unwrap().keep();
        let other = tempfile::Builder::new().prefix("keep-").tempdir().unwrap();
        std::fs::create_dir_all(work.join("c0")).unwrap();
        std::fs::write(work.join("c0/image.ext4"), b"x").unwrap();
        // A QEMU that is gone (its pid reused by this test process: another start time).
        let mut reused = Started::of(std::process::id()).unwrap();
        reused.start += 1;
        let record = Record {
            work_dir: work.clone(),
            vm_dir: vm.clone(),
            qemu: Some(reused),
            vhost: None,
            shim: None,
        };
        std::fs::write(
            bundle.path().join(RECORD_FILE),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        clean_up(bundle.path());
        assert!(!work.exists() && !vm.exists());
        assert!(other.path().exists());
        assert!(!bundle.path().join(RECORD_FILE).exists());
        // A shim still running (alive but out of containerd's reach) is killed with its VM.
        let mut shim = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let mut qemu = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let record = Record {
            shim: Started::of(shim.id()),
            qemu: Started::of(qemu.id()),
            ..Record::default()
        };
        std::fs::write(
            bundle.path().join(RECORD_FILE),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        clean_up(bundle.path());
        assert_eq!(shim.wait().unwrap().signal(), Some(9));
        assert_eq!(qemu.wait().unwrap().signal(), Some(9));
        assert!(!bundle.path().join(RECORD_FILE).exists());
        // A record naming another directory removes nothing.
        let hostile = Record {
            work_dir: other.path().to_path_buf(),
            ..Record::default()
        };
        std::fs::write(
            bundle.path().join(RECORD_FILE),
            serde_json::to_vec(&hostile).unwrap(),
        )
        .unwrap();
        clean_up(bundle.path());
        assert!(other.path().exists());
    }
}
