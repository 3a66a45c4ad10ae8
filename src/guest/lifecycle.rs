//! Container operations of the guest, in request order: create, start of init, exec, wait,
//! signal, shutdown, resize, properties, delete.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::container::{Container, ContainerProcess, InitIo, State};
use super::spec::{self, Kind};
use super::stdio;
use super::{Entry, Guest, GuestError};
use crate::protocol::messages::{
    ContainerNotification, ContainerSettings, NotificationType, ProcessParameters,
    VsockStdioRelaySettings,
};
use crate::runtime::{HelperRequest, HelperResponse};

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(0);

/// Where a workload's pinned mount sources live inside its bundle (`spec::mounts::pin_sources`).
const PINNED: &str = "pinned";

fn io(what: impl Into<String>, source: std::io::Error) -> GuestError {
    GuestError::Io {
        what: what.into(),
        source,
    }
}

/// `mkdir -p` of an agent path (bundle, sandbox root, sockets), following no symlink.
fn mkdir(path: &Path, mode: u32) -> Result<(), GuestError> {
    crate::safe_fs::mkdir_all(path, mode).map_err(|e| io(format!("create {}", path.display()), e))
}

/// Accepts only absolute, normalised paths under /run (where the host puts bundles).
fn bundle_path(p: &str) -> Result<PathBuf, GuestError> {
    crate::storage::checked_path(Path::new(p), &[])
        .map(Path::to_path_buf)
        .map_err(|e| GuestError::InvalidRequest(format!("OciBundlePath: {e}")))
}

/// The container table's `Creating` reservation of one Create, released on drop while armed.
struct CreatingSlot<'a> {
    guest: &'a Guest,
    id: &'a str,
    armed: bool,
}

impl Drop for CreatingSlot<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut table = self.guest.lock_containers();
            if matches!(table.get(self.id), Some(Entry::Creating)) {
                table.remove(self.id);
            }
        }
    }
}

/// Holds a deleted container's id (`Entry::Deleting`) until its clean-up is over, however the
/// Delete ends.
struct DeletingSlot<'a> {
    guest: &'a Guest,
    id: &'a str,
}

impl Drop for DeletingSlot<'_> {
    fn drop(&mut self) {
        let mut table = self.guest.lock_containers();
        if matches!(table.get(self.id), Some(Entry::Deleting)) {
            table.remove(self.id);
        }
    }
}

/// What a Create made on the way to its decisions (SP §4.9: as in the original, a pod's
/// directories and network files exist before `create_container` is asked), undone when the
/// Create fails, so that a refused Create leaves nothing behind.
#[derive(Debug, Default)]
struct Made {
    /// Directories it made, in the order made: each with the outermost of its ancestors it
    /// made too (none of those existed before).
    dirs: Vec<(PathBuf, PathBuf)>,
    /// Files it wrote that did not exist before.
    files: Vec<PathBuf>,
    /// Directories it made shared mount points (a pod's `sandboxMounts` and the like).
    mounts: Vec<PathBuf>,
    /// The network namespace record it added.
    namespace: Option<String>,
}

impl Made {
    /// `mkdir -p path` (see [`mkdir`]), noting the outermost directory it makes.
    fn mkdir(&mut self, path: &Path, mode: u32) -> Result<(), GuestError> {
        let outermost = path
            .ancestors()
            .take_while(|p| std::fs::symlink_metadata(p).is_err())
            .last()
            .map(Path::to_path_buf);
        if let Some(outermost) = outermost {
            self.dirs.push((path.to_path_buf(), outermost));
        }
        mkdir(path, mode)
    }

    /// Notes the files of `names` in `root` that do not exist yet (before they are written).
    fn files_in(&mut self, root: &Path, names: &[&str]) {
        for name in names {
            let path = root.join(name);
            if std::fs::symlink_metadata(&path).is_err() {
                self.files.push(path);
            }
        }
    }

    /// Undoes it all, the last made first: shared mounts (and what is mounted below them),
    /// files, directories (each only once empty: another request may have put something in
    /// one meanwhile), and the namespace record unless the host has given it NICs meanwhile.
    fn undo(self, guest: &Guest) {
        for mount in self.mounts.iter().rev() {
            unmount_under(mount);
        }
        for file in self.files.iter().rev() {
            if let Err(e) = std::fs::remove_file(file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %file.display(), error = %e, "cannot remove a refused container's file");
                }
            }
        }
        for (dir, outermost) in self.dirs.iter().rev() {
            for made in dir.ancestors() {
                // Gone already, or no longer empty: its ancestors stay too.
                if std::fs::remove_dir(made).is_err() && made.exists() {
                    debug!(path = %made.display(), "a refused container's directory is not empty");
                    break;
                }
                if made == outermost {
                    break;
                }
            }
        }
        if let Some(namespace) = &self.namespace {
            guest.namespace_remove_if_unused(namespace);
        }
    }
}

/// The files [`spec::write_network_files`] writes into a pod's or container's directory.
const NETWORK_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// A console socket the runtime connects to once to hand over the pty master.
struct ConsoleSocket {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    fn new(dir: &Path) -> Result<Self, GuestError> {
        mkdir(dir, 0o700)?;
        let path = dir.join(format!(
            "console-{}-{}.sock",
            std::process::id(),
            NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener =
            std::os::unix::net::UnixListener::bind(&path).map_err(|e| io("console socket", e))?;
        Ok(Self { path, listener })
    }

    /// Receives the pty master the runtime sent (it is already queued once create returned).
    async fn receive(self) -> Result<OwnedFd, GuestError> {
        let listener = self.listener;
        let received = tokio::task::spawn_blocking(move || -> Result<OwnedFd, GuestError> {
            listener
                .set_nonblocking(false)
                .map_err(|e| io("console socket", e))?;
            let (conn, _) = listener
                .accept()
                .map_err(|e| io("accept console socket", e))?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| io("console socket", e))?;
            let mut buf = [0u8; 64];
            use std::os::fd::AsRawFd;
            let (_, fds) = crate::runtime::channel::recv(conn.as_raw_fd(), &mut buf)
                .map_err(|e| io("receive pty master", e.into()))?
                .ok_or_else(|| {
                    GuestError::InvalidRequest("runtime closed the console socket".into())
                })?;
            fds.into_iter()
                .next()
                .ok_or_else(|| GuestError::InvalidRequest("no pty master received".into()))
        })
        .await
        .map_err(|e| GuestError::InvalidRequest(format!("console socket task: {e}")))?;
        let _ = std::fs::remove_file(&self.path);
        received
    }
}

impl Guest {
    /// The id of the container whose bundle is `bundle`, if any.
    fn bundle_owner(&self, bundle: &Path) -> Option<String> {
        self.lock_containers()
            .iter()
            .find_map(|(id, entry)| match entry {
                Entry::Ready(c) if c.bundle == bundle => Some(id.clone()),
                _ => None,
            })
    }

