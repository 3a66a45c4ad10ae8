//! Shared harness: run the real `gcs` binary with its bridge on a socketpair (stdin/stdout,
//! `-use-inouterr`) or on hybrid-vsock Unix sockets (`-vsock-uds`), driven by the `host` client.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gcs::host::BridgeClient;

pub mod containerd;
pub mod memlock;
pub mod mutate;
pub mod policy;

pub const GCS: &str = env!("CARGO_BIN_EXE_gcs");

/// A running agent and the host side of its bridge.
pub struct Agent {
    pub child: Child,
    pub client: BridgeClient,
    pub dir: tempfile::TempDir,
    pub sandbox: Option<Sandbox>,
}

impl Agent {
    /// Starts `gcs -use-inouterr <args>`; logs go to `<dir>/gcs.log`.
    pub fn start(args: &[&str]) -> Agent {
        Self::spawn(args, None)
    }

    /// Starts the agent as PID 1 of fresh mount/pid/cgroup namespaces with a private /run and
    /// cgroupfs (tests/sandbox.sh), with `-v4`, and negotiates. Needs root.
    pub async fn sandboxed(args: &[&str]) -> Agent {
        let agent = Self::sandboxed_raw(args);
        agent.client.negotiate().await.unwrap();
        agent
    }

    /// A sandboxed, negotiated agent whose sandbox mounts only the cgroup2 hierarchy at
    /// /sys/fs/cgroup (`GCS_SANDBOX_CGROUP=v2`): libcgroups sees a unified (v2) host even on a
    /// hybrid machine. `blockdevs` as in [`Agent::sandboxed_with_devices`] ("" for none).
    pub async fn sandboxed_on_cgroup_v2(args: &[&str], blockdevs: &str) -> Agent {
        let sandbox = Sandboxing {
            cgroup_v2: true,
            blockdevs,
            ..Sandboxing::default()
        };
        let agent = Self::sandboxed_inner(args, sandbox, false);
        agent.client.negotiate().await.unwrap();
        agent
    }

    /// A sandboxed, negotiated agent whose private /dev has `blockdevs` ("pmem0=7:3 ...").
    pub async fn sandboxed_with_devices(args: &[&str], blockdevs: &str) -> Agent {
        let sandbox = Sandboxing {
            blockdevs,
            ..Sandboxing::default()
        };
        let agent = Self::sandboxed_inner(args, sandbox, false);
        agent.client.negotiate().await.unwrap();
        agent
    }

    /// A sandboxed, negotiated agent in a fresh network namespace of its own (only `lo`).
    pub async fn sandboxed_with_network(args: &[&str]) -> Agent {
        let sandbox = Sandboxing {
            net: true,
            ..Sandboxing::default()
        };
        let agent = Self::sandboxed_inner(args, sandbox, false);
        agent.client.negotiate().await.unwrap();
        agent
    }

    /// A sandboxed agent with `-v4` that has not negotiated (for replaying raw traces).
    pub fn sandboxed_raw(args: &[&str]) -> Agent {
        Self::sandboxed_inner(args, Sandboxing::default(), false)
    }

    /// A sandboxed, negotiated agent whose bridge is a vsock (hybrid-vsock Unix socket)
    /// connection that it dials and redials, as in a UVM: the host can drop it.
    pub async fn sandboxed_over_vsock(args: &[&str]) -> Agent {
        Self::sandboxed_inner(args, Sandboxing::default(), true)
            .take_vsock_bridge()
            .await
    }

    /// Accepts the agent's vsock dial and negotiates on it with the harness client.
    async fn take_vsock_bridge(mut self) -> Agent {
        let stream = tokio::time::timeout(Duration::from_secs(10), self.host().accept_bridge())
            .await
            .expect("the agent did not dial its bridge")
            .unwrap();
        self.client = BridgeClient::new(stream);
        self.client.negotiate().await.unwrap();
        self
    }

