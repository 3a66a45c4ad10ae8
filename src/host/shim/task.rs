//! The Task service (containerd `runtime/v2/task/shim.proto`) over the bridge.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Context, Task, TtrpcContext, TtrpcResult};
use serde_json::{json, Value};
use tokio::sync::{watch, OnceCell};

use super::rootfs::{self, RootfsMount};
use super::sandbox::{self, Attached, Sandbox, Share};
use super::stdio::{Relay, StdioPaths};
use super::{Record, Started, RECORD_FILE};
use crate::host::{HostError, UvmConfig};
use crate::protocol::messages::{ContainerSettings, ProcessParameters, SchemaVersion};
use crate::protocol::INFINITE_WAIT;

/// How long an exit waits for the process's output to be copied out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

fn status(code: Code, message: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.to_string()))
}

fn host_error(what: &str, e: HostError) -> ttrpc::Error {
    match &e {
        // The guest's "no such process" (ERROR_NOT_FOUND): containerd tolerates NOT_FOUND
        // from a Kill that raced the exit, and nothing else.
        HostError::Guest {
            hresult, message, ..
        } if *hresult == crate::protocol::Hresult::NOT_FOUND => {
            status(Code::NOT_FOUND, format!("{what}: {message}"))
        }
        HostError::Guest { message, .. } => status(Code::UNKNOWN, format!("{what}: {message}")),
        _ => {
            // The whole chain: "bridge i/o" alone would hide a missing kernel or program.
            let mut text = format!("{what}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            status(Code::UNAVAILABLE, text)
        }
    }
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

/// The time of each step of a container's life, logged at info level as
/// `timing <container> <phase> <microseconds>` (the containerd benchmark reads them).
struct Phases<'a> {
    id: &'a str,
    last: std::time::Instant,
}

impl<'a> Phases<'a> {
    fn new(id: &'a str) -> Self {
        Phases {
            id,
            last: std::time::Instant::now(),
        }
    }

    fn done(&mut self, phase: &str) {
        let now = std::time::Instant::now();
        log::info!(
            "timing {} {phase} {}",
            self.id,
            now.duration_since(self.last).as_micros()
        );
        self.last = now;
    }
}

/// A process's state (containerd's `Status`).
#[derive(Debug, Clone, Default)]
enum Phase {
    #[default]
    Created,
    Running,
    Stopped {
        exit_status: u32,
        exited_at: Timestamp,
    },
}

#[derive(Debug, Default)]
struct ProcState {
    pid: u32,
    phase: Phase,
    relay: Option<Relay>,
    /// The guest's exit status, known while the output is still being copied out (the
    /// process is Running to containerd until then, but can no longer be signalled).
    exit_code: Option<u32>,
}

/// A container's init (`exec_id` empty) or one of its execs.
#[derive(Debug)]
struct Proc {
    exec_id: String,
    stdio: StdioPaths,
    /// The OCI process of an exec (`None` for the init, which runs the spec's).
    oci_process: Option<Value>,
    state: Mutex<ProcState>,
    exited: watch::Sender<bool>,
    /// Start, Kill and Delete of this process, one at a time (a Kill waits for a Start).
    op: tokio::sync::Mutex<()>,
}

impl Proc {
    fn new(exec_id: &str, stdio: StdioPaths, oci_process: Option<Value>) -> Arc<Proc> {
        Arc::new(Proc {
            exec_id: exec_id.to_string(),
            stdio,
            oci_process,
            state: Mutex::new(ProcState::default()),
            exited: watch::channel(false).0,
            op: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot(&self) -> (u32, Phase) {
        let s = self.lock();
        (s.pid, s.phase.clone())
    }

    /// Records the exit (once) and wakes the waiters; its time, or `None` when the exit was
    /// recorded already.
    fn set_exited(&self, exit_status: u32) -> Option<Timestamp> {
        let mut s = self.lock();
        if matches!(s.phase, Phase::Stopped { .. }) {
            return None;
        }
        let exited_at = now();
        s.phase = Phase::Stopped {
            exit_status,
            exited_at: exited_at.clone(),
        };
        s.relay = None;
        drop(s);
        self.exited.send_replace(true);
        Some(exited_at)
    }
}

/// What a Create made: undone in reverse when a later step fails, and at Delete.
struct Made {
    dir: PathBuf,
    attached: Option<Attached>,
    shares: Vec<Share>,
}

impl Made {
    async fn undo(self, sb: &Sandbox, id: &str) {
        // The root first (the agent keeps a container while its root is mounted), then the
        // container's state if it was created, then its shares.
        if let Some(a) = &self.attached {
            sb.detach_rootfs(a).await;
            if let Err(e) = sb.client.delete_container_state(id).await {
                log::debug!("DeleteContainerState {id}: {e}");
            }
        }
        for share in self.shares {
            sb.remove_share(share).await;
        }
        remove_dir(self.dir).await;
    }
}

#[derive(Debug)]
struct Container {
    id: String,
    bundle: String,
    dir: PathBuf,
    attached: Attached,
    shares: Mutex<Vec<Share>>,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
}

impl Container {
    fn process(&self, exec_id: &str) -> TtrpcResult<Arc<Proc>> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&self.init));
        }
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                status(
                    Code::NOT_FOUND,
                    format!("exec {exec_id} of container {} does not exist", self.id),
                )
            })
    }
}

