//! The `gcs` role: parse flags, set up logging, then serve the bridge until the UVM is shut
//! down. This is the only role that builds an async runtime.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info, warn};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::bridge::{Bridge, BridgeConfig, ConnectionEnd};
use crate::cgroups::UvmCgroups;
use crate::cli::{self, AgentOptions, Parsed};
use crate::guest::Guest;
use crate::logging::LogrusLayer;
use crate::protocol::BRIDGE_PORT;
use crate::reaper::Reaper;
use crate::transport::{Dialer, FdStream, Stream, RETRY_INTERVAL};

pub fn main(args: &[String]) -> ExitCode {
    let opts = match cli::parse(args.get(1..).unwrap_or_default()) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            eprint!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            eprint!("{}", cli::usage());
            return ExitCode::from(2);
        }
    };
    crate::sys::tune_allocator();
    // SP §8: the closed door withholds the log stream until a policy allows it.
    if opts.initial_policy_stance == crate::cli::PolicyStance::Deny {
        crate::logging::set_enabled(false);
    }
    let log_fd = match init_logging(&opts) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("gcs: cannot set up logging: {e}");
            return ExitCode::from(1);
        }
    };
    crate::crash::install(
        log_fd,
        opts.log_format == crate::logging::LogFormat::Json,
        opts.core_dump_location.is_some(),
    );
    info!(
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        "GCS started"
    );
    // The kernel's setting is the whole machine's: only ours to set inside a utility VM.
    if let Some(pattern) = opts
        .core_dump_location
        .as_ref()
        .filter(|_| runs_under_our_init())
    {
        if let Err(e) = std::fs::write(
            "/proc/sys/kernel/core_pattern",
            pattern.as_os_str().as_encoded_bytes(),
        ) {
            warn!(error = %e, "cannot set kernel.core_pattern");
        }
    }
    // One worker: each request's tasks are woken and run where the reader runs, with no
    // cross-thread wake-up (issue 17: UVM exec+wait 1.31-1.44x -> 1.08-1.10x of a fork+exec
    // floor). What may block stays off it (crate::worker).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(64)
        .thread_name("gcs-worker")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    // The agent's own task runs on a worker, not on this thread: tasks it spawns and wakes then
    // start on the same worker (tokio's LIFO slot) instead of waking a parked one for each
    // request, and its I/O is polled where it runs.
    let code = runtime.block_on(async {
        tokio::spawn(serve(opts)).await.unwrap_or_else(|e| {
            error!(error = %e, "the agent's task ended abnormally");
            ExitCode::from(1)
        })
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// Sets up the log stream; its descriptor (for the fatal-signal record).
fn init_logging(opts: &AgentOptions) -> std::io::Result<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    let (out, fd): (Box<dyn std::io::Write + Send>, _) = match &opts.log_file {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            let fd = file.as_raw_fd();
            (Box::new(file), fd)
        }
        None => (Box::new(std::io::stderr()), std::io::stderr().as_raw_fd()),
    };
    let layer =
        LogrusLayer::new(opts.log_format, out).with_filter(LevelFilter::from_level(opts.log_level));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(fd)
}