    /// A sandboxed agent over vsock whose /dev is private (no block devices of this machine)
    /// and whose network namespace is fresh: for fuzzing with requests that name devices and
    /// NICs. The harness client is negotiated; tests may detach it and take the redial.
    pub async fn sandboxed_isolated_over_vsock(args: &[&str]) -> Agent {
        let sandbox = Sandboxing {
            blockdevs: "fuzznull=c:1:3",
            net: true,
            cgroup_v2: false,
        };
        Self::sandboxed_inner(args, sandbox, true)
            .take_vsock_bridge()
            .await
    }

    fn sandboxed_inner(args: &[&str], sandbox: Sandboxing<'_>, over_vsock: bool) -> Agent {
        assert!(
            nix::unistd::geteuid().is_root(),
            "container tests need root"
        );
        let mut all = vec!["-v4"];
        all.extend_from_slice(args);
        let mut agent = Self::spawn_mode(&all, Some(sandbox), over_vsock);
        let record = agent.dir.path().join("cgroups");
        // Only once the sandbox's PID 1 is the agent itself are its private /run and cgroupfs
        // mounted; before that, paths under /proc/<pid>/root would reach this machine's own.
        let gcs = std::fs::canonicalize(agent_binary()).unwrap();
        // Under a GCS_TEST_WRAPPER, whatever replaced the sandbox's own shell
        // (tests/sandbox.sh's `sh -c`) runs the agent.
        let shell = test_wrapper().and_then(|_| std::fs::canonicalize("/bin/sh").ok());
        let running = |exe: PathBuf| exe == gcs || shell.as_ref().is_some_and(|sh| exe != *sh);
        let mut ready = false;
        for _ in 0..1000 {
            let children =
                std::fs::read_to_string(format!("/proc/{}/task/{0}/children", agent.child.id()))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(&running) {
                    ready = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ready, "sandboxed agent did not start");
        let text = std::fs::read_to_string(record).unwrap();
        agent.sandbox = Some(Sandbox {
            cgroups: text.lines().map(PathBuf::from).collect(),
        });
        agent
    }

    /// `sandboxed`: how tests/sandbox.sh isolates the agent (`None`: not at all).
    fn spawn(args: &[&str], sandboxed: Option<Sandboxing<'_>>) -> Agent {
        Self::spawn_mode(args, sandboxed, false)
    }

    /// `over_vsock`: the bridge is dialed on the hybrid-vsock prefix instead of stdin/stdout
    /// (the returned client is then a placeholder until the caller accepts the dial).
    fn spawn_mode(args: &[&str], sandboxed: Option<Sandboxing<'_>>, over_vsock: bool) -> Agent {
        let (child, dir, ours) = Self::spawn_child(args, sandboxed, over_vsock);
        ours.set_nonblocking(true).unwrap();
        let client = BridgeClient::new(tokio::net::UnixStream::from_std(ours).unwrap());
        let sandbox = sandboxed.map(|_| Sandbox {
            cgroups: Vec::new(),
        });
        Agent {
            child,
            client,
            dir,
            sandbox,
        }
    }

    /// Starts `gcs -use-inouterr <args>` with the host's end of its bridge as a plain blocking
    /// socket: nothing reads it unless the caller does (a host that stopped reading).
    pub fn start_raw(args: &[&str]) -> RawAgent {
        let (child, dir, bridge) = Self::spawn_child(args, None, false);
        RawAgent { child, dir, bridge }
    }

    fn spawn_child(
        args: &[&str],
        sandboxed: Option<Sandboxing<'_>>,
        over_vsock: bool,
    ) -> (Child, tempfile::TempDir, StdUnixStream) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = StdUnixStream::pair().unwrap();
        let log = std::fs::File::create(dir.path().join("gcs.log")).unwrap();
        let record = dir.path().join("cgroups");
        let mut cmd = match sandboxed {
            Some(sandbox) => {
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut c = sandbox_command(
                    &format!("{}-{n}", std::process::id()),
                    &record,
                    sandbox.cgroup_v2,
                );
                c.args(agent_command())
                    .env("GCS_SANDBOX_BLOCKDEVS", sandbox.blockdevs);
                if sandbox.net {
                    c.env("GCS_SANDBOX_NET", "1");
                }
                c
            }
            None => {
                let [program, args @ ..] = &agent_command()[..] else {
                    unreachable!("agent_command names at least the agent")
                };
                let mut c = Command::new(program);
                c.args(args);
                c
            }
        };
        if !over_vsock {
            cmd.arg("-use-inouterr");
        }
        // Fault injection (debug builds only) for the crash tests; the agent's working
        // directory is its own, so a core it dumps lands there.
        cmd.env("GCS_FAULT_INJECTION", "1")
            .current_dir(dir.path())
            .arg("-vsock-uds")
            .arg(dir.path().join("vm.vsock"))
            .args(args)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                theirs.try_clone().unwrap(),
            )))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stderr(Stdio::from(log));
        let child = spawn_in_sandbox(&mut cmd, sandboxed.is_some_and(|s| s.cgroup_v2)).unwrap();
        (child, dir, ours)
    }

    /// The agent's pid on this machine (the sandbox's PID 1 when sandboxed).
    pub fn agent_pid(&self) -> u32 {
        let outer = self.child.id();
        if self.sandbox.is_none() {
            return outer;
        }
        for _ in 0..500 {
            let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("sandboxed agent not found");
    }

    /// The agent's view of the filesystem (its private /run included).
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.agent_pid()))
    }

    /// Starts the agent with `-v4` and negotiates.
    pub async fn negotiated(args: &[&str]) -> Agent {
        let mut all = vec!["-v4"];
        all.extend_from_slice(args);
        let agent = Agent::start(&all);
        agent.client.negotiate().await.unwrap();
        agent
    }

    /// The host side of the agent's stdio and Plan9 ports.
    pub fn host(&self) -> gcs::host::HybridVsock {
        gcs::host::HybridVsock::new(self.dir.path().join("vm.vsock"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gcs.log")).unwrap_or_default()
    }

    /// True while the agent process has not exited.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the agent to exit, up to `timeout`.
    /// Polls asynchronously so that the test's own runtime keeps running meanwhile.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(sandbox) = &self.sandbox {
            sandbox.remove_cgroups();
        }
    }
}

