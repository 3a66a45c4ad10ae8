//! A private containerd for the shim's tests and benchmark: Debian's `containerd`, its root,
//! state, sockets and temporary files under one directory, in a private mount namespace with a
//! tmpfs of its own on `/run` (the shim's ttrpc sockets go to `/run/containerd/s`), and
//! `containerd-shim-gcs-v2` first on its `PATH`. ctr's FIFOs go under the directory too
//! (`--fifo-dir`). Dropping it kills containerd (its namespace and mounts go with it) and
//! removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The image every test runs: busybox, built here as an OCI archive (no registry).
pub const IMAGE: &str = "docker.io/library/busybox:gcs";

/// The shim binary cargo built for this test run.
pub fn shim_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-gcs-v2"))
}

#[derive(Debug)]
pub struct Containerd {
    pub dir: PathBuf,
    child: Child,
    /// The namespace ctr works in: `gcs`, or the CRI's `k8s.io`.
    namespace: &'static str,
    env: Vec<(String, String)>,
    /// How many times containerd was started (its log file is per start).
    starts: u32,
}

/// containerd on `dir`'s config, in a mount namespace of its own with a tmpfs on `/run`;
/// `generation` numbers its log (`containerd.log`, then `containerd.<n>.log`).
fn spawn_daemon(dir: &Path, env: &[(String, String)], generation: u32) -> Child {
    let shim_dir = shim_binary().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let name = if generation == 0 {
        "containerd.log".to_string()
    } else {
        format!("containerd.{generation}.log")
    };
    let log = std::fs::File::create(dir.join(name)).unwrap();
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .args(["setpriv", "--pdeathsig", "KILL", "--"])
        .args([
            "sh",
            "-c",
            "mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/containerd && exec containerd --config \"$1\"",
            "containerd",
        ])
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        .env("TMPDIR", dir.join("tmp"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // After a failed test: the shims and their VMs first (they outlive containerd).
        for p in self.processes_left() {
            if let Some(pid) = p.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = format!("sha256:{:x}", Sha256::digest(bytes));
    std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
    (digest, bytes.len())
}

/// The pod sandbox image of the CRI tests: busybox whose entrypoint waits for SIGTERM, as
/// `pause` does.
pub const PAUSE_IMAGE: &str = "docker.io/library/pause:gcs";

/// An OCI image archive of busybox (one uncompressed layer, linux/amd64) named `name`, as
/// `ctr images import` takes it; `entrypoint` is its config's.
pub fn busybox_archive(dir: &Path, name: &str, entrypoint: &[&str]) -> PathBuf {
    let dir = dir.join(name.replace(['/', ':'], "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.as_path();
    let tree = gcs::host::layers::busybox_tree(dir).unwrap();
    let layout = dir.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer_tar = dir.join("layer.tar");
    let status = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&tree)
        .arg("-cf")
        .arg(&layer_tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let (layer, layer_size) = write_blob(&blobs, &std::fs::read(&layer_tar).unwrap());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"],
                   "Entrypoint": if entrypoint.is_empty() { serde_json::Value::Null } else { serde_json::json!(entrypoint) }},
        "rootfs": {"type": "layers", "diff_ids": [layer]}
    });
    let (config, config_size) = write_blob(&blobs, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}]
    });
    let (manifest, manifest_size) = write_blob(&blobs, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
            "size": manifest_size, "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "gcs"}}]
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = dir.join("busybox-oci.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    archive
}

impl Containerd {
    /// Starts containerd with the busybox image imported. `env` is added to containerd's (and
    /// so the shims') environment.
    pub fn start(env: &[(&str, &str)]) -> Containerd {
        Self::start_with(env, false)
    }

    /// With `cri`, containerd's CRI plugin serves on the same socket with
    /// `io.containerd.gcs.v2` as its default runtime, [`PAUSE_IMAGE`] as the sandbox image and
    /// no CNI (pods use host networking: the VM's network); the images go to `k8s.io`.
    pub fn start_with(env: &[(&str, &str)], cri: bool) -> Containerd {
        assert!(
            Path::new("/usr/bin/containerd").exists(),
            "containerd is not installed (scripts/install-deps.sh installs it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir()
            .unwrap()
            .keep();
        // Short: the VMs' vsock sockets are made under TMPDIR and Unix paths stop at 108 bytes.
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::create_dir_all(dir.join("fifo")).unwrap();
        let plugins = if cri {
            std::fs::create_dir_all(dir.join("cni/bin")).unwrap();
            std::fs::create_dir_all(dir.join("cni/conf")).unwrap();
            format!(
                "[plugins.\"io.containerd.grpc.v1.cri\"]\n\
                 \x20 sandbox_image = \"{PAUSE_IMAGE}\"\n\
                 \x20 disable_apparmor = true\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n\
                 \x20 default_runtime_name = \"gcs\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.gcs]\n\
                 \x20 runtime_type = \"io.containerd.gcs.v2\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
                 \x20 bin_dir = \"{d}/cni/bin\"\n\
                 \x20 conf_dir = \"{d}/cni/conf\"\n",
                d = dir.display()
            )
        } else {
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n".to_string()
        };
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n{plugins}",
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn_daemon(&dir, &env, 0);
        let c = Containerd {
            dir,
            child,
            namespace: if cri { "k8s.io" } else { "gcs" },
            env,
            starts: 1,
        };
        c.wait_for_socket();
        let mut images = vec![busybox_archive(&c.dir, IMAGE, &[])];
        if cri {
            let pause = [
                "sh",
                "-c",
                "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done",
            ];
            images.push(busybox_archive(&c.dir, PAUSE_IMAGE, &pause));
        }
        for archive in images {
            let out = c.ctr(&["images", "import"], &[archive.to_str().unwrap()]);
            assert!(out.status.success(), "import: {}", text(&out.stderr));
        }
        c
    }

    /// The socket of containerd's gRPC API (and of the CRI, when it is on).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn wait_for_socket(&self) {
        let start = Instant::now();
        while !self.dir.join("containerd.sock").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// containerd dies (SIGKILL) and a new one starts on the same root and state, in a mount
    /// namespace of its own: the shims it finds in its state are out of its reach (their
    /// sockets are in the dead one's `/run`), as after a crash that lost `/run`.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("containerd.sock"));
        self.child = spawn_daemon(&self.dir, &self.env, self.starts);
        self.starts += 1;
        self.wait_for_socket();
    }

    /// containerd's pid (its mount namespace holds the shims' mounts).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The logs of every start of containerd, oldest first.
    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        for n in 1..self.starts {
            let path = self.dir.join(format!("containerd.{n}.log"));
            log.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        log
    }

    /// A `ctr` command on this containerd, in its namespace: `ctr <sub...> [--fifo-dir] <rest>`;
    /// run and task exec take the FIFO directory.
    pub fn command(&self, sub: &[&str], rest: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", self.namespace])
            .args(sub);
        if sub == ["run"] || sub == ["task", "exec"] {
            c.arg("--fifo-dir").arg(self.dir.join("fifo"));
        }
        c.args(rest);
        c
    }

    pub fn ctr(&self, sub: &[&str], rest: &[&str]) -> Output {
        self.command(sub, rest)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ctr run --runtime io.containerd.gcs.v2 <options> IMAGE <id> <args>`.
    pub fn run(&self, options: &[&str], id: &str, args: &[&str]) -> Command {
        let mut rest = vec!["--runtime", "io.containerd.gcs.v2"];
        rest.extend_from_slice(options);
        rest.push(IMAGE);
        rest.push(id);
        rest.extend_from_slice(args);
        self.command(&["run"], &rest)
    }

    /// The task's status column in `ctr task ls` (`RUNNING`, `STOPPED`, ...), if listed.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["task", "ls"], &[]);
        text(&out.stdout).lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id)).then(|| f.nth(1).unwrap_or_default().to_string())
        })
    }

    /// Waits until `id` is listed with `status`.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) {
        let start = Instant::now();
        while self.task_status(id).as_deref() != Some(status) {
            assert!(
                start.elapsed() < timeout,
                "{id} not {status} within {timeout:?} (now {:?}):\n{}",
                self.task_status(id),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Processes whose command line names this containerd's directory (the shims' QEMU and
    /// vhost-device-vsock have their sockets under its `tmp`), containerd's own processes
    /// excluded.
    pub fn processes_left(&self) -> Vec<String> {
        let needle = self.dir.to_string_lossy().into_owned();
        let mut left = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == self.pid() || pid == std::process::id() {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let containerd =
                cmdline.starts_with("containerd --config") || cmdline.contains("unshare --mount");
            if cmdline.contains(&needle) && !containerd {
                left.push(format!("{pid}: {cmdline}"));
            }
        }
        left
    }

    /// Mount points under this containerd's directory in its mount namespace.
    pub fn mounts_left(&self) -> Vec<String> {
        let mounts =
            std::fs::read_to_string(format!("/proc/{}/mounts", self.pid())).unwrap_or_default();
        let needle = self.dir.to_string_lossy().into_owned();
        mounts
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|m| m.starts_with(&needle))
            })
            .map(str::to_string)
            .collect()
    }

    /// What is left in the shims' temporary directory (VM directories, layer images).
    pub fn files_left(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("tmp"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
