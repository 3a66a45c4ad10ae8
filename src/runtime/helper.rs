//! The runtime helper: a single-threaded process that performs every libcontainer call, one
//! request at a time. It exits when the agent closes the control socket.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;

use super::channel::{self, MAX_MESSAGE};
use super::{HelperRequest, HelperResponse, RuntimeErrorKind};

/// `gcs-runtime-helper <state root>`; the control socket is fd 0.
pub fn main(args: &[String]) -> ExitCode {
    let root = PathBuf::from(
        args.get(1)
            .map(String::as_str)
            .unwrap_or(super::DEFAULT_STATE_ROOT),
    );
    let sock = match crate::sys::adopt_inherited_fd(0) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("{}: no control socket on fd 0: {e}", super::HELPER_NAME);
            return ExitCode::from(1);
        }
    };
    // The runtime's state (each container's config, with its environment) is root's alone.
    if let Err(e) = std::fs::create_dir_all(&root).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
    }) {
        eprintln!(
            "{}: cannot create {}: {e}",
            super::HELPER_NAME,
            root.display()
        );
        return ExitCode::from(1);
    }
    // Container processes inherit this disposition; they must get the default.
    crate::sys::default_sigpipe();
    // And its supplementary groups: libcontainer calls setgroups(2) only for a non-empty
    // `additionalGids`, where runc always does (an empty list clears them).
    if let Err(e) = nix::unistd::setgroups(&[]) {
        eprintln!(
            "{}: cannot clear supplementary groups: {e}",
            super::HELPER_NAME
        );
    }
    // libcontainer changes directory temporarily and needs a cwd that exists meanwhile.
    let _ = std::env::set_current_dir(&root);
    warm_up();
    let mut state = State::new(root);
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, fds) = match channel::recv(sock.as_raw_fd(), &mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => return ExitCode::SUCCESS,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("{}: receive: {e}", super::HELPER_NAME);
                return ExitCode::from(1);
            }
        };
        let response = match serde_json::from_slice::<HelperRequest>(&buf[..n]) {
            Ok(request) => handle(&mut state, request, fds),
            Err(e) => error(RuntimeErrorKind::Other, format!("bad request: {e}")),
        };
        if let Err(e) = send_response(sock.as_raw_fd(), &response) {
            eprintln!("{}: send: {e}", super::HELPER_NAME);
            return ExitCode::from(1);
        }
    }
}

/// Sends `response`; one the channel cannot carry (beyond [`MAX_MESSAGE`], or refused by the
/// socket with `EMSGSIZE`: its send buffer may be smaller) is replaced by an error saying so,
/// rather than ending the helper.
fn send_response(
    sock: std::os::fd::RawFd,
    response: &HelperResponse,
) -> Result<(), nix::errno::Errno> {
    let payload = serde_json::to_vec(response).unwrap_or_default();
    let sent = if payload.len() > MAX_MESSAGE {
        Err(nix::errno::Errno::EMSGSIZE)
    } else {
        channel::send(sock, &payload, &[])
    };
    match sent {
        Err(nix::errno::Errno::EMSGSIZE) => {
            let too_long = error(
                RuntimeErrorKind::Other,
                format!(
                    "the runtime helper's response of {} bytes is more than its channel carries",
                    payload.len()
                ),
            );
            channel::send(
                sock,
                &serde_json::to_vec(&too_long).unwrap_or_default(),
                &[],
            )
        }
        other => other,
    }
}

/// Fills, once, the caches that every process libcontainer forks from here would otherwise fill
/// again for itself (issue 17):
/// - pathrs's cached `/proc` handle (a detached `subset=pid` procfs, close-on-exec): without it
///   each container's intermediate and init process mounts a procfs of its own;
/// - Rust's CPU-feature cache (`std_detect`, which memchr and regex consult): filled lazily, it
///   was probed again in every container init (~0.11 ms).
///
/// fd 1 is taken by `/dev/null` first (the agent starts the helper without one), so that
/// neither the cached handle nor anything else the helper opens lands on a stdio number.
fn warm_up() {
    if nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            // Kept open for the helper's life, on the lowest free number: 1.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(null);
        }
    }
    if let Err(e) = pathrs::procfs::ProcfsHandle::new() {
        eprintln!("{}: no safe /proc handle: {e}", super::HELPER_NAME);
    }
    let _ = std::arch::is_x86_feature_detected!("avx2");
}