/// The agent binary the harness runs: `GCS_TEST_BINARY` (the release build in out/, which
/// `make bench` and tests/robustness.rs's memory figures measure: the shipped binary, with
/// the code layout of `link/gcs.order` resolved for it), else this build's `gcs`.
pub fn agent_binary() -> String {
    std::env::var("GCS_TEST_BINARY")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| GCS.into())
}

/// `GCS_TEST_WRAPPER`: a program every agent the harness starts runs under, given the agent's
/// path and arguments (scripts/orderfile.sh profiles the agent with it).
fn test_wrapper() -> Option<String> {
    std::env::var("GCS_TEST_WRAPPER")
        .ok()
        .filter(|w| !w.is_empty())
}

/// What starts an agent, before its own arguments: the wrapper if any, then the binary.
fn agent_command() -> Vec<String> {
    test_wrapper().into_iter().chain([agent_binary()]).collect()
}

/// How tests/sandbox.sh isolates an agent.
#[derive(Debug, Clone, Copy, Default)]
struct Sandboxing<'a> {
    /// Block devices of the sandbox's private /dev ("pmem0=7:3 ..."; "" for the shared /dev).
    blockdevs: &'a str,
    /// A fresh network namespace (only `lo`).
    net: bool,
    /// Only the cgroup2 hierarchy, at /sys/fs/cgroup (`GCS_SANDBOX_CGROUP=v2`).
    cgroup_v2: bool,
}