    /// Create (§6.3): rewrite the spec, write the bundle, create through the runtime. The
    /// container's init waits for its start; one exit notification will follow its first wait.
    ///
    /// # Errors
    /// First [`GuestError::Inconsistent`] in a confidential UVM whose allowed unmount failed
    /// (SP §4.6, §4.9 step 1); then a bad or taken id, the spec's refusals, the policy's, and
    /// the runtime's.
    pub async fn create_container(
        self: &Arc<Self>,
        id: &str,
        activity_id: &str,
        settings: ContainerSettings,
    ) -> Result<(), GuestError> {
        self.check_state()?;
        spec::check_container_id(id)?;
        {
            let mut table = self.lock_containers();
            if table.contains_key(id) {
                return Err(GuestError::ContainerExists(id.to_string()));
            }
            table.insert(id.to_string(), Entry::Creating);
        }
        // Frees the id if this Create ends in any other way than a created container (an
        // error, or a panic unwinding through the task).
        let mut slot = CreatingSlot {
            guest: self,
            id,
            armed: true,
        };
        let mut made = Made::default();
        match self
            .create_inner(id, activity_id, settings, &mut made)
            .await
        {
            Ok(container) => {
                slot.armed = false;
                self.lock_containers()
                    .insert(id.to_string(), Entry::Ready(Arc::clone(&container)));
                // §6.3 step 12: the pod's NICs move into the new namespace (or are set up in
                // place for a host-network pod). If that fails, so does the Create, and the
                // container goes.
                if !matches!(container.kind, Kind::Workload { .. }) {
                    if let Err(e) = self.sync_network(&container).await {
                        self.discard(&container).await;
                        return Err(e);
                    }
                }
                if let Some(cgroups) = &self.uvm_cgroups {
                    crate::cgroups::events::watch_oom(
                        cgroups.memory_cgroup(&container.cgroup),
                        id.to_string(),
                    );
                }
                info!(container_id = id, "container created");
                Ok(())
            }
            Err(e) => {
                // Everything the Create made goes, then the id is free again: a refused or
                // failed Create leaves nothing behind (SP §4.9). A sandbox's registration goes
                // with its shared mounts and files.
                self.lock_sandbox_roots().remove(id);
                made.undo(self);
                drop(slot);
                Err(e)
            }
        }
    }