/// Longest error text the helper returns, in bytes: libcontainer's errors quote what they
/// refused (a 10 MiB capability name, say), and the host's whole response is 64 KiB at most.
const MAX_ERROR: usize = 4096;

fn error(kind: RuntimeErrorKind, mut message: String) -> HelperResponse {
    if message.len() > MAX_ERROR {
        let mut cut = MAX_ERROR;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    HelperResponse::Error { kind, message }
}

/// libcontainer's errors, classed as runc's messages are (spec §9.2).
fn classify(e: &LibcontainerError) -> RuntimeErrorKind {
    match e {
        LibcontainerError::NoDirectory | LibcontainerError::InvalidID(_) => {
            RuntimeErrorKind::InvalidId
        }
        LibcontainerError::Exist => RuntimeErrorKind::AlreadyExists,
        LibcontainerError::IncorrectStatus(_) => RuntimeErrorKind::StillRunning,
        _ => {
            let text = e.to_string();
            if text.contains("does not exist") || text.contains("not exist") {
                RuntimeErrorKind::NotExist
            } else {
                RuntimeErrorKind::Other
            }
        }
    }
}

fn failed(what: &str, e: LibcontainerError) -> HelperResponse {
    let kind = classify(&e);
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    // What a container process reported comes wrapped in libcontainer's layers; say it as
    // runc does.
    const REPORTED: &str = "error in executing process : ";
    if let Some(i) = message.find(REPORTED) {
        message = format!(
            "{what}: unable to start container process: {}",
            &message[i + REPORTED.len()..]
        );
    }
    error(kind, clean_message(&message))
}

/// A message fit for the host's JSON: libcontainer pads what a container process reports
/// with NUL bytes, and control characters have no place in an error text.
fn clean_message(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '\0')
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// runc's check of an exec's `cwd` (its process.json's, sent along with the request), made
/// before libcontainer is asked (it would report a missing directory only as "failed to unix
/// syscall"): the path is resolved inside the container's root (`/proc/<init>/root`, its mount
/// namespace included) without leaving it.
fn check_exec_cwd(container: &Container, cwd: &str) -> Result<(), HelperResponse> {
    if cwd.is_empty() {
        return Ok(());
    }
    if !cwd.starts_with('/') {
        return Err(error(
            RuntimeErrorKind::Other,
            "Cwd must be an absolute path".into(),
        ));
    }
    // Only a running container's init pid names its root (libcontainer refuses the rest).
    if container.status() != libcontainer::container::ContainerStatus::Running {
        return Ok(());
    }
    let Some(pid) = container.pid() else {
        return Ok(());
    };
    let chdir_error = |errno: i32| {
        error(
            RuntimeErrorKind::Other,
            format!(
                "exec in container: unable to start container process: chdir to cwd ({cwd:?}) set in config.json failed: {}",
                super::executor::errno_text(&std::io::Error::from_raw_os_error(errno))
            ),
        )
    };
    // The magic link is followed once, by open(2); pathrs then resolves inside it.
    let Ok(dir) = std::fs::File::open(format!("/proc/{pid}/root")) else {
        return Ok(());
    };
    let root = pathrs::Root::from_fd(std::os::fd::OwnedFd::from(dir));
    match root.resolve(cwd) {
        Ok(handle) => {
            // An fstat of the O_PATH handle (a reopen would go through /proc).
            let is_dir = nix::sys::stat::fstat(handle.as_fd().as_raw_fd())
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            if is_dir {
                Ok(())
            } else {
                Err(chdir_error(libc::ENOTDIR))
            }
        }
        Err(e) => match e.kind() {
            pathrs::error::ErrorKind::OsError(Some(errno))
                if errno == libc::ENOENT || errno == libc::ENOTDIR =>
            {
                Err(chdir_error(errno))
            }
            _ => Ok(()),
        },
    }
}

fn load(root: &Path, id: &str) -> Result<Container, HelperResponse> {
    let dir = root.join(id);
    if !dir.exists() {
        return Err(error(
            RuntimeErrorKind::NotExist,
            format!("container {id} does not exist"),
        ));
    }
    Container::load(dir).map_err(|e| failed("load container", e))
}

fn with_stdio(
    mut builder: ContainerBuilder,
    stdio: [bool; 3],
    fds: Vec<OwnedFd>,
) -> Result<ContainerBuilder, HelperResponse> {
    let wanted = stdio.iter().filter(|w| **w).count();
    if fds.len() != wanted {
        return Err(error(
            RuntimeErrorKind::Other,
            format!("expected {wanted} stdio fds, got {}", fds.len()),
        ));
    }
    let mut fds = fds.into_iter();
    for (i, want) in stdio.into_iter().enumerate() {
        if !want {
            continue;
        }
        let Some(fd) = fds.next() else { break };
        builder = match i {
            0 => builder.with_stdin(fd),
            1 => builder.with_stdout(fd),
            _ => builder.with_stderr(fd),
        };
    }
    Ok(builder)
}

fn builder(
    root: &Path,
    id: &str,
    console_socket: Option<PathBuf>,
    executor: super::executor::RuncExecutor,
) -> Result<ContainerBuilder, HelperResponse> {
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .and_then(|b| b.validate_id())
        .map(|b| {
            b.with_console_socket(console_socket)
                .with_executor(executor)
        })
        .map_err(|e| failed("container builder", e))
}

/// A created container's own spec (its bundle's config.json).
fn container_spec(
    container: &Container,
) -> Result<libcontainer::oci_spec::runtime::Spec, HelperResponse> {
    let path = container.bundle().join("config.json");
    libcontainer::oci_spec::runtime::Spec::load(&path).map_err(|e| {
        error(
            RuntimeErrorKind::Other,
            format!("read {}: {e}", path.display()),
        )
    })
}

type Seccomp = Option<libcontainer::oci_spec::runtime::LinuxSeccomp>;

/// Containers whose seccomp profile the helper keeps at most (each is a few KiB; a host that
/// creates more without deleting them only costs re-reads).
const SECCOMP_CACHE_LIMIT: usize = 256;

/// What the helper keeps between requests. Nothing here is needed for correctness: a restarted
/// helper starts empty and reads what it needs again.
struct State {
    root: PathBuf,
    /// Each container's `linux.seccomp`, read from its config.json at its first exec (which
    /// every exec's process gets, as runc's exec does); config.json does not change after
    /// Create. Dropped by Delete and by a Create of the same id.
    seccomp: std::collections::HashMap<String, Seccomp>,
}

impl State {
    fn new(root: PathBuf) -> Self {
        Self {
            root,
            seccomp: std::collections::HashMap::new(),
        }
    }

    /// The `linux.seccomp` of a created container's own config.json.
    fn container_seccomp(&mut self, container: &Container) -> Result<Seccomp, HelperResponse> {
        let id = container.id();
        if let Some(profile) = self.seccomp.get(id) {
            return Ok(profile.clone());
        }
        let spec = container_spec(container)?;
        let profile = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        if self.seccomp.len() >= SECCOMP_CACHE_LIMIT {
            self.seccomp.clear();
        }
        self.seccomp.insert(id.to_string(), profile.clone());
        Ok(profile)
    }
}

fn handle(state: &mut State, request: HelperRequest, fds: Vec<OwnedFd>) -> HelperResponse {
    if let HelperRequest::Create { id, .. } | HelperRequest::Delete { id } = &request {
        state.seccomp.remove(id);
    }
    let root = &state.root.clone();
    let result = match request {
        HelperRequest::Create {
            id,
            bundle,
            stdio,
            console_socket,
        } => create(root, &id, &bundle, stdio, console_socket, fds),
        HelperRequest::Start { id } => load(root, &id).and_then(|mut c| {
            c.start()
                .map(|()| HelperResponse::Done)
                .map_err(|e| failed("start container", e))
        }),
        HelperRequest::Exec {
            id,
            process,
            cwd,
            stdio,
            console_socket,
        } => exec(state, &id, &process, &cwd, stdio, console_socket, fds),
        HelperRequest::Delete { id } => load(root, &id).and_then(|mut c| {
            c.delete(true)
                .map(|()| HelperResponse::Done)
                .map_err(|e| failed("delete container", e))
        }),
        HelperRequest::Pids { id } => cgroup(root, &id).and_then(|m| {
            m.get_all_pids()
                .map(|p| HelperResponse::Pids(p.into_iter().map(|p| p.as_raw()).collect()))
                .map_err(|e| error(RuntimeErrorKind::Other, format!("list pids: {e}")))
        }),
        HelperRequest::PodCgroup { path, resources } => {
            pod_cgroup(&path, resources).map(|()| HelperResponse::Done)
        }
        HelperRequest::Update { id, resources } => cgroup(root, &id).and_then(|m| {
            let mut resources: libcontainer::oci_spec::runtime::LinuxResources =
                serde_json::from_value(resources)
                    .map_err(|e| error(RuntimeErrorKind::Other, format!("resources: {e}")))?;
            // The cgroup v2 device program is rebuilt on every apply: from the container's
            // own rules, as `runc update` leaves devices alone.
            if resources.devices().is_none() {
                let spec = container_spec(&load(root, &id)?)?;
                let devices = spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.resources().as_ref())
                    .and_then(|r| r.devices().clone());
                resources.set_devices(devices);
            }
            m.apply(&libcgroups::common::ControllerOpt {
                resources: &resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map(|()| HelperResponse::Done)
            .map_err(|e| error(RuntimeErrorKind::Other, format!("update the cgroup: {e}")))
        }),
        HelperRequest::Stats { id } => cgroup(root, &id).and_then(|m| {
            let mut metrics = m
                .stats()
                .map(|s| super::metrics::to_v1_metrics(&s))
                .map_err(|e| error(RuntimeErrorKind::Other, format!("cgroup statistics: {e}")))?;
            // libcgroups does not read the OOM-kill count; the host sees it as
            // memory_oom_control.oom_kill (omitted while 0, as Go's omitempty).
            let path = load(root, &id)?
                .spec()
                .map_err(|e| failed("container config", e))?
                .cgroup_path;
            let kills = crate::cgroups::events::container_oom_kills(
                Path::new("/sys/fs/cgroup"),
                &path.to_string_lossy(),
            );
            if kills > 0 {
                metrics["memory_oom_control"]["oom_kill"] = serde_json::Value::from(kills);
            }
            Ok(HelperResponse::Stats(metrics))
        }),
    };
    result.unwrap_or_else(|e| e)
}

fn create(
    root: &Path,
    id: &str,
    bundle: &Path,
    stdio: [bool; 3],
    console_socket: Option<PathBuf>,
    fds: Vec<OwnedFd>,
) -> Result<HelperResponse, HelperResponse> {
    let executor = super::executor::RuncExecutor::default();
    let b = with_stdio(builder(root, id, console_socket, executor)?, stdio, fds)?;
    let container = b
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        // The UVM's root is an initramfs, which cannot be pivoted away from (runc --no-pivot).
        .with_no_pivot(true)
        // Intermediate and init become children of the agent, whose reaper collects them.
        .as_sibling(true)
        .build()
        .map_err(|e| failed("create container", e))?;
    let pid = container.pid().ok_or_else(|| {
        error(
            RuntimeErrorKind::Other,
            "created container has no pid".into(),
        )
    })?;
    Ok(HelperResponse::Pid(pid.as_raw()))
}

fn exec(
    state: &mut State,
    id: &str,
    process: &Path,
    cwd: &str,
    stdio: [bool; 3],
    console_socket: Option<PathBuf>,
    fds: Vec<OwnedFd>,
) -> Result<HelperResponse, HelperResponse> {
    let container = load(&state.root, id)?;
    check_exec_cwd(&container, cwd)?;
    let executor = super::executor::RuncExecutor::for_exec(state.container_seccomp(&container)?);
    let b = with_stdio(
        builder(&state.root, id, console_socket, executor)?,
        stdio,
        fds,
    )?;
    let pid = b
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .as_sibling(true)
        .build()
        .map_err(|e| failed("exec in container", e))?;
    Ok(HelperResponse::Pid(pid.as_raw()))
}

/// Applies `resources` to the pod cgroup `path` (made by the sandbox's create), its device
/// rules replaced by allow-all: a parent's device program would otherwise bind every
/// container of the pod (a privileged one included) to the sandbox's rules.
fn pod_cgroup(path: &str, resources: serde_json::Value) -> Result<(), HelperResponse> {
    let mut resources: libcontainer::oci_spec::runtime::LinuxResources =
        serde_json::from_value(resources)
            .map_err(|e| error(RuntimeErrorKind::Other, format!("pod resources: {e}")))?;
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(path),
        systemd_cgroup: false,
        container_name: path.to_string(),
    })
    .map_err(|e| error(RuntimeErrorKind::Other, format!("pod cgroup manager: {e}")))?;
    // cgroup v2: an allow-all program. v1 keeps the pod's inherited allow-all (it cannot be
    // written once the sandbox's restricted cgroup exists below it); only default rules are.
    let devices = match manager {
        libcgroups::common::AnyCgroupManager::V2(_) => Some(vec![
            libcontainer::oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()
                .map_err(|e| error(RuntimeErrorKind::Other, format!("pod device rule: {e}")))?,
        ]),
        _ => None,
    };
    resources.set_devices(devices);
    manager
        .apply(&libcgroups::common::ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| error(RuntimeErrorKind::Other, format!("pod cgroup {path}: {e}")))
}