/// `tests/sandbox.sh NAME` with its record file and cgroup mode; the caller adds the command.
pub fn sandbox_command(name: &str, record: &Path, cgroup_v2: bool) -> Command {
    let mut c = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sandbox.sh"));
    c.arg(name).env("GCS_SANDBOX_RECORD", record);
    if cgroup_v2 {
        c.env("GCS_SANDBOX_CGROUP", "v2");
    } else {
        c.env_remove("GCS_SANDBOX_CGROUP");
    }
    c
}

/// Spawns a [`sandbox_command`]; on cgroup v2 where libcgroups could not raise
/// `RLIMIT_MEMLOCK` for its device program, under [`memlock`]'s filter.
pub fn spawn_in_sandbox(cmd: &mut Command, cgroup_v2: bool) -> std::io::Result<Child> {
    if cgroup_v2 && memlock::raise_would_fail() {
        memlock::spawn(cmd)
    } else {
        cmd.spawn()
    }
}

/// Runs `program args` as PID 1 of a fresh sandbox (tests/sandbox.sh; `cgroup_v2`: only the
/// cgroup2 hierarchy) with stdout captured and stderr inherited, then removes the sandbox's
/// cgroups. Needs root.
pub fn run_sandboxed(program: &Path, args: &[&str], cgroup_v2: bool) -> std::process::Output {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("cgroups");
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut cmd = sandbox_command(
        &format!("run-{}-{n}", std::process::id()),
        &record,
        cgroup_v2,
    );
    cmd.arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = spawn_in_sandbox(&mut cmd, cgroup_v2)
        .unwrap()
        .wait_with_output()
        .unwrap();
    let text = std::fs::read_to_string(&record).unwrap_or_default();
    Sandbox {
        cgroups: text.lines().map(PathBuf::from).collect(),
    }
    .remove_cgroups();
    output
}

/// An agent whose bridge the test drives byte by byte (see [`Agent::start_raw`]).
pub struct RawAgent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub bridge: StdUnixStream,
}

impl RawAgent {
    /// Writes one request frame.
    pub fn send(&mut self, message_type: u32, id: u64, payload: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let frame = gcs::protocol::header::encode_frame(
            gcs::protocol::MessageType(message_type),
            id,
            payload,
        );
        self.bridge.write_all(&frame)
    }

