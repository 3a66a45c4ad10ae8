//! Boots the agent in a QEMU utility VM and acts as its host: vhost-device-vsock serves the
//! guest's vsock on Unix sockets (hybrid vsock), the entropy (port 1) and log (port 109) streams
//! are served as hcsshim does, and the bridge (port 0x40000000) is accepted and negotiated.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::{BridgeClient, HostError, HybridVsock};
use crate::protocol::{BRIDGE_PORT, ENTROPY_PORT, LOG_PORT, NULL_CONTAINER_ID};

/// How to boot the utility VM.
#[derive(Debug, Clone)]
pub struct UvmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    /// Arguments of `/bin/gcs` on the kernel command line.
    pub gcs_args: Vec<String>,
    /// Extra kernel command line words (before `--`).
    pub kernel_args: Vec<String>,
    /// Give up when the bridge is not connected by then (TCG under load is slow).
    pub boot_timeout: Duration,
    /// Images attached as NVDIMMs at boot: the VPMem devices of a Hyper-V host. They lie at
    /// ascending guest-physical addresses in this order, but with more than one the guest's
    /// `/dev/pmem<N>` numbering need not follow it (regions are numbered as probed); a test
    /// that needs the mapping reads `/sys/block/pmem*/device/resource`.
    pub pmem: Vec<PathBuf>,
    /// Images attached as virtio-pmem devices (also `/dev/pmem<N>` in the guest, numbered
    /// after the NVDIMMs' regions); unlike label-less NVDIMMs they offer DAX.
    pub virtio_pmem: Vec<PathBuf>,
    /// virtio-net NICs on QEMU user networking (guest 10.0.2.15/24, gateway 10.0.2.2, which
    /// reaches this machine's loopback), by MAC address (`52:54:00:..`).
    pub nics: Vec<String>,
    /// Virtual CPUs (`-smp`); TCG runs them on as many host threads.
    pub cpus: u32,
    /// QEMU's accelerator (`-accel`): `tcg` by default, which runs anywhere (this machine's
    /// KVM cannot run QEMU: `../shared/spec/qemu-harness.md`); `kvm` where it can.
    pub accel: String,
    /// QEMU and vhost-device-vsock get SIGKILL when the thread that started them dies
    /// (`setpriv --pdeathsig KILL`, prctl(2) `PR_SET_PDEATHSIG`): a host process that is killed
    /// leaves no VM behind. Start the VM from a thread that lives as long as the process (a
    /// tokio worker, not a blocking-pool thread).
    pub die_with_parent: bool,
}

impl UvmConfig {
    /// Where `make test-image` puts `rel` (`kernel/vmlinux`, `test-initrd.img`), found from
    /// the running program rather than the working directory: beside it (`out/uvmboot`), or in
    /// the `out/` of the checkout it was built in (`target/<triple>/<profile>/...`); else
    /// `out/<rel>` relative to the working directory.
    pub fn default_image_path(rel: &str) -> PathBuf {
        if let Ok(exe) = std::env::current_exe() {
            let mut dir = exe.parent();
            if let Some(d) = dir {
                if d.join(rel).is_file() {
                    return d.join(rel);
                }
            }
            while let Some(d) = dir {
                let candidate = d.join("out").join(rel);
                if candidate.is_file() {
                    return candidate;
                }
                dir = d.parent();
            }
        }
        Path::new("out").join(rel)
    }

    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: initrd.into(),
            memory_mib: 512,
            // vhost-device-vsock never forwards a guest half-close to the host, so the host cannot
            // answer the pipe-mode handshake: keep the guest's wait for it short here.
            gcs_args: [
                "-v4",
                "-log-format",
                "json",
                "-loglevel",
                "debug",
                "-stdio-handshake-timeout-ms",
                "100",
            ]
            .map(String::from)
            .to_vec(),
            kernel_args: Vec::new(),
            boot_timeout: Duration::from_secs(120),
            pmem: Vec::new(),
            virtio_pmem: Vec::new(),
            nics: Vec::new(),
            cpus: 1,
            accel: "tcg".into(),
            die_with_parent: false,
        }
    }

    /// A command for `program`, under `setpriv --pdeathsig KILL` when
    /// [`UvmConfig::die_with_parent`] asks for it.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        if self.die_with_parent {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }
}

/// Milestones of a boot, from the moment QEMU was started.
#[derive(Debug, Clone, Default)]
pub struct BootTimings {
    pub first_log_line: Option<Duration>,
    pub bridge_connected: Duration,
    pub negotiated: Duration,
}