fn cgroup(root: &Path, id: &str) -> Result<libcgroups::common::AnyCgroupManager, HelperResponse> {
    let container = load(root, id)?;
    let cgroup_path = container
        .spec()
        .map_err(|e| failed("container config", e))?
        .cgroup_path;
    create_cgroup_manager(CgroupConfig {
        cgroup_path,
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|e| error(RuntimeErrorKind::Other, format!("cgroup manager: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_cut_to_what_the_channel_carries() {
        // A multi-byte character across the cut stays whole.
        let text = format!(
            "unknown variant `{}é{}`",
            "A".repeat(MAX_ERROR - 18),
            "B".repeat(10 << 20)
        );
        let HelperResponse::Error { message, .. } = error(RuntimeErrorKind::Other, text) else {
            panic!("not an error");
        };
        assert!(message.len() <= MAX_ERROR + "…".len(), "{}", message.len());
        assert!(message.ends_with("A…"), "{}", &message[message.len() - 8..]);
        let short = error(RuntimeErrorKind::Other, "no such file".into());
        assert!(
            matches!(short, HelperResponse::Error { message, .. } if message == "no such file")
        );
    }

    #[test]
    fn a_response_the_channel_cannot_carry_becomes_an_error() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsRawFd;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut receive = || {
            let (n, _) = channel::recv(theirs.as_raw_fd(), &mut buf)
                .unwrap()
                .unwrap();
            serde_json::from_slice::<HelperResponse>(&buf[..n]).unwrap()
        };
        // Within the channel's limit but beyond the socket's default send buffer (~208 KiB),
        // and beyond the limit: each arrives as an error, and the channel still works.
        // (The first fits a machine whose `net.core.wmem_default` is larger.)
        for pids in [40_000, 100_000] {
            let big = HelperResponse::Pids((0..pids).collect());
            send_response(ours.as_raw_fd(), &big).unwrap();
            match receive() {
                HelperResponse::Error { message, .. } => {
                    assert!(
                        message.contains("is more than its channel carries"),
                        "{message}"
                    )
                }
                HelperResponse::Pids(got) if pids == 40_000 => assert_eq!(got.len(), 40_000),
                other => panic!("{other:?}"),
            }
        }
        send_response(ours.as_raw_fd(), &HelperResponse::Pids(vec![7])).unwrap();
        assert_eq!(receive(), HelperResponse::Pids(vec![7]));
    }
}