/// The shim's state: one VM, its containers and their processes.
struct Inner {
    namespace: String,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    work: Mutex<Option<tempfile::TempDir>>,
    work_path: PathBuf,
    /// Ids of the Creates under way, and whether a Delete has cancelled each (containerd
    /// deletes a task whose Create it gave up on, while the Create still runs here).
    creating: Mutex<HashMap<String, bool>>,
    sandbox: OnceCell<Arc<Sandbox>>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    next_dir: std::sync::atomic::AtomicU64,
}

/// The shim's Task service. ttrpc drops a request's future when the request's deadline
/// passes or containerd disconnects; each request therefore runs as a task of its own, which
/// finishes what it started (a Create's attach or undo, a QMP exchange, the VM's stop)
/// whatever becomes of the request.
pub struct TaskService {
    inner: Arc<Inner>,
}

impl TaskService {
    pub fn new(namespace: String, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        TaskService {
            inner: Arc::new(Inner::new(namespace, publisher, exit)),
        }
    }
}

/// [`rootfs::remove_dir`] (it runs umount(8)) off the runtime's workers.
async fn remove_dir(dir: PathBuf) {
    let _ = tokio::task::spawn_blocking(move || rootfs::remove_dir(&dir)).await;
}

/// Runs `work` as a task of its own and waits for it (see [`TaskService`]).
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = TtrpcResult<T>> + Send + 'static,
) -> TtrpcResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| status(Code::INTERNAL, format!("request task: {e}")))?
}