/// A running utility VM with a negotiated bridge.
#[derive(Debug)]
pub struct Uvm {
    dir: tempfile::TempDir,
    qemu: Child,
    vhost: Child,
    /// Shared so that calls that wait long (WaitForProcess) need no lock on the VM.
    pub client: std::sync::Arc<BridgeClient>,
    /// Lines the agent wrote to its log stream (port 109).
    pub log: mpsc::UnboundedReceiver<String>,
    pub timings: BootTimings,
}

/// The last lines of the VM's console, for error messages.
fn console_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// Where the program `name` is: on `PATH`, else in `$HOME/.cargo/bin` or root's
/// (`cargo install` puts vhost-device-vsock there; a service manager's environment may have no
/// `HOME`).
///
/// Errors: `NotFound`, naming the program and where it was looked for.
fn program(name: &str) -> std::io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bins = [
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")),
        Some(PathBuf::from("/root/.cargo/bin")),
    ];
    std::env::split_paths(&path)
        .chain(cargo_bins.into_iter().flatten())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{name} is not on PATH ({}) nor in ~/.cargo/bin (`make qemu-deps` installs it)",
                    path.to_string_lossy()
                ),
            )
        })
}

async fn wait_for_path(path: &Path, timeout: Duration) -> Result<(), HostError> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            return Err(HostError::Closed(format!(
                "{} did not appear",
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

impl Uvm {
    pub async fn boot(config: &UvmConfig) -> Result<Uvm, HostError> {
        // QEMU's own message for a missing file does not say which one.
        for (what, path) in [("kernel", &config.kernel), ("initrd", &config.initrd)] {
            if !path.is_file() {
                return Err(HostError::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "the {what} {} does not exist (`make test-image` builds it)",
                        path.display()
                    ),
                )));
            }
        }
        let dir = tempfile::tempdir()?;
        let vsock = HybridVsock::new(dir.path().join("vm.vsock"));
        let vhost_socket = dir.path().join("vhu.sock");
        let vhost = config
            .command(program("vhost-device-vsock")?)
            .arg("--vm")
            .arg(format!(
                "guest-cid=3,socket={},uds-path={}",
                vhost_socket.display(),
                vsock.prefix().display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        wait_for_path(&vhost_socket, Duration::from_secs(10)).await?;

        // The host listens before the VM starts, as hcsshim does.
        let entropy = vsock.listen(ENTROPY_PORT)?;
        let log_listener = vsock.listen(LOG_PORT)?;
        let bridge = vsock.listen(BRIDGE_PORT)?;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = entropy.accept().await {
                let mut bytes = [0u8; 512];
                if let Ok(mut f) = tokio::fs::File::open("/dev/urandom").await {
                    let _ = tokio::io::AsyncReadExt::read_exact(&mut f, &mut bytes).await;
                }
                let _ = s.write_all(&bytes).await;
            }
        });
        let started = Instant::now();
        let (log_tx, log) = mpsc::unbounded_channel();
        let (first_tx, mut first_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            if let Ok((s, _)) = log_listener.accept().await {
                let mut lines = BufReader::new(s).lines();
                let mut first = Some(first_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(tx) = first.take() {
                        let _ = tx.send(started.elapsed());
                    }
                    if log_tx.send(line).is_err() {
                        break;
                    }
                }
            }
        });

        // quiet: every console line is an emulated serial write, slow under TCG.
        let mut append = vec![
            "console=ttyS0".to_string(),
            "quiet".to_string(),
            "panic=-1".to_string(),
        ];
        append.extend(config.kernel_args.iter().cloned());
        append.push("--".into());
        append.extend(["-e", "1", "/bin/vsockexec", "-e", "109", "/bin/gcs"].map(String::from));
        append.extend(config.gcs_args.iter().cloned());
        let mem = format!("{}M", config.memory_mib);
        let mut qemu = config.command(program("qemu-system-x86_64")?);
        let cpus = config.cpus.max(1).to_string();
        // Slots for hot-added memory (pc-dimm over QMP) and NVDIMMs.
        let memory = format!("{mem},slots=4,maxmem=4G");
        let machine = if config.pmem.is_empty() {
            "pc,memory-backend=mem".to_string()
        } else {
            "pc,memory-backend=mem,nvdimm=on".to_string()
        };
        qemu.args([
            "-machine",
            &machine,
            "-accel",
            &config.accel,
            "-smp",
            &cpus,
            "-m",
            &memory,
        ])
        .arg("-object")
        .arg(format!("memory-backend-memfd,id=mem,size={mem},share=on"))
        .arg("-chardev")
        .arg(format!("socket,id=vsc,path={}", vhost_socket.display()))
        .args(["-device", "vhost-user-vsock-pci,chardev=vsc"])
        .args(["-device", "virtio-scsi-pci,id=scsi0"]);
        for (i, image) in config.pmem.iter().enumerate() {
            let size = std::fs::metadata(image)?.len();
            // share=off: guest writes stay private to this VM; the image is never changed.
            qemu.arg("-object")
                .arg(format!(
                    "memory-backend-file,id=pm{i},mem-path={},size={size},share=off",
                    image.display()
                ))
                .arg("-device")
                .arg(format!("nvdimm,memdev=pm{i},id=nv{i}"));
        }
        for (i, image) in config.virtio_pmem.iter().enumerate() {
            let size = std::fs::metadata(image)?.len();
            qemu.arg("-object")
                .arg(format!(
                    "memory-backend-file,id=vpm{i},mem-path={},size={size},share=off",
                    image.display()
                ))
                .arg("-device")
                .arg(format!("virtio-pmem-pci,memdev=vpm{i},id=vp{i}"));
        }
        for (i, mac) in config.nics.iter().enumerate() {
            qemu.arg("-netdev")
                .arg(format!("user,id=net{i}"))
                .arg("-device")
                .arg(format!("virtio-net-pci,netdev=net{i},mac={mac}"));
        }
        qemu.arg("-kernel")
            .arg(&config.kernel)
            .arg("-initrd")
            .arg(&config.initrd)
            .arg("-append")
            .arg(append.join(" "))
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.path().join("qmp.sock").display()
            ))
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("console.log").display()))
            .args([
                "-display",
                "none",
                "-no-reboot",
                "-device",
                "pvpanic",
                "-action",
                "panic=exit-failure",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A file, not a pipe: nobody reads QEMU's messages while the VM runs, and a full
            // pipe would stop QEMU.
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("qemu.log"),
            )?))
            .kill_on_drop(true);
        let mut qemu = qemu.spawn()?;

        let accepted = tokio::select! {
            r = tokio::time::timeout(config.boot_timeout, bridge.accept()) => r,
            status = qemu.wait() => {
                let console = console_tail(dir.path());
                return Err(HostError::Closed(format!("QEMU exited ({status:?}) before the bridge connected:\n{console}")));
            }
        };
        let (stream, _) = match accepted {
            Ok(r) => r?,
            Err(_) => {
                let console = console_tail(dir.path());
                return Err(HostError::Closed(format!(
                    "no bridge connection within {:?}:\n{console}",
                    config.boot_timeout
                )));
            }
        };
        let bridge_connected = started.elapsed();
        let client = std::sync::Arc::new(BridgeClient::new(stream));
        client.negotiate().await?;
        let negotiated = started.elapsed();
        let first_log_line = first_rx.try_recv().ok();
        Ok(Uvm {
            dir,
            qemu,
            vhost,
            client,
            log,
            timings: BootTimings {
                first_log_line,
                bridge_connected,
                negotiated,
            },
        })
    }

    /// Where the guest's vsock ports are served on this machine.
    pub fn vsock(&self) -> HybridVsock {
        HybridVsock::new(self.dir.path().join("vm.vsock"))
    }

    /// The VM's serial console output so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    /// The VM's private directory (sockets, console log); removed when the VM is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process ids of QEMU and of vhost-device-vsock (for a record a later cleanup reads).
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        (self.qemu.id(), self.vhost.id())
    }

    /// QEMU's exit status, if it has exited (a guest panic, a crash, a kill).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.qemu.try_wait().ok().flatten()
    }

    /// What QEMU wrote to its standard error so far.
    pub fn qemu_messages(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.log")).unwrap_or_default()
    }

    /// Kills QEMU and vhost-device-vsock (SIGKILL) and reaps them; the VM's directory goes
    /// with `self`. For a VM none of whose state is needed any more.
    pub async fn kill(mut self) {
        let _ = self.qemu.kill().await;
        let _ = self.vhost.kill().await;
    }

    /// ShutdownForced of the UVM; waits for QEMU to exit and stops the vsock daemon.
    pub async fn shutdown(mut self) -> Result<std::process::ExitStatus, HostError> {
        let request = crate::protocol::messages::RequestBase::new(NULL_CONTAINER_ID);
        let mut payload = serde_json::to_vec(&request).map_err(HostError::Decode)?;
        payload.push(b'\n');
        let id = self.client.allocate_id();
        let _answer = self.client.expect(id);
        self.client
            .send_bytes(&crate::protocol::header::encode_frame(
                crate::protocol::MessageType::SHUTDOWN_FORCED,
                id,
                &payload,
            ))
            .await?;
        let status = match tokio::time::timeout(Duration::from_secs(60), self.qemu.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                let _ = self.qemu.kill().await;
                return Err(HostError::Timeout);
            }
        };
        let _ = self.vhost.kill().await;
        let _ = self.vhost.wait().await;
        Ok(status)
    }
}