async fn serve(opts: AgentOptions) -> ExitCode {
    let reaper = Reaper::new();
    if let Err(e) = reaper.start() {
        error!(error = %e, "cannot start the child reaper");
        return ExitCode::from(1);
    }
    let dialer = Dialer::new(opts.vsock_uds.clone());
    let (mut guest, notifications) = Guest::new(
        dialer.clone(),
        reaper,
        PathBuf::from(crate::runtime::DEFAULT_STATE_ROOT),
    );
    guest.set_handshake_timeout(std::time::Duration::from_millis(
        opts.stdio_handshake_timeout_ms,
    ));
    if opts.initial_policy_stance == crate::cli::PolicyStance::Deny {
        guest.set_initial_enforcer(Arc::new(crate::policy::closed_door::ClosedDoor));
    }
    // The kernel's messages reach the host through our log, as the original's do; only in a
    // utility VM (the kernel log of a test machine is not ours to relay).
    if runs_under_our_init() {
        crate::kmsg::start(opts.kmsg_log_level);
        if !opts.disable_time_sync {
            crate::timesync::start();
        }
    }
    // The UVM's /gcs and /pods cgroups — only where this machine is ours to arrange: in a
    // utility VM under our init, or as PID 1 of a test sandbox; never on a developer machine.
    if runs_under_our_init() || std::process::id() == 1 {
        match UvmCgroups::setup(Path::new("/sys/fs/cgroup"), opts.root_mem_reserve_bytes) {
            Ok(cgroups) => {
                info!(version = ?cgroups.version(), limit = ?cgroups.pods_limit().ok().flatten(), "UVM cgroups ready");
                crate::cgroups::events::watch_oom(cgroups.memory_cgroup("pods"), "/pods".into());
                crate::cgroups::events::watch_threshold(
                    cgroups.memory_cgroup("gcs"),
                    opts.gcs_mem_limit_bytes,
                );
                let cgroups = Arc::new(cgroups);
                Arc::clone(&cgroups).follow_memory_hotplug(runs_under_our_init());
                guest.set_uvm_cgroups(cgroups);
            }
            Err(e) => error!(error = %e, "cannot set up the UVM cgroups"),
        }
    }
    let bridge = Bridge::new(
        Arc::clone(&guest),
        notifications,
        BridgeConfig {
            v4: opts.v4,
            scrub_logs: opts.scrub_logs,
            sequential: confidential_hardware(),
            boot_marker: runs_under_our_init(),
        },
    );
    if opts.use_inouterr {
        let stream = match FdStream::stdio() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot use stdin/stdout as the bridge");
                return ExitCode::from(1);
            }
        };
        let end = bridge.serve(Stream::Fd(stream)).await;
        info!(?end, "bridge on stdin/stdout ended");
        return power_off(&end);
    }
    loop {
        let stream = dial_bridge(&dialer).await;
        let end = bridge.serve(stream).await;
        if let ConnectionEnd::Shutdown = end {
            return power_off(&end);
        }
        warn!(?end, "bridge connection lost, will reconnect");
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

/// Dials the bridge port until it answers, every 100 ms, forever: the host may not be
/// listening yet, or may be reconnecting.
async fn dial_bridge(dialer: &Dialer) -> Stream {
    let mut failures = 0u64;
    loop {
        match dialer.dial_once(BRIDGE_PORT).await {
            Ok(s) => return s,
            Err(e) => {
                // Log the first failure and then every 10 s, not every 100 ms.
                if failures % 100 == 0 {
                    warn!(error = %e, attempts = failures + 1, "cannot dial the bridge, retrying");
                }
                failures += 1;
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    }
}

/// Ends the agent. Inside a utility VM whose PID 1 is our own init, a UVM shutdown powers the VM
/// off; anywhere else (tests, a foreign init) the agent just exits, so that a test run on a
/// developer machine can never power that machine off.
fn power_off(end: &ConnectionEnd) -> ExitCode {
    if matches!(end, ConnectionEnd::Shutdown) && runs_under_our_init() {
        info!("powering the UVM off");
        nix::unistd::sync();
        match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
            Err(e) => {
                error!(error = %e, "power off failed");
                return ExitCode::from(1);
            }
            Ok(never) => match never {},
        }
    }
    ExitCode::SUCCESS
}

/// SEV-SNP guest devices mean a confidential VM, where the original serves requests one at a
/// time.
fn confidential_hardware() -> bool {
    let found = ["/dev/sev", "/dev/sev-guest"]
        .iter()
        .any(|d| Path::new(d).exists());
    if found {
        info!("confidential hardware: serving requests one at a time");
    }
    found
}

fn runs_under_our_init() -> bool {
    let parent_is_init = nix::unistd::getppid().as_raw() == 1;
    let ours = std::fs::read_link("/proc/self/exe").ok();
    parent_is_init && ours.is_some() && std::fs::read_link("/proc/1/exe").ok() == ours
}