impl Inner {
    fn new(namespace: String, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Self {
        let work = tempfile::Builder::new().prefix("gcs-shim-").tempdir().ok();
        let work_path = work
            .as_ref()
            .map(|w| w.path().to_path_buf())
            .unwrap_or_default();
        Inner {
            namespace,
            publisher: Arc::new(publisher),
            exit,
            work: Mutex::new(work),
            work_path,
            creating: Mutex::new(HashMap::new()),
            sandbox: OnceCell::new(),
            containers: Mutex::new(HashMap::new()),
            next_dir: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn creating_is_empty(&self) -> bool {
        self.creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        self.containers()
            .get(id)
            .cloned()
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {id} does not exist")))
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await
        {
            log::warn!("publish {topic}: {e}");
        }
    }

    /// The VM, once booted.
    fn vm(&self) -> TtrpcResult<Arc<Sandbox>> {
        self.sandbox
            .get()
            .cloned()
            .ok_or_else(|| status(Code::FAILED_PRECONDITION, "the VM is not running"))
    }

    /// The VM, booted on the first call with the size `spec` asks for.
    async fn sandbox(&self, spec: &Value) -> TtrpcResult<Arc<Sandbox>> {
        self.sandbox
            .get_or_try_init(|| async {
                let (memory, cpus) =
                    sandbox::vm_size(spec).map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
                let image = |var: &str, rel: &str| {
                    std::env::var_os(var)
                        .map(PathBuf::from)
                        .unwrap_or_else(|| UvmConfig::default_image_path(rel))
                };
                let mut config = UvmConfig::new(
                    image("GCS_SHIM_KERNEL", "kernel/vmlinux"),
                    image("GCS_SHIM_INITRD", "test-initrd.img"),
                );
                config.memory_mib = u32::try_from(memory).unwrap_or(u32::MAX);
                config.cpus = cpus;
                if let Ok(accel) = std::env::var("GCS_SHIM_ACCEL") {
                    config.accel = accel;
                }
                config.die_with_parent = true;
                // The guest logs at info unless asked otherwise: under TCG every debug line
                // costs the guest time.
                let level =
                    std::env::var("GCS_SHIM_GUEST_LOGLEVEL").unwrap_or_else(|_| "info".into());
                if let Some(i) = config.gcs_args.iter().position(|a| a == "-loglevel") {
                    config.gcs_args[i + 1] = level;
                }
                let sb = Sandbox::boot(&config)
                    .await
                    .map_err(|e| host_error("boot the utility VM", e))?;
                Ok(Arc::new(sb))
            })
            .await
            .cloned()
    }

    fn write_record(&self, bundle: &Path, sb: &Sandbox) {
        let (qemu, vhost) = sb.pids();
        let record = Record {
            work_dir: self.work_path.clone(),
            vm_dir: sb.dir().to_path_buf(),
            qemu: qemu.and_then(Started::of),
            vhost: vhost.and_then(Started::of),
            shim: Started::of(std::process::id()),
        };
        if let Ok(text) = serde_json::to_vec(&record) {
            if let Err(e) = std::fs::write(bundle.join(RECORD_FILE), text) {
                log::warn!("write {}: {e}", bundle.join(RECORD_FILE).display());
            }
        }
    }

    async fn create_inner(&self, req: &api::CreateTaskRequest) -> TtrpcResult<Arc<Container>> {
        if !req.checkpoint.is_empty() {
            return Err(status(
                Code::UNIMPLEMENTED,
                "restoring a checkpoint is not supported",
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let mut spec: Value = std::fs::read(bundle.join("config.json"))
            .map_err(|e| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("read the bundle's config.json: {e}"),
                )
            })
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| status(Code::INVALID_ARGUMENT, format!("config.json: {e}")))
            })?;
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sandbox_pid = spec
            .pointer("/annotations")
            .and_then(|a| a.get(super::SANDBOX_ID_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|id| self.containers().get(id).map(|c| c.init.snapshot().0))
            .filter(|pid| *pid != 0);
        let binds = super::spec::for_guest(&mut spec, &hostname, sandbox_pid)
            .map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
        if !self.work_path.is_absolute() {
            return Err(status(
                Code::INTERNAL,
                "the shim has no directory of its own (TMPDIR not writable)",
            ));
        }
        let mut phases = Phases::new(&req.id);
        let sb = self.sandbox(&spec).await?;
        phases.done("boot");

        let index = self
            .next_dir
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut made = Made {
            dir: self.work_path.join(format!("c{index}")),
            attached: None,
            shares: Vec::new(),
        };
        std::fs::create_dir_all(&made.dir)
            .map_err(|e| status(Code::INTERNAL, format!("{}: {e}", made.dir.display())))?;
        if let Err(e) = self
            .create_in_vm(req, &sb, spec, &binds, &mut made, &mut phases)
            .await
        {
            made.undo(&sb, &req.id).await;
            return Err(e);
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let Made {
            dir,
            attached,
            shares,
        } = made;
        let attached = attached.ok_or_else(|| status(Code::INTERNAL, "no rootfs attached"))?;
        Ok(Arc::new(Container {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            dir,
            attached,
            shares: Mutex::new(shares),
            init: Proc::new("", stdio, None),
            execs: Mutex::new(HashMap::new()),
        }))
    }

    /// The container's root (rootfs.rs says why an image), its bind mounts' shares, then
    /// Create and Start on the bridge; what it made is in `made` for the caller to undo.
    async fn create_in_vm(
        &self,
        req: &api::CreateTaskRequest,
        sb: &Sandbox,
        mut spec: Value,
        binds: &[super::spec::HostBind],
        made: &mut Made,
        phases: &mut Phases<'_>,
    ) -> TtrpcResult<()> {
        let mounts: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let root_path = spec
            .pointer("/root/path")
            .and_then(Value::as_str)
            .unwrap_or("rootfs");
        let root = PathBuf::from(&req.bundle).join(root_path);
        let image = made.dir.join("rootfs.ext4");
        let root_error =
            |e: &dyn std::fmt::Display| status(Code::INTERNAL, format!("container root: {e}"));
        let (dir, target) = (made.dir.clone(), image.clone());
        tokio::task::spawn_blocking(move || rootfs::build_image(&mounts, &root, &dir, &target))
            .await
            .map_err(|e| root_error(&e))?
            .map_err(|e| root_error(&e))?;
        phases.done("rootfs");
        let attached = sb
            .attach_rootfs(&req.id, &image)
            .await
            .map_err(|e| host_error("attach the container's root", e))?;
        spec["root"] = json!({"path": attached.root, "readonly": spec.pointer("/root/readonly").cloned().unwrap_or(json!(false))});
        made.attached = Some(attached.clone());
        phases.done("attach");

        for (n, bind) in binds.iter().enumerate() {
            let meta = std::fs::metadata(&bind.source).map_err(|e| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("bind mount source {}: {e}", bind.source.display()),
                )
            })?;
            // A file is shared as the only entry of a directory of its own (hcsshim shares a
            // file's directory restricted to that file): nothing beside it reaches the VM.
            let (export, inside) = if meta.is_dir() {
                (bind.source.clone(), None)
            } else if meta.is_file() {
                let dir = made.dir.join(format!("share{n}"));
                let name = bind
                    .source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "file".into());
                std::fs::create_dir_all(&dir)
                    .map_err(|e| status(Code::INTERNAL, format!("{}: {e}", dir.display())))?;
                let (source, target) = (bind.source.clone(), dir.join(&name));
                tokio::task::spawn_blocking(move || rootfs::bind_file(&source, &target))
                    .await
                    .map_err(|e| status(Code::INTERNAL, e.to_string()))?
                    .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
                (dir, Some(name))
            } else {
                return Err(status(
                    Code::INVALID_ARGUMENT,
                    format!(
                        "bind mount source {}: only directories and regular files can be shared \
                         into the VM",
                        bind.source.display()
                    ),
                ));
            };
            let share = sb
                .add_share(&export, bind.read_only)
                .await
                .map_err(|e| host_error(&format!("share {}", bind.source.display()), e))?;
            let source = match inside {
                Some(name) => format!("{}/{name}", share.guest_path),
                None => share.guest_path.clone(),
            };
            spec["mounts"][bind.index]["source"] = json!(source);
            made.shares.push(share);
        }

        if req.terminal {
            spec["process"]["terminal"] = json!(true);
        }
        let settings = ContainerSettings {
            schema_version: SchemaVersion { major: 2, minor: 1 },
            oci_bundle_path: attached.bundle.clone(),
            oci_specification: Some(spec),
            scratch_dir_path: attached.scratch.clone(),
        };
        sb.client
            .create_container(&req.id, &settings)
            .await
            .map_err(|e| host_error("create the container", e))?;
        let started = sb.client.start_container(&req.id).await;
        phases.done("create");
        started.map_err(|e| host_error("create the container", e))
    }