    /// Create up to a container the runtime made; what it makes on the way is noted in `made`.
    async fn create_inner(
        self: &Arc<Self>,
        id: &str,
        activity_id: &str,
        mut settings: ContainerSettings,
        made: &mut Made,
    ) -> Result<Arc<Container>, GuestError> {
        // The spec is moved, never copied whole: a large one is held once.
        let mut spec = settings.oci_specification.take().unwrap_or(Value::Null);
        let kind = spec::classify(id, &spec)?;
        if self.policy().is_confidential() {
            confidential_checks(id, &kind, &spec)?;
            // Only the overlay the policy allowed for this id may be its root (not, say, a
            // directory on a scratch disk the host filled).
            let root = PathBuf::from(format!("/run/gcs/c/{id}/rootfs"));
            if !self.storage.has(crate::storage::Kind::Overlay, &root) {
                return Err(GuestError::InvalidRequest(format!(
                    "container {id} has no rootfs overlay at {}: CombinedLayers must come first in a confidential guest",
                    root.display()
                )));
            }
        }
        // The policy sees the host's devices, before the guest adds any (SP §4.9 step 2).
        let host_devices = spec.pointer("/linux/devices").cloned().unwrap_or(json!([]));
        let bundle = bundle_path(&settings.oci_bundle_path)?;
        // Another container's bundle is never this one's: its files would be overwritten, and
        // a refused Create would take back what it did not make.
        if let Some(owner) = self.bundle_owner(&bundle) {
            return Err(GuestError::InvalidRequest(format!(
                "OciBundlePath {} is the bundle of container {owner}",
                bundle.display()
            )));
        }
        let namespace = spec
            .pointer("/windows/network/networkNamespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase();
        // Everything that can refuse the spec without touching the UVM comes first, so that a
        // refused Create leaves nothing behind.
        spec::apply_annotations(&mut spec, &kind)?;
        let allow_all_devices = matches!(kind, Kind::Workload { .. })
            && spec::annotations::bool_annotation(&spec, spec::PRIVILEGED, false);
        spec::devices::default_deny(&mut spec, allow_all_devices);
        let rootfs = match spec.pointer("/root/path").and_then(Value::as_str) {
            Some(p) if p.starts_with('/') => PathBuf::from(p),
            Some(p) => bundle.join(p),
            None => {
                return Err(GuestError::InvalidRequest(
                    "OciSpecification.root.path is missing".into(),
                ))
            }
        };
        let user_from_name = match spec.get_mut("process") {
            Some(process) => spec::user::resolve_username(process, &rootfs)?,
            None => false,
        };
        let mut pin = None;
        let mut network_mounts = Vec::new();
        let sandbox_root = match &kind {
            Kind::Sandbox => {
                let virtual_pod =
                    spec::annotation(&spec, spec::VIRTUAL_POD_ID).is_some_and(|v| !v.is_empty());
                let root =
                    match spec::annotation(&spec, spec::VIRTUAL_POD_ID).filter(|v| !v.is_empty()) {
                        Some(vpod) => bundle
                            .parent()
                            .unwrap_or(&bundle)
                            .join("virtual-pods")
                            .join(vpod),
                        None => bundle.clone(),
                    };
                made.mkdir(&root, 0o755)?;
                let hostname = spec::hostname_for(&spec)?;
                // §6.3: a virtual pod's sandbox, like one that skips pod networking, makes its
                // namespace record if the host has not added its NICs yet.
                let skip_networking = virtual_pod
                    || spec::annotation(&spec, spec::SKIP_POD_NETWORKING)
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if skip_networking && self.namespace_get_or_add(&namespace) {
                    made.namespace = Some(namespace.clone());
                }
                if !self.namespace_exists(&namespace) && !skip_networking {
                    return Err(GuestError::NamespaceNotFound(namespace));
                }
                let resolv = self.resolv_conf_for(&namespace)?;
                made.files_in(&root, &NETWORK_FILES);
                spec::write_network_files(&Value::Null, &root, &hostname, &resolv)?;
                let mounted = mount_points();
                for dir in ["sandboxMounts", "hugepages", "sandboxTmpfsMounts"] {
                    let path = root.join(dir);
                    made.mkdir(&path, 0o755)?;
                    // A virtual pod's later sandboxes find them shared already: those mounts
                    // are the pod's, not this Create's to take back.
                    if !mounted.contains(&path) {
                        made.mounts.push(path.clone());
                    }
                    self.share_mount(&path, dir == "sandboxTmpfsMounts")?;
                }
                made.mkdir(&root.join("logs"), 0o777)?;
                spec["linux"]["cgroupsPath"] = json!(format!("/pods/{id}/{id}"));
                self.lock_sandbox_roots()
                    .insert(id.to_string(), root.clone());
                root
            }
            Kind::Workload { sandbox_id } => {
                let root = self
                    .lock_sandbox_roots()
                    .get(sandbox_id)
                    .cloned()
                    .ok_or_else(|| {
                        GuestError::InvalidRequest(format!(
                            "pod {sandbox_id} does not exist for workload container {id}"
                        ))
                    })?;
                if spec
                    .get("hostname")
                    .and_then(Value::as_str)
                    .is_some_and(|h| !h.is_empty())
                {
                    return Err(GuestError::InvalidRequest(format!(
                        "workload container must not change hostname: {}",
                        spec["hostname"].as_str().unwrap_or_default()
                    )));
                }
                spec::rewrite_mount_sources(&mut spec, &root)?;
                spec::devices::block_device_mounts(&mut spec)?;
                // §6.3: assigned devices (VPCI, GPU) are waited for, holding no thread.
                let path = std::env::var("PATH").unwrap_or_default();
                spec::devices::assigned_devices(
                    &mut spec,
                    &bundle,
                    Path::new("/sys"),
                    Path::new("/dev"),
                    &path,
                )
                .await?;
                // Sources under the pod's directories are pinned once the policy has seen them
                // as the host named them; the network files bound below are the agent's own.
                pin = Some((root.clone(), mount_count(&spec)));
                let before = mount_count(&spec);
                spec::bind_network_files(&mut spec, &root);
                network_mounts = mounts_from(&spec, before);
                spec["linux"]["cgroupsPath"] = json!(format!("/pods/{sandbox_id}/{id}"));
                root
            }
            Kind::Standalone => {
                let hostname = spec::hostname_for(&spec)?;
                if self.namespace_get_or_add(&namespace) {
                    made.namespace = Some(namespace.clone());
                }
                made.mkdir(&bundle, 0o700)?;
                let resolv = self.resolv_conf_for(&namespace)?;
                made.files_in(&bundle, &NETWORK_FILES);
                spec::write_network_files(&spec, &bundle, &hostname, &resolv)?;
                let before = mount_count(&spec);
                spec::bind_network_files(&mut spec, &bundle);
                network_mounts = mounts_from(&spec, before);
                spec["linux"]["cgroupsPath"] = json!(format!("/pods/{id}"));
                bundle.clone()
            }
        };
        spec::bind_log_dir(&mut spec, &sandbox_root);
        let tee_log = spec::mounts::tee_log_path(&spec, &sandbox_root)?;
        if let Some(obj) = spec.as_object_mut() {
            obj.remove("windows");
        }
        // §6.3 step 9: a workload follows its pod's host-network annotation, not its own.
        let host_network = match &kind {
            Kind::Workload { sandbox_id } => self
                .container(sandbox_id)
                .is_ok_and(|sandbox| sandbox.host_network),
            _ => spec::is_host_network(&spec),
        };
        let stdio_allowed =
            self.decide_create(id, &kind, &mut spec, host_devices, &rootfs, &network_mounts)?;
        if !stdio_allowed {
            if let Some(path) = &tee_log {
                return Err(GuestError::InvalidRequest(format!(
                    "teeing container stdio to log path {:?} denied due to policy not allowing stdio access",
                    path.display().to_string()
                )));
            }
        }
        if host_network {
            // SP §4.16: the refusal is the enforcer's own text, with no words around it.
            self.policy()
                .decide(
                    crate::policy::EnforcementPoint::HostNetwork,
                    crate::policy::input::empty(),
                )
                .map_err(GuestError::PolicyRefused)?;
            spec::remove_namespace(&mut spec, "network");
        }
        if let Some((root, count)) = pin {
            let pinned = bundle.join(PINNED);
            if !mount_points().iter().any(|m| m.starts_with(&pinned)) {
                made.mounts.push(pinned.clone());
            }
            // The pod's shares may be a host 9p server's, which can stop answering: beside the
            // agent's one async worker.
            crate::worker::block(|| spec::mounts::pin_sources(&mut spec, &root, &pinned, count))?;
        }
        spec::enforce_readonly_cgroupfs(&mut spec);
        spec::mounts::prepare_cwd(&spec, &rootfs)?;
        // The bundle and its config.json (which holds the environment, often secrets) are
        // root's alone.
        made.mkdir(&bundle, 0o700)?;
        std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(format!("chmod {}", bundle.display()), e))?;
        if let Some(process) = spec.get_mut("process") {
            drop_unknown_capabilities(id, process);
        }
        made.files_in(&bundle, &["config.json"]);
        // Written as it is encoded: a large spec is not held a second time as text.
        crate::safe_fs::write_file_with(&bundle.join("config.json"), 0o600, |file| {
            let mut out = std::io::BufWriter::new(file);
            serde_json::to_writer(&mut out, &spec)?;
            out.write_all(b"\n")?;
            out.flush()
        })
        .map_err(|e| io("write config.json", e))?;

        let terminal = spec
            .pointer("/process/terminal")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let owns_pid_ns = spec::owns_pid_namespace(&spec);
        let (pid, pending_io) = self
            .launch(terminal, |stdio, console_socket| HelperRequest::Create {
                id: id.into(),
                bundle: bundle.clone(),
                stdio,
                console_socket,
            })
            .await?;
        // §6.3: the pod's cgroup carries the sandbox spec's resources, so that the pod's
        // containers share its limits (the sandbox's own cgroup below it has them too).
        if kind == Kind::Sandbox {
            let resources = spec
                .pointer("/linux/resources")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let request = HelperRequest::PodCgroup {
                path: format!("/pods/{id}"),
                resources,
            };
            if let Err(e) = self.runtime.call(&request, Vec::new()).await {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(raw),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = self
                    .runtime
                    .call(&HelperRequest::Delete { id: id.into() }, Vec::new())
                    .await;
                return Err(e.into());
            }
        }
        let (init, tracker, slot) =
            ContainerProcess::new(pid, true, string_list(spec.pointer("/process/args")));
        let init_io = InitIo {
            pending: pending_io,
            slot,
            reaped: tracker.reaped(),
        };
        let container = Arc::new(Container {
            id: id.to_string(),
            activity_id: activity_id.to_string(),
            bundle,
            scratch: settings.scratch_dir_path.clone(),
            tee_log,
            rootfs,
            mount_sources: spec::bind_sources(&spec),
            cgroup: spec
                .pointer("/linux/cgroupsPath")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            kind,
            sandbox_root,
            network_namespace: namespace,
            host_network,
            spec_process: exec_defaults(spec.get("process")),
            user_from_name,
            stdio_allowed,
            init: Arc::clone(&init),
            state: std::sync::Mutex::new(State::Created),
            init_io: std::sync::Mutex::new(Some(init_io)),
            processes: std::sync::Mutex::new(Default::default()),
            exit_type: std::sync::Mutex::new(NotificationType::UnexpectedExit),
            teardown: tokio::sync::watch::channel(false).0,
        });
        let weak: Weak<Container> = Arc::downgrade(&container);
        let guest = Arc::clone(self);
        tracker.track(self.reaper.watch_pid(pid), move |status| {
            let Some(c) = weak.upgrade() else { return };
            c.set_state(State::Terminated);
            debug!(container_id = %c.id, ?status, "container init exited");
            // Without a pid namespace of its own the kernel does not kill the rest when init
            // dies; do it as runc kill --all does.
            if !owns_pid_ns {
                tokio::spawn(async move { guest.kill_all(&c).await });
            }
        });
        // Exactly one notification, after init exited and its first wait completed.
        let guest = Arc::clone(self);
        let weak = Arc::downgrade(&container);
        let mut waited = init.waited();
        tokio::spawn(async move {
            if waited.wait_for(|w| *w).await.is_err() {
                return;
            }
            if let Some(c) = weak.upgrade() {
                guest.notify(ContainerNotification::exited(
                    &c.id,
                    &c.activity_id,
                    c.exit_type(),
                ));
            }
        });
        Ok(container)
    }