    /// Reads one frame: its header and payload.
    pub fn recv(&mut self) -> std::io::Result<(gcs::protocol::MessageHeader, Vec<u8>)> {
        use std::io::Read;
        let mut header = [0u8; gcs::protocol::HEADER_LEN];
        self.bridge.read_exact(&mut header)?;
        let header = gcs::protocol::MessageHeader::decode(&header);
        let mut payload = vec![0u8; header.size as usize - gcs::protocol::HEADER_LEN];
        self.bridge.read_exact(&mut payload)?;
        Ok((header, payload))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gcs.log")).unwrap_or_default()
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`, `Threads`).
    pub fn status_kib(&self, field: &str) -> u64 {
        status_field(self.child.id(), field)
    }
}

impl Drop for RawAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS` and `VmHWM` in KiB, `Threads`).
pub fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The namespaces and cgroups of a sandboxed agent (see tests/sandbox.sh).
pub struct Sandbox {
    pub cgroups: Vec<PathBuf>,
}

impl Sandbox {
    /// Removes the run's cgroups, deepest first, once their processes are gone.
    pub fn remove_cgroups(&self) {
        for root in &self.cgroups {
            let mut dirs = Vec::new();
            collect_dirs(root, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                for _ in 0..100 {
                    match std::fs::remove_dir(&d) {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        }
    }

    /// `<sandbox cgroup>/<rel>` in every hierarchy that has it.
    pub fn cgroup_dirs(&self, rel: &str) -> Vec<PathBuf> {
        self.cgroups
            .iter()
            .map(|c| c.join(rel.trim_start_matches('/')))
            .collect()
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
    if dir.exists() {
        out.push(dir.to_path_buf());
    }
}

/// The repository's copy of the real bridge traces.
pub fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces")
}

/// One line of a `.jsonl` trace.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TraceFrame {
    pub dir: String,
    #[serde(rename = "type")]
    pub message_type: String,
    pub id: u64,
    pub size: u32,
    pub body: serde_json::Value,
}

impl TraceFrame {
    pub fn type_u32(&self) -> u32 {
        u32::from_str_radix(self.message_type.trim_start_matches("0x"), 16).unwrap()
    }
    pub fn is_host_request(&self) -> bool {
        self.dir == "host->guest"
    }
}

pub fn read_trace(name: &str) -> Vec<TraceFrame> {
    let text = std::fs::read_to_string(traces_dir().join(name)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn all_traces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(traces_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
}

/// The host side of one process's stdio: a listener per requested stream.
pub struct HostStdio {
    pub ports: gcs::protocol::messages::VsockStdioRelaySettings,
    listeners: [Option<tokio::net::UnixListener>; 3],
}

impl HostStdio {
    /// Listens for the requested streams on fresh ports and sets the matching flags.
    pub fn listen(
        agent: &Agent,
        params: &mut gcs::protocol::messages::ProcessParameters,
        want: [bool; 3],
    ) -> HostStdio {
        static PORTS: std::sync::OnceLock<gcs::host::StdioPorts> = std::sync::OnceLock::new();
        let ports = PORTS.get_or_init(Default::default);
        let host = agent.host();
        let mut out = HostStdio {
            ports: Default::default(),
            listeners: [None, None, None],
        };
        for (i, w) in want.into_iter().enumerate() {
            if !w {
                continue;
            }
            let port = ports.allocate();
            out.listeners[i] = Some(host.listen(port).unwrap());
            match i {
                0 => (params.create_std_in_pipe, out.ports.std_in) = (true, port),
                1 => (params.create_std_out_pipe, out.ports.std_out) = (true, port),
                _ => (params.create_std_err_pipe, out.ports.std_err) = (true, port),
            }
        }
        out
    }

    /// Accepts the agent's connections: (stdin, stdout, stderr).
    pub async fn accept(
        self,
    ) -> (
        Option<tokio::net::UnixStream>,
        Option<tokio::net::UnixStream>,
        Option<tokio::net::UnixStream>,
    ) {
        let [i, o, e] = self.listeners;
        (accept(i).await, accept(o).await, accept(e).await)
    }
}

async fn accept(l: Option<tokio::net::UnixListener>) -> Option<tokio::net::UnixStream> {
    match l {
        Some(l) => Some(
            tokio::time::timeout(Duration::from_secs(10), l.accept())
                .await
                .unwrap()
                .unwrap()
                .0,
        ),
        None => None,
    }
}

/// Reads a stream to EOF (the agent's half-close), then closes it as the host does.
pub async fn read_all(s: Option<tokio::net::UnixStream>) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    if let Some(mut s) = s {
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes a busybox layer inside the agent's private /run, at /run/layers/p0.
pub fn busybox_layer(agent: &Agent) -> &'static str {
    // The recorded traces use this path for their one layer.
    let layers = agent.root().join("run/layers");
    if !layers.join("p0/bin/busybox").exists() {
        std::fs::create_dir_all(&layers).unwrap();
        let tree = gcs::host::layers::busybox_tree(&layers).unwrap();
        std::fs::rename(tree, layers.join("p0")).unwrap();
    }
    "/run/layers/p0"
}

/// The real host's container spec from trace 09, with other arguments.
pub fn trace_spec(args: &[&str]) -> serde_json::Value {
    let text = std::fs::read_to_string(traces_dir().join("09-container-lifecycle.jsonl")).unwrap();
    for line in text.lines() {
        let frame: serde_json::Value = serde_json::from_str(line).unwrap();
        if frame["type"] == "0x10100101" {
            let config: serde_json::Value =
                serde_json::from_str(frame["body"]["ContainerConfig"].as_str().unwrap()).unwrap();
            let mut spec = config["OciSpecification"].clone();
            spec["process"]["args"] = serde_json::json!(args);
            return spec;
        }
    }
    panic!("no Create in trace 09");
}

/// Drives all `futures` concurrently on the current task; results in order.
pub async fn join_all<T, F: std::future::Future<Output = T>>(
    futures: impl Iterator<Item = F>,
) -> Vec<T> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut done: Vec<Option<T>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// ModifySettings CombinedLayers Add of `layer` as the rootfs of container `id`, with its
/// scratch in the bundle, as the V1 shim lays them out.
pub async fn add_rootfs(client: &BridgeClient, id: &str, layer: &str) {
    let request = gcs::protocol::messages::ModifySettingRequest {
        resource_type: "CombinedLayers".into(),
        request_type: "Add".into(),
        settings: Some(
            serde_json::json!({"ContainerID": id, "ContainerRootPath": format!("/run/gcs/c/{id}/rootfs"),
            "Layers": [{"Path": layer}], "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")}),
        ),
    };
    client
        .modify_settings(gcs::protocol::NULL_CONTAINER_ID, request)
        .await
        .unwrap();
}

/// A loop device over an image, detached on drop.
#[derive(Debug)]
pub struct Loop {
    pub dev: PathBuf,
}

impl Loop {
    pub fn attach(image: &Path, read_only: bool) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if read_only {
            cmd.arg("-r");
        }
        let out = cmd.arg(image).output().unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        Loop {
            dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
        }
    }

    /// `name=major:minor` for the sandbox's private /dev.
    pub fn node(&self, name: &str) -> String {
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        format!(
            "{name}={}:{}",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        )
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Create settings for container `id` with `spec`, in the V1 shim's layout (bundle
/// `/run/gcs/c/<id>`, scratch inside it).
pub fn container_settings(
    id: &str,
    spec: serde_json::Value,
) -> gcs::protocol::messages::ContainerSettings {
    gcs::protocol::messages::ContainerSettings {
        schema_version: gcs::protocol::messages::SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(spec),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    }
}

/// `/etc/passwd` of the image used to compare against runc (issue 11's fixture).
pub const USERS_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
/// `/etc/group` of that image: alice is a member of staff.
pub const USERS_GROUP: &str = "root:x:0:\nstaff:x:50:alice\nalice:x:1000:\nnogroup:x:65534:\n";

/// A busybox tree in `dir` with [`USERS_PASSWD`], [`USERS_GROUP`], `/root`, `/home/alice`,
/// a non-executable `/noexec`, a `/garbage` with execute bits but no format, and a
/// directory `/secret` only root may enter. Returns its path.
pub fn users_tree(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tree = gcs::host::layers::busybox_tree(dir).unwrap();
    std::fs::write(tree.join("etc/passwd"), USERS_PASSWD).unwrap();
    std::fs::write(tree.join("etc/group"), USERS_GROUP).unwrap();
    for d in ["root", "home/alice", "secret"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::set_permissions(tree.join("secret"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        tree.join("home/alice"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(tree.join("home/alice"), Some(1000), Some(1000)).unwrap();
    std::fs::write(tree.join("noexec"), "#!/bin/sh\necho no\n").unwrap();
    std::fs::set_permissions(tree.join("noexec"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(tree.join("garbage"), "garbage").unwrap();
    std::fs::set_permissions(tree.join("garbage"), std::fs::Permissions::from_mode(0o755)).unwrap();
    tree
}

/// The [`users_tree`] layer inside the agent's private /run, at /run/layers/users.
pub fn users_layer(agent: &Agent) -> &'static str {
    let layers = agent.root().join("run/layers");
    if !layers.join("users/bin/busybox").exists() {
        std::fs::create_dir_all(&layers).unwrap();
        let tmp = tempfile::tempdir_in(&layers).unwrap();
        let tree = users_tree(tmp.path());
        std::fs::rename(tree, layers.join("users")).unwrap();
    }
    "/run/layers/users"
}

/// What a container process printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: u32,
    pub stdout: String,
    pub stderr: String,
}

/// Host ends of a started process's stdio, and its pid.
pub struct Started {
    pub pid: u32,
    pub stdin: Option<tokio::net::UnixStream>,
    pub stdout: Option<tokio::net::UnixStream>,
    pub stderr: Option<tokio::net::UnixStream>,
}

impl Started {
    /// Reads both streams to their end and waits for the exit code; stdin stays open until
    /// then (a terminal's relay would send EOF otherwise).
    pub async fn finish(self, agent: &Agent, id: &str) -> Outcome {
        let (stdout, stderr) = tokio::join!(read_all(self.stdout), read_all(self.stderr));
        let code = agent
            .client
            .wait_for_process(id, self.pid, gcs::protocol::INFINITE_WAIT)
            .await
            .unwrap();
        drop(self.stdin);
        Outcome {
            code,
            stdout,
            stderr,
        }
    }
}

/// Runs a process through ExecuteProcess (`oci_process` `None`: the container's init) with
/// stdin (kept open), stdout, and stderr unless it is a terminal.
pub async fn start_process(
    agent: &Agent,
    id: &str,
    oci_process: Option<serde_json::Value>,
    terminal: bool,
) -> Result<Started, String> {
    let mut params = gcs::protocol::messages::ProcessParameters {
        oci_process,
        ..Default::default()
    };
    let stdio = HostStdio::listen(agent, &mut params, [true, true, !terminal]);
    let pid = agent
        .client
        .execute_process(id, &params, stdio.ports)
        .await
        .map_err(|e| e.to_string())?;
    let (stdin, stdout, stderr) = stdio.accept().await;
    Ok(Started {
        pid,
        stdin,
        stdout,
        stderr,
    })
}

/// Runs container `id`'s init (ExecuteProcess with no OCI process) with only a stdout, which it
/// dials on `port` of `host`; its pid and the listener that stdout connects to.
pub async fn start_init_stdout_only(
    client: &BridgeClient,
    host: &gcs::host::HybridVsock,
    id: &str,
    port: u32,
) -> (u32, tokio::net::UnixListener) {
    let listener = host.listen(port).unwrap();
    let params = gcs::protocol::messages::ProcessParameters {
        create_std_out_pipe: true,
        ..Default::default()
    };
    let pid = client
        .execute_process(
            id,
            &params,
            gcs::protocol::messages::VsockStdioRelaySettings {
                std_out: port,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (pid, listener)
}

/// A container made from `layer` with `spec` (CombinedLayers Add, Create, Start), whose init
/// has not run yet. On a Create error, the rootfs is removed again and the error returned.
pub async fn create_container(
    agent: &Agent,
    id: &str,
    layer: &str,
    spec: serde_json::Value,
) -> Result<(), String> {
    add_rootfs(&agent.client, id, layer).await;
    match agent
        .client
        .create_container(id, &container_settings(id, spec))
        .await
    {
        Ok(()) => {
            agent.client.start_container(id).await.unwrap();
            Ok(())
        }
        Err(e) => {
            remove_rootfs(&agent.client, id).await;
            Err(e.to_string())
        }
    }
}

/// CombinedLayers Remove of container `id`'s rootfs.
pub async fn remove_rootfs(client: &BridgeClient, id: &str) {
    let request = gcs::protocol::messages::ModifySettingRequest {
        resource_type: "CombinedLayers".into(),
        request_type: "Remove".into(),
        settings: Some(serde_json::json!({"ContainerRootPath": format!("/run/gcs/c/{id}/rootfs")})),
    };
    client
        .modify_settings(gcs::protocol::NULL_CONTAINER_ID, request)
        .await
        .unwrap();
}

/// Kills a container's init (SIGKILL), waits for it, and destroys the container.
pub async fn kill_and_destroy(agent: &Agent, id: &str, init: Started) {
    agent
        .client
        .signal_process(id, init.pid, Some(9))
        .await
        .unwrap();
    init.finish(agent, id).await;
    destroy_container(agent, id).await;
}

/// After the init exited and was waited for: its notification, rootfs removal and
/// DeleteContainerState.
pub async fn destroy_container(agent: &Agent, id: &str) {
    agent
        .client
        .next_notification(Duration::from_secs(20))
        .await
        .unwrap();
    remove_rootfs(&agent.client, id).await;
    agent.client.delete_container_state(id).await.unwrap();
}

/// Docker's default seccomp profile, written from the facts of its public definition (moby's
/// `profiles/seccomp/default.json`): deny with EPERM by default; allow the usual syscalls;
/// `personality` only for the standard personas; `clone` only without namespace flags (no
/// `CAP_SYS_ADMIN` in the container); `clone3` answered ENOSYS so that libc falls back.
pub fn docker_default_profile() -> serde_json::Value {
    const ALLOWED: &str =
        "accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod \
chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime \
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range \
creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 \
epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 \
fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 \
fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat \
fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 \
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 \
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp \
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit \
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday \
getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel \
ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup \
io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown \
lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr \
lstat lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat \
mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open \
mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl \
msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat \
_newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free \
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease \
pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv \
recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2 \
restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn \
rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity \
sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler \
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr \
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop \
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid \
setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid \
setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit \
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat \
shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socket \
socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync \
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun \
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime \
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit \
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid \
waitpid write writev arch_prctl modify_ldt";
    let names: Vec<&str> = ALLOWED.split_whitespace().collect();
    let personas = [0u64, 8, 0x20000, 0x20008, 0xffff_ffff].map(|v| {
        serde_json::json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]})
    });
    let mut syscalls = vec![serde_json::json!({"names": names, "action": "SCMP_ACT_ALLOW"})];
    syscalls.extend(personas);
    syscalls.push(serde_json::json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 2_114_060_288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
    syscalls
        .push(serde_json::json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
           "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
           "syscalls": syscalls})
}

/// A guest and its bridge in this process, served over in-memory streams. The guest dials Unix
/// sockets under `dir`, where nothing listens (never this machine's vsock), and asks `enforcer`
/// (the open door when `None`).
pub fn in_process_bridge(
    dir: &Path,
    enforcer: Option<std::sync::Arc<dyn gcs::policy::Enforcer>>,
) -> (
    std::sync::Arc<gcs::guest::Guest>,
    std::sync::Arc<gcs::bridge::Bridge>,
) {
    let (mut guest, queue) = gcs::guest::Guest::new(
        gcs::transport::Dialer::new(Some(dir.join("vm.vsock"))),
        gcs::guest::Reaper::new(),
        std::env::temp_dir(),
    );
    if let Some(enforcer) = enforcer {
        guest.set_initial_enforcer(enforcer);
    }
    let bridge = gcs::bridge::Bridge::new(
        std::sync::Arc::clone(&guest),
        queue,
        gcs::bridge::BridgeConfig {
            v4: true,
            scrub_logs: true,
            sequential: false,
            boot_marker: false,
        },
    );
    (guest, bridge)
}

/// A ModifySettings request of `resource` (`Add`, `Remove`, ...) with `settings`.
pub fn modify(
    resource: &str,
    request: &str,
    settings: serde_json::Value,
) -> gcs::protocol::messages::ModifySettingRequest {
    gcs::protocol::messages::ModifySettingRequest {
        resource_type: resource.into(),
        request_type: request.into(),
        settings: Some(settings),
    }
}