    /// Runs `proc` in container `c` and starts waiting for its exit.
    async fn start_process(&self, c: &Arc<Container>, proc: &Arc<Proc>) -> TtrpcResult<u32> {
        let _op = proc.op.lock().await;
        if !matches!(proc.snapshot().1, Phase::Created) {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("process {} of {} was started already", proc.exec_id, c.id),
            ));
        }
        let sb = self.vm()?;
        let mut relay = Relay::start(&sb.vsock, &sb.ports, &proc.stdio)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("stdio: {e}")))?;
        let params = ProcessParameters {
            create_std_in_pipe: relay.settings.std_in != 0,
            create_std_out_pipe: relay.settings.std_out != 0,
            create_std_err_pipe: relay.settings.std_err != 0,
            oci_process: proc.oci_process.clone(),
            ..Default::default()
        };
        let mut phases = Phases::new(&c.id);
        let pid = sb
            .client
            .execute_process(&c.id, &params, relay.settings)
            .await
            .map_err(|e| host_error("start the process", e))?;
        phases.done("start");
        let outputs = relay.take_outputs();
        {
            let mut s = proc.lock();
            s.pid = pid;
            s.phase = Phase::Running;
            s.relay = Some(relay);
        }
        let (client, cid, p) = (Arc::clone(&sb.client), c.id.clone(), Arc::clone(proc));
        let publisher = Arc::clone(&self.publisher);
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            let code = match client.wait_for_process(&cid, pid, INFINITE_WAIT).await {
                Ok(code) => code,
                Err(e) => {
                    log::warn!("wait for process {pid} of {cid}: {e}");
                    255
                }
            };
            p.lock().exit_code = Some(code);
            // The output the guest still sends, for a while; a copy still running then (a
            // process of the container that kept the stream open) is stopped.
            let aborts: Vec<_> = outputs.iter().map(|t| t.abort_handle()).collect();
            let drained = futures_util::future::join_all(outputs);
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained).await;
            for a in aborts {
                a.abort();
            }
            if let Some(exited_at) = p.set_exited(code) {
                let event = TaskExit {
                    container_id: cid.clone(),
                    id: if p.exec_id.is_empty() {
                        cid.clone()
                    } else {
                        p.exec_id.clone()
                    },
                    pid,
                    exit_status: code,
                    exited_at: Some(exited_at).into(),
                    ..Default::default()
                };
                if let Err(e) = publisher
                    .publish(
                        Context::default(),
                        topics::TASK_EXIT_EVENT_TOPIC,
                        &namespace,
                        Box::new(event),
                    )
                    .await
                {
                    log::warn!("publish exit of {cid}: {e}");
                }
            }
        });
        Ok(pid)
    }

    /// Removes container `c` from the VM and this machine; its init has exited or never ran.
    async fn remove_container(&self, c: &Arc<Container>) {
        let shares = std::mem::take(&mut *c.shares.lock().unwrap_or_else(|p| p.into_inner()));
        let made = Made {
            dir: c.dir.clone(),
            attached: Some(c.attached.clone()),
            shares,
        };
        match self.sandbox.get() {
            Some(sb) => {
                if matches!(c.init.snapshot().1, Phase::Created) {
                    let _ = sb.client.shutdown_forced(&c.id).await;
                }
                made.undo(sb, &c.id).await;
            }
            None => remove_dir(made.dir).await,
        }
        let _ = std::fs::remove_file(Path::new(&c.bundle).join(RECORD_FILE));
    }

    /// Stops the VM and lets the server exit; only when no container is left.
    async fn stop(&self) {
        if let Some(sb) = self.sandbox.get() {
            let mut phases = Phases::new("vm");
            sb.stop().await;
            phases.done("stop");
        }
        // Removed only when nothing is mounted in it (never through a mount).
        let work = self.work.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(work) = work {
            remove_dir(work.keep()).await;
        }
        self.exit.signal();
    }
}