    /// The process-level input of create and exec decisions. User names, groups and umask are
    /// read from the container's databases only for an enforcer that holds a policy (the open
    /// and closed doors never look at them; SP §8).
    fn process_facts(
        &self,
        process: &Value,
        rootfs: &Path,
    ) -> Result<crate::policy::input::ProcessFacts, GuestError> {
        let (user, groups, umask) = if self.policy().is_confidential() {
            spec::user::policy_identity(process, rootfs)?
        } else {
            let uid = spec::user::user_id(process, "uid")?;
            let gid = spec::user::user_id(process, "gid")?;
            (
                json!({"id": uid.to_string(), "name": ""}),
                json!([{"id": gid.to_string(), "name": ""}]),
                "0022".to_string(),
            )
        };
        Ok(crate::policy::input::ProcessFacts::from_process(
            process, user, groups, umask,
        ))
    }

    /// `create_container` (SP §4.9), once the spec is what the host's request became and
    /// before the guest's own hardening: applies the decision's environment and capabilities
    /// to the spec and returns its `allow_stdio_access`.
    fn decide_create(
        &self,
        id: &str,
        kind: &Kind,
        spec: &mut Value,
        host_devices: Value,
        rootfs: &Path,
        network_mounts: &[Value],
    ) -> Result<bool, GuestError> {
        let confidential = self.policy().is_confidential();
        if confidential {
            self.policy()
                .enforcer()
                .extend_default_mounts(network_mounts)?;
        }
        let sandbox_id = match kind {
            Kind::Workload { sandbox_id } => sandbox_id.clone(),
            _ => spec::annotation(spec, spec::VIRTUAL_POD_ID)
                .filter(|v| !v.is_empty())
                .unwrap_or(id)
                .to_string(),
        };
        let facts = self.process_facts(spec.get("process").unwrap_or(&Value::Null), rootfs)?;
        let seccomp = if confidential {
            crate::policy::seccomp::profile_sha256(spec.pointer("/linux/seccomp"))
                .map_err(GuestError::InvalidRequest)?
        } else {
            String::new()
        };
        let container = crate::policy::input::ContainerFacts {
            container_id: id,
            sandbox_id: &sandbox_id,
            mounts: spec.get("mounts").cloned().unwrap_or(json!([])),
            devices: host_devices,
            privileged: spec::annotations::bool_annotation(spec, spec::PRIVILEGED, false),
            seccomp_profile_sha256: seccomp,
            is_sandbox: *kind == Kind::Sandbox,
        };
        let decision = self.enforce(
            crate::policy::EnforcementPoint::CreateContainer,
            crate::policy::input::create_container(&container, &facts),
            || "container creation denied due to policy".into(),
        )?;
        if let Some(process) = spec.get_mut("process") {
            apply_process_decision(process, &decision)?;
        }
        Ok(decision.allow_stdio_access()?)
    }

