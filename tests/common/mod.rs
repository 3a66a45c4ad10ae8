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

use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gcs::host::BridgeClient;

pub const GCS: &str = env!("CARGO_BIN_EXE_gcs");

/// A running agent and the host side of its bridge.
pub struct Agent {
    pub child: Child,
    pub client: BridgeClient,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `gcs -use-inouterr <args>`; logs go to `<dir>/gcs.log`.
    pub fn start(args: &[&str]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = StdUnixStream::pair().unwrap();
        let log = std::fs::File::create(dir.path().join("gcs.log")).unwrap();
        let child = Command::new(GCS)
            .arg("-use-inouterr")
            .arg("-vsock-uds")
            .arg(dir.path().join("vm.vsock"))
            .args(args)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                theirs.try_clone().unwrap(),
            )))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        ours.set_nonblocking(true).unwrap();
        let client = BridgeClient::new(tokio::net::UnixStream::from_std(ours).unwrap());
        Agent { child, client, dir }
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