fn phase_status(phase: &Phase) -> api::Status {
    match phase {
        Phase::Created => api::Status::CREATED,
        Phase::Running => api::Status::RUNNING,
        Phase::Stopped { .. } => api::Status::STOPPED,
    }
}

impl Inner {
    async fn create(&self, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        // The id is taken before the first await: a second Create of it is refused, never
        // run alongside (its undo would take the first one's state).
        {
            let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            if self.containers().contains_key(&req.id) || creating.contains_key(&req.id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("container {} exists", req.id),
                ));
            }
            creating.insert(req.id.clone(), false);
        }
        let created = self.create_inner(&req).await;
        // Published only if no Delete cancelled it meanwhile (checked and done under the one
        // lock a Delete of a Create under way takes); the record goes with it.
        let cancelled = {
            let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            let cancelled = creating.remove(&req.id).unwrap_or(false);
            if let (Ok(c), false) = (&created, cancelled) {
                self.containers().insert(req.id.clone(), Arc::clone(c));
                if let Some(sb) = self.sandbox.get() {
                    self.write_record(Path::new(&req.bundle), sb);
                }
            }
            cancelled
        };
        if cancelled {
            if let Ok(c) = &created {
                self.remove_container(c).await;
            }
            if self.containers().is_empty() && self.creating_is_empty() {
                self.stop().await;
            }
            return Err(status(
                Code::CANCELLED,
                format!("container {} was deleted while it was created", req.id),
            ));
        }
        created?;
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid: 0,
            ..Default::default()
        };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(api::CreateTaskResponse {
            pid: 0,
            ..Default::default()
        })
    }

    async fn start(&self, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let pid = self.start_process(&c, &proc).await?;
        if req.exec_id.is_empty() {
            let event = TaskStart {
                container_id: c.id.clone(),
                pid,
                ..Default::default()
            };
            self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event))
                .await;
        } else {
            let event = TaskExecStarted {
                container_id: c.id.clone(),
                exec_id: req.exec_id.clone(),
                pid,
                ..Default::default()
            };
            self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
                .await;
        }
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let (pid, phase) = proc.snapshot();
        let mut r = api::StateResponse {
            id: if req.exec_id.is_empty() {
                c.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.clone(),
            pid,
            stdin: proc.stdio.stdin.clone(),
            stdout: proc.stdio.stdout.clone(),
            stderr: proc.stdio.stderr.clone(),
            terminal: proc.stdio.terminal,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        r.status = phase_status(&phase).into();
        if let Phase::Stopped {
            exit_status,
            exited_at,
        } = phase
        {
            r.exit_status = exit_status;
            r.exited_at = Some(exited_at).into();
        }
        Ok(r)
    }

    async fn exec(&self, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        if !matches!(c.init.snapshot().1, Phase::Running) {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running", c.id),
            ));
        }
        let mut process: Value = req
            .spec
            .as_ref()
            .map(|any| serde_json::from_slice(&any.value))
            .transpose()
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("exec process spec: {e}")))?
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        process["terminal"] = json!(req.terminal);
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        {
            let mut execs = c.execs.lock().unwrap_or_else(|p| p.into_inner());
            if execs.contains_key(&req.exec_id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("exec {} of {} exists", req.exec_id, c.id),
                ));
            }
            execs.insert(
                req.exec_id.clone(),
                Proc::new(&req.exec_id, stdio, Some(process)),
            );
        }
        let event = TaskExecAdded {
            container_id: c.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(api::Empty::new())
    }

    async fn kill(&self, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let signal = i32::try_from(req.signal)
            .map_err(|_| status(Code::INVALID_ARGUMENT, format!("signal {}", req.signal)))?;
        let _op = proc.op.lock().await;
        let (pid, phase) = proc.snapshot();
        if proc.lock().exit_code.is_some() {
            return Err(status(Code::NOT_FOUND, "process already finished"));
        }
        match phase {
            Phase::Running => {
                let sb = self.vm()?;
                sb.client
                    .signal_process(&c.id, pid, Some(signal))
                    .await
                    .map_err(|e| host_error("signal the process", e))?;
                Ok(api::Empty::new())
            }
            Phase::Created if req.exec_id.is_empty() => {
                // The init never ran: the container is taken down, as runc kills a created one.
                if let Some(sb) = self.sandbox.get() {
                    let _ = sb.client.shutdown_forced(&c.id).await;
                }
                let code = 128 + req.signal;
                if let Some(exited_at) = proc.set_exited(code) {
                    let event = TaskExit {
                        container_id: c.id.clone(),
                        id: c.id.clone(),
                        exit_status: code,
                        exited_at: Some(exited_at).into(),
                        ..Default::default()
                    };
                    self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
                        .await;
                }
                Ok(api::Empty::new())
            }
            Phase::Created => Err(status(
                Code::FAILED_PRECONDITION,
                format!("exec {} of {} was never started", req.exec_id, c.id),
            )),
            Phase::Stopped { .. } => Err(status(Code::NOT_FOUND, "process already finished")),
        }
    }

    async fn wait(&self, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let mut exited = proc.exited.subscribe();
        let _ = exited.wait_for(|e| *e).await;
        match proc.snapshot().1 {
            Phase::Stopped {
                exit_status,
                exited_at,
            } => Ok(api::WaitResponse {
                exit_status,
                exited_at: Some(exited_at).into(),
                ..Default::default()
            }),
            _ => Err(status(Code::INTERNAL, "wait ended before the exit")),
        }
    }

    async fn delete(&self, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        if req.exec_id.is_empty() {
            let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cancelled) = creating.get_mut(&req.id) {
                // The Create undoes itself when it ends (containerd gave up on it).
                *cancelled = true;
                return Err(status(
                    Code::NOT_FOUND,
                    format!("container {} is still being created: cancelled", req.id),
                ));
            }
        }
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let _op = proc.op.lock().await;
        // A Delete that waited for another one finds the container gone.
        if req.exec_id.is_empty() && !self.containers().contains_key(&c.id) {
            return Err(status(
                Code::NOT_FOUND,
                format!("container {} does not exist", c.id),
            ));
        }
        let (pid, phase) = proc.snapshot();
        let (exit_status, exited_at) = match phase {
            Phase::Running => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("process {pid} of {} is still running", c.id),
                ))
            }
            Phase::Created => {
                // Its waiters (a Wait sent before a Start that never came) end with it.
                proc.set_exited(0);
                (0, now())
            }
            Phase::Stopped {
                exit_status,
                exited_at,
            } => (exit_status, exited_at),
        };
        if req.exec_id.is_empty() {
            let running_exec = c
                .execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .any(|p| matches!(p.snapshot().1, Phase::Running));
            if running_exec {
                log::debug!("deleting {} with execs still running", c.id);
            }
            let mut phases = Phases::new(&c.id);
            self.remove_container(&c).await;
            phases.done("delete");
            self.containers().remove(&c.id);
            let event = TaskDelete {
                container_id: c.id.clone(),
                pid,
                exit_status,
                exited_at: Some(exited_at.clone()).into(),
                id: c.id.clone(),
                ..Default::default()
            };
            self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event))
                .await;
        } else {
            c.execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&req.exec_id);
        }
        Ok(api::DeleteResponse {
            pid,
            exit_status,
            exited_at: Some(exited_at).into(),
            ..Default::default()
        })
    }

    async fn pids(&self, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let c = self.container(&req.id)?;
        let sb = self.vm()?;
        let properties = sb
            .client
            .get_properties(&c.id, &["ProcessList"])
            .await
            .map_err(|e| host_error("list the processes", e))?;
        let processes = properties
            .process_list
            .iter()
            .map(|p| containerd_shim::protos::types::task::ProcessInfo {
                pid: p.process_id,
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn stats(&self, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let c = self.container(&req.id)?;
        let sb = self.vm()?;
        let properties = sb
            .client
            .get_properties(&c.id, &["Statistics"])
            .await
            .map_err(|e| host_error("read the container's statistics", e))?;
        let json = properties.lcow_metrics.unwrap_or(Value::Null);
        let stats = super::metrics::v1_metrics_any(&json).map_err(|e| status(Code::INTERNAL, e))?;
        Ok(api::StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    /// New `linux.resources` for a running container: ContainerConstraints (spec §5.8), what
    /// hcsshim sends for the CRI's UpdateContainerResources.
    async fn update(&self, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let resources: Value = req
            .resources
            .as_ref()
            .map(|any| serde_json::from_slice(&any.value))
            .transpose()
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("resources: {e}")))?
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "update without resources"))?;
        let sb = self.vm()?;
        let request = crate::protocol::messages::ModifySettingRequest {
            resource_type: "ContainerConstraints".into(),
            request_type: "Update".into(),
            settings: Some(json!({ "Linux": resources })),
        };
        sb.client
            .modify_settings(&c.id, request)
            .await
            .map_err(|e| host_error("update the container's resources", e))?;
        Ok(api::Empty::new())
    }

    async fn resize_pty(&self, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        let (pid, phase) = proc.snapshot();
        if !matches!(phase, Phase::Running) {
            return Err(status(
                Code::FAILED_PRECONDITION,
                "the process is not running",
            ));
        }
        let sb = self.vm()?;
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        sb.client
            .resize_console(&c.id, pid, clamp(req.height), clamp(req.width))
            .await
            .map_err(|e| host_error("resize the console", e))?;
        Ok(api::Empty::new())
    }

    async fn close_io(&self, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let c = self.container(&req.id)?;
        let proc = c.process(&req.exec_id)?;
        if req.stdin {
            if let Some(relay) = proc.lock().relay.as_mut() {
                relay.close_stdin();
            }
        }
        Ok(api::Empty::new())
    }

    async fn connect(&self, req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self
            .containers()
            .get(&req.id)
            .map_or(0, |c| c.init.snapshot().0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // containerd asks after each task's delete; a pod's VM stays while it has containers.
        let idle = self.containers().is_empty() && self.creating_is_empty();
        if !req.now && !idle {
            return Ok(api::Empty::new());
        }
        self.stop().await;
        Ok(api::Empty::new())
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.create(req).await }).await
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.start(req).await }).await
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.state(req).await }).await
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.exec(req).await }).await
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.kill(req).await }).await
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.wait(req).await }).await
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.delete(req).await }).await
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.pids(req).await }).await
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.stats(req).await }).await
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.update(req).await }).await
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.resize_pty(req).await }).await
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.close_io(req).await }).await
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.connect(req).await }).await
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        let inner = Arc::clone(&self.inner);
        detached(async move { inner.shutdown(req).await }).await
    }
}