    /// Runs a create or exec through the runtime, with a console socket for a terminal or with
    /// fresh pipes; returns the process's pid and its stdio.
    async fn launch(
        &self,
        terminal: bool,
        request: impl Fn([bool; 3], Option<PathBuf>) -> HelperRequest,
    ) -> Result<(u32, PendingIo), GuestError> {
        if terminal {
            let console = ConsoleSocket::new(&self.runtime_dir.join("sockets"))?;
            let request = request([false; 3], Some(console.path.clone()));
            let pid = helper_pid(self.runtime.call(&request, Vec::new()).await?)?;
            Ok((pid, PendingIo::Pty(console.receive().await?)))
        } else {
            let (pipes, child_ends) = stdio::make_pipes()?;
            let request = request([true; 3], None);
            let pid = helper_pid(self.runtime.call(&request, child_ends.into()).await?)?;
            Ok((pid, PendingIo::Pipes(pipes)))
        }
    }

    /// Makes `path` a shared (rshared) mount point, a tmpfs when `tmpfs`.
    fn share_mount(&self, path: &Path, tmpfs: bool) -> Result<(), GuestError> {
        use nix::mount::{mount, MsFlags};
        let err = |e: nix::errno::Errno| io(format!("mount {}", path.display()), e.into());
        if tmpfs {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(err)?;
        } else {
            mount(
                Some(path),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(err)?;
        }
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(err)
    }

    async fn kill_all(&self, c: &Container) {
        if let Ok(HelperResponse::Pids(pids)) = self
            .runtime
            .call(&HelperRequest::Pids { id: c.id.clone() }, Vec::new())
            .await
        {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Starts a created container's init (ExecuteProcess without `OciProcess`).
    pub async fn start_container(
        &self,
        c: &Arc<Container>,
        params: &ProcessParameters,
        ports: VsockStdioRelaySettings,
    ) -> Result<u32, GuestError> {
        if c.state() != State::Created {
            return Err(GuestError::InvalidState(format!(
                "container {} is not in the created state",
                c.id
            )));
        }
        // §7.4: the init's stdout and stderr redial the host if it goes away.
        let reconnect = stdio::Reconnect {
            dialer: self.dialer.clone(),
            stdout_port: ports.std_out,
            stderr_port: ports.std_err,
            teardown: c.teardown.subscribe(),
        };
        let io = if c.stdio_allowed {
            stdio::dial(&self.dialer, params, ports).await?
        } else {
            stdio::null(params)
        };
        // The tee log is opened (made if missing) inside the pod's log directory, which its
        // containers can write: no symlink there leads the agent's writes elsewhere.
        let log = match &c.tee_log {
            Some(path) => Some(std::sync::Arc::new(
                crate::safe_fs::open_append(path, 0o644).map_err(|source| GuestError::Io {
                    what: format!("open the tee log {}", path.display()),
                    source,
                })?,
            )),
            None => None,
        };
        let Some(init_io) = c.take_init_io() else {
            return Err(GuestError::InvalidState(format!(
                "container {} was already started",
                c.id
            )));
        };
        start_relays(
            self.handshake_timeout,
            &c.init,
            init_io.pending,
            io,
            init_io.slot,
            init_io.reaped,
            (log, Some(reconnect)),
        )?;
        self.runtime
            .call(&HelperRequest::Start { id: c.id.clone() }, Vec::new())
            .await?;
        c.set_state(State::Running);
        Ok(c.init.pid)
    }

    /// Runs an OCI process in a container (ExecuteProcess with `OciProcess`).
    pub async fn exec_in_container(
        &self,
        c: &Arc<Container>,
        params: &ProcessParameters,
        ports: VsockStdioRelaySettings,
    ) -> Result<u32, GuestError> {
        let mut process = params.oci_process.clone().unwrap_or(Value::Null);
        if !process.is_object() {
            return Err(GuestError::InvalidRequest(
                "OciProcess is not an object".into(),
            ));
        }
        if process
            .get("user")
            .is_some_and(|u| !u.is_null() && !u.is_object())
        {
            return Err(GuestError::InvalidRequest(
                "OciProcess.user is not an object".into(),
            ));
        }
        // §6.5: an exec's rlimits are the container's, whatever it asked for.
        match c.spec_process.get("rlimits") {
            Some(rlimits) => process["rlimits"] = rlimits.clone(),
            None => {
                if let Some(p) = process.as_object_mut() {
                    p.remove("rlimits");
                }
            }
        }
        // §6.5: the exec's own name is resolved against the container's root; without one, a
        // container whose user was a name lends its resolved user.
        if !spec::user::resolve_username(&mut process, &c.rootfs)? && c.user_from_name {
            if let Some(user) = c.spec_process.get("user") {
                process["user"] = user.clone();
            }
        }
        // runc 1.1 ignores an exec's umask (its process gets 0022, as the original's runc
        // does), and so does the executor without one.
        if let Some(user) = process.get_mut("user").and_then(Value::as_object_mut) {
            user.remove("umask");
        }
        // SP §4.10: decided once the exec's user is resolved; stdio is the container's.
        let facts = self.process_facts(&process, &c.rootfs)?;
        let decision = self.enforce(
            crate::policy::EnforcementPoint::ExecInContainer,
            crate::policy::input::exec_in_container(&c.id, &facts),
            || "exec in container denied due to policy".into(),
        )?;
        apply_process_decision(&mut process, &decision)?;
        if !c.stdio_allowed && process.get("terminal").and_then(Value::as_bool) == Some(true) {
            return Err(GuestError::InvalidRequest(
                "exec in container of process that requires terminal access denied due to policy not allowing stdio access".into(),
            ));
        }
        drop_unknown_capabilities(&c.id, &mut process);
        let dir = self.runtime_dir.join("exec");
        mkdir(&dir, 0o700)?;
        let file = dir.join(format!(
            "{}-{}.json",
            c.id,
            NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
        ));
        crate::safe_fs::write_file_with(&file, 0o600, |f| {
            let mut out = std::io::BufWriter::new(f);
            serde_json::to_writer(&mut out, &process)?;
            out.flush()
        })
        .map_err(|e| io("write process.json", e))?;
        let result = self.exec_with_file(c, &process, &file, params, ports).await;
        let _ = std::fs::remove_file(&file);
        result
    }

    async fn exec_with_file(
        &self,
        c: &Arc<Container>,
        process: &Value,
        file: &Path,
        params: &ProcessParameters,
        ports: VsockStdioRelaySettings,
    ) -> Result<u32, GuestError> {
        let io_conns = if c.stdio_allowed {
            stdio::dial(&self.dialer, params, ports).await?
        } else {
            stdio::null(params)
        };
        let terminal = process
            .get("terminal")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let (pid, pending) = self
            .launch(terminal, |stdio, console_socket| HelperRequest::Exec {
                id: c.id.clone(),
                process: file.to_path_buf(),
                cwd: process
                    .get("cwd")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                stdio,
                console_socket,
            })
            .await?;
        let (proc_, tracker, slot) =
            ContainerProcess::new(pid, false, string_list(process.get("args")));
        start_relays(
            self.handshake_timeout,
            &proc_,
            pending,
            io_conns,
            slot,
            tracker.reaped(),
            (None, None),
        )?;
        tracker.track(self.reaper.watch_pid(pid), |_| {});
        c.add_process(proc_);
        Ok(pid)
    }

    /// Waits for a container process; an exec'd process leaves the table after its first
    /// successful wait, the init never does.
    pub async fn wait_container_process(
        &self,
        c: &Arc<Container>,
        pid: u32,
        timeout_ms: u32,
    ) -> Result<u32, GuestError> {
        let process = c.process(pid)?;
        let status = process.wait(timeout_ms).await?;
        if !process.is_init {
            c.remove_process(pid);
        }
        Ok(status.container_code())
    }

    pub fn signal_container_process(
        &self,
        c: &Container,
        pid: u32,
        signal: i32,
    ) -> Result<(), GuestError> {
        let process = c.process(pid)?;
        self.enforce(
            crate::policy::EnforcementPoint::SignalContainerProcess,
            crate::policy::input::signal_container_process(
                &c.id,
                u32::try_from(signal).unwrap_or(0),
                process.is_init,
                &process.args,
            ),
            || "signal container process denied due to policy".into(),
        )?;
        process.signal(signal)?;
        if process.is_init {
            c.note_signal(signal);
        }
        Ok(())
    }

    /// ShutdownGraceful / ShutdownForced of a container: SIGTERM or SIGKILL to its init only.
    pub fn shutdown_container(&self, c: &Container, forced: bool) -> Result<(), GuestError> {
        self.enforce(
            crate::policy::EnforcementPoint::ShutdownContainer,
            crate::policy::input::shutdown_container(&c.id),
            || "shutdown container denied due to policy".into(),
        )?;
        if c.init.has_exited() {
            return Err(GuestError::NotRunning(c.id.clone()));
        }
        let signal = if forced { libc::SIGKILL } else { libc::SIGTERM };
        match c.init.signal(signal) {
            Ok(()) => {
                c.note_signal(signal);
                Ok(())
            }
            Err(GuestError::ProcessNotFound { .. }) => Err(GuestError::NotRunning(c.id.clone())),
            Err(e) => Err(e),
        }
    }

    pub fn resize_console(
        &self,
        c: &Container,
        pid: u32,
        height: u16,
        width: u16,
    ) -> Result<(), GuestError> {
        let process = c.process(pid)?;
        let pty = process
            .pty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match pty {
            Some(pty) => pty.resize(height, width),
            None => Err(GuestError::InvalidRequest(format!(
                "pid: {pid}, is not a tty and cannot be resized"
            ))),
        }
    }

    /// Pids in the container's cgroup (UVM pids), while its init runs.
    pub async fn container_pids(&self, c: &Container) -> Result<Vec<u32>, GuestError> {
        if c.init.has_exited() {
            return Ok(c.live_pids());
        }
        match self
            .runtime
            .call(&HelperRequest::Pids { id: c.id.clone() }, Vec::new())
            .await?
        {
            HelperResponse::Pids(pids) => Ok(pids
                .into_iter()
                .filter_map(|p| u32::try_from(p).ok())
                .collect()),
            other => Err(GuestError::InvalidRequest(format!(
                "unexpected runtime answer {other:?}"
            ))),
        }
    }

    pub async fn container_stats(&self, c: &Container) -> Result<Value, GuestError> {
        match self
            .runtime
            .call(&HelperRequest::Stats { id: c.id.clone() }, Vec::new())
            .await?
        {
            HelperResponse::Stats(v) => Ok(v),
            other => Err(GuestError::InvalidRequest(format!(
                "unexpected runtime answer {other:?}"
            ))),
        }
    }

    /// DeleteContainerState of container `id` (§6.7): in a confidential UVM whose allowed
    /// unmount failed, [`GuestError::Inconsistent`] before the container is looked up (SP
    /// §4.6); then as [`Guest::delete_container`].
    pub async fn delete_container_state(&self, id: &str) -> Result<(), GuestError> {
        self.check_confidential_container_id(id)?;
        self.check_state()?;
        let container = self.container(id)?;
        self.delete_container(&container).await
    }

    /// DeleteContainerState (§6.7). Refused while the init runs; otherwise the container
    /// leaves the tables and its runtime state, cgroup, sandbox mounts, scratch and bundle go.
    pub async fn delete_container(&self, c: &Arc<Container>) -> Result<(), GuestError> {
        if !c.init.has_exited() && c.state() != State::Created {
            return Err(GuestError::InvalidState(format!(
                "container {} is still running",
                c.id
            )));
        }
        // Removing the bundle under a mounted overlay would delete the container's writes
        // through it (its upper directory is in the scratch): the host removes the
        // CombinedLayers first.
        if mount_points().iter().any(|m| m == &c.rootfs) {
            return Err(GuestError::InvalidState(format!(
                "the rootfs {} of container {} is still mounted: remove its CombinedLayers first",
                c.rootfs.display(),
                c.id
            )));
        }
        self.lock_containers().insert(c.id.clone(), Entry::Deleting);
        let _slot = DeletingSlot {
            guest: self,
            id: &c.id,
        };
        c.tear_down();
        let mut first_error = None;
        if c.kind == Kind::Sandbox {
            let sandbox_root = c.sandbox_root.clone();
            if let Err(e) = off_the_worker(move || {
                for dir in ["sandboxMounts", "sandboxTmpfsMounts", "hugepages"] {
                    unmount_under(&sandbox_root.join(dir));
                }
            })
            .await
            {
                first_error = Some(e);
            }
        }
        match self
            .runtime
            .call(&HelperRequest::Delete { id: c.id.clone() }, Vec::new())
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == crate::runtime::RuntimeErrorKind::NotExist => {}
            Err(e) => first_error = Some(GuestError::from(e)),
        }
        // A disk the host mounted at the bundle (a scratch disk at /run/gcs/c/<id>) is the
        // host's to remove: its SCSI Remove unmounts it, and in a confidential guest refuses a
        // mount path that no longer exists (SP §4.6).
        let bundle_is_host_disk = self.storage.has(crate::storage::Kind::Scsi, &c.bundle);
        // For a sandbox, what goes with its pod: the pod's cgroup, and its root if registered.
        let pod: Option<PodLeftovers> = match &c.kind {
            Kind::Sandbox => {
                self.namespace_remove(&c.network_namespace);
                Some(PodLeftovers {
                    root: self.lock_sandbox_roots().remove(&c.id),
                })
            }
            Kind::Standalone => {
                self.namespace_remove(&c.network_namespace);
                None
            }
            Kind::Workload { .. } => None,
        };
        // Unmounts, and removals as long as the container wrote: the blocking pool's, so that
        // the bridge's worker serves other requests meanwhile.
        let (id, bundle, scratch) = (c.id.clone(), c.bundle.clone(), PathBuf::from(&c.scratch));
        let cleaned = off_the_worker(move || {
            unmount_under(&bundle.join(PINNED));
            // The bundle bind of a scratch kept outside the bundle (CombinedLayers), if its
            // overlay is still there.
            if !bundle_is_host_disk && mount_points().iter().any(|m| m == &bundle) {
                let _ = nix::mount::umount(&bundle);
            }
            for path in [&scratch, &bundle] {
                if !path.as_os_str().is_empty() && path.starts_with("/run") {
                    if let Err(e) = crate::storage::remove_within_filesystem(path) {
                        warn!(path = %path.display(), error = %e, "cannot remove container directory");
                    }
                }
            }
            if let Some(pod) = pod {
                remove_pod_cgroup(&id);
                // The V2 shim's layout: a virtual pod's root, then the pod directory under
                // /run/gcs/pods go with their sandbox (once empty).
                if let Some(root) = pod.root.filter(|r| r != &bundle) {
                    let _ = crate::storage::remove_within_filesystem(&root);
                }
                if bundle.starts_with("/run/gcs/pods") {
                    if let Some(pod_dir) = bundle.parent() {
                        let _ = std::fs::remove_dir(pod_dir.join("virtual-pods"));
                        let _ = std::fs::remove_dir(pod_dir);
                    }
                }
            }
        })
        .await;
        match first_error {
            Some(e) => Err(e),
            None => cleaned,
        }
    }

    /// The resolv.conf of a network namespace, from its adapters' DNS settings in order.
    fn resolv_conf_for(&self, namespace: &str) -> Result<String, GuestError> {
        let (search, servers) = self.namespace_dns(namespace);
        spec::resolv_conf(&search, &servers)
    }
}

/// A process's stdio as the runtime left it: pipes, or the pty master from the console socket.
#[derive(Debug)]
pub enum PendingIo {
    Pipes(stdio::Pipes),
    Pty(OwnedFd),
}

/// Drops the capability names runc would ignore, with runc's warning (in the agent's log).
fn drop_unknown_capabilities(id: &str, process: &mut Value) {
    let (count, named) = spec::process::drop_unknown_capabilities(process);
    if count > 0 {
        let names: Vec<String> = named.into_iter().collect();
        warn!(
            container_id = id,
            count,
            capabilities = %names.join(" "),
            "ignoring unknown or unavailable capabilities"
        );
    }
}

/// What an exec takes from its container's `process`: `rlimits` and `user` (spec §6.5), kept
/// rather than the whole process (its arguments and environment may run to megabytes).
fn exec_defaults(process: Option<&Value>) -> Value {
    let mut kept = serde_json::Map::new();
    for key in ["rlimits", "user"] {
        if let Some(v) = process.and_then(|p| p.get(key)) {
            kept.insert(key.to_string(), v.clone());
        }
    }
    Value::Object(kept)
}

/// What a confidential guest refuses before anything else of a Create (SP §4.9 steps 1 and 5):
/// ids other than 64 hex digits (the policy matches containers and paths by them), a rootfs
/// other than the overlay the policy allowed for this id, and OCI hooks (they would run as
/// root in the UVM, and no policy sees them).
fn confidential_checks(id: &str, kind: &Kind, spec: &Value) -> Result<(), GuestError> {
    let refuse = |text: String| Err(GuestError::InvalidRequest(text));
    if !spec::is_confidential_id(id) {
        return refuse(format!(
            "container id {:?} must be 64 hex digits in a confidential guest",
            super::error::shown(id)
        ));
    }
    if let Kind::Workload { sandbox_id } = kind {
        if !spec::is_confidential_id(sandbox_id) {
            return refuse(format!(
                "sandbox id {:?} must be 64 hex digits in a confidential guest",
                super::error::shown(sandbox_id)
            ));
        }
    }
    let root = spec.pointer("/root/path").and_then(Value::as_str);
    if root != Some(format!("/run/gcs/c/{id}/rootfs").as_str()) {
        return refuse(format!(
            "the rootfs of container {id} must be /run/gcs/c/{id}/rootfs in a confidential guest"
        ));
    }
    if spec.get("hooks").is_some_and(|h| !h.is_null()) {
        return refuse("OCI hooks are not allowed in a confidential guest".into());
    }
    Ok(())
}

/// Number of mounts in the spec.
fn mount_count(spec: &Value) -> usize {
    spec.get("mounts")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// The spec's mounts from index `from` on.
fn mounts_from(spec: &Value, from: usize) -> Vec<Value> {
    spec.get("mounts")
        .and_then(Value::as_array)
        .map(|m| m.iter().skip(from).cloned().collect())
        .unwrap_or_default()
}

/// A JSON array of strings as a list (other members and shapes give nothing).
fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Applies an allowed decision's `env_list` and `caps_list` to an OCI process: each keeps the
/// request's entries the decision lists, in the request's order (SP §3.3).
fn apply_process_decision(
    process: &mut Value,
    decision: &crate::policy::Decision,
) -> Result<(), GuestError> {
    use crate::policy::filter_list;
    if let Some(allowed) = decision.env_list()? {
        let env = string_list(process.get("env"));
        process["env"] = json!(filter_list(&env, &allowed));
    }
    if let Some(allowed) = decision.caps_list()? {
        for (key, set) in allowed.sets() {
            let requested = string_list(process.pointer(&format!("/capabilities/{key}")));
            process["capabilities"][key] = json!(filter_list(&requested, set));
        }
    }
    Ok(())
}

/// Starts the relays between a process's pipes or pty and the host's connections, and hands
/// their "drained" signal to the process's exit tracker. The last argument is an init's tee
/// log and stdout/stderr reconnection (both `None` for an exec).
fn start_relays(
    handshake: std::time::Duration,
    process: &ContainerProcess,
    pending: PendingIo,
    io: stdio::StdioConnections,
    slot: super::container::RelaySlot,
    reaped: tokio::sync::watch::Receiver<bool>,
    (log, reconnect): (stdio::TeeLog, Option<stdio::Reconnect>),
) -> Result<(), GuestError> {
    let done = match pending {
        PendingIo::Pipes(pipes) => {
            stdio::relay_pipes(pipes, io, reaped, handshake, log, reconnect)?
        }
        PendingIo::Pty(master) => {
            let (pty, done) = stdio::relay_pty(master, io, log)?;
            *process.pty.lock().unwrap_or_else(|p| p.into_inner()) = Some(pty);
            done
        }
    };
    let _ = slot.send(done);
    Ok(())
}

fn helper_pid(r: HelperResponse) -> Result<u32, GuestError> {
    match r {
        HelperResponse::Pid(pid) => {
            u32::try_from(pid).map_err(|_| GuestError::InvalidRequest(format!("bad pid {pid}")))
        }
        other => Err(GuestError::InvalidRequest(format!(
            "unexpected runtime answer {other:?}"
        ))),
    }
}

/// What a deleted sandbox leaves to remove besides its own bundle.
struct PodLeftovers {
    /// The pod's root as its Create registered it (a virtual pod's differs from the bundle).
    root: Option<PathBuf>,
}

/// Runs filesystem work that may take long (unmounts, recursive removals) in the blocking pool
/// and waits for it: the agent's one async worker keeps serving the bridge meanwhile.
/// Errors: `InvalidState` when the work panicked (the panic hook has logged where), so that
/// the host is not told a clean-up succeeded that did not finish.
async fn off_the_worker(work: impl FnOnce() + Send + 'static) -> Result<(), GuestError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        warn!(error = %e, "container clean-up did not finish");
        GuestError::InvalidState(format!("container clean-up did not finish: {e}"))
    })
}

/// Mount points of this mount namespace, from /proc/self/mountinfo.
fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

/// Unmounts everything mounted at or under `dir`, deepest last-mounted first, then removes it.
fn unmount_under(dir: &Path) {
    let mut mounts: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.reverse();
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = crate::storage::remove_within_filesystem(dir);
}

/// Removes `/pods/<sandbox>` in every cgroup hierarchy (its leaves are gone by now).
fn remove_pod_cgroup(sandbox_id: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join("pods").join(sandbox_id)];
    if let Ok(entries) = std::fs::read_dir(root) {
        dirs.extend(
            entries
                .flatten()
                .map(|e| e.path().join("pods").join(sandbox_id)),
        );
    }
    for dir in dirs {
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir(&dir) {
                warn!(path = %dir.display(), error = %e, "cannot remove pod cgroup");
            }
        }
    }
}

impl From<crate::runtime::RuntimeError> for GuestError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        GuestError::Runtime(e)
    }
}
