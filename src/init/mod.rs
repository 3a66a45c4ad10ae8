//! The `init` role: PID 1 of the utility VM. It mounts the basic filesystems, sets up cgroups,
//! brings `lo` up, loads kernel modules, feeds the host's boot entropy to the kernel, starts its
//! child (normally `vsockexec ... gcs ...`), reaps every orphan, and exits with the child's
//! status when the child dies. It is single-threaded from start to end.
//!
//! Usage: `init [-d shell] [-e port] [-w] [--] command [args...]`

mod cgroups;
pub mod drivers;
mod modules;
mod ops;
pub mod vsockexec;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, ExitCode};

use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

pub use ops::{InitOp, INIT_OPS};

use crate::transport::VSOCK_UDS_ENV;

/// The only environment the child gets, as the original.
const CHILD_PATH: &str = "/sbin:/usr/sbin:/bin:/usr/bin";

/// What `init` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InitArgs {
    pub shell: Option<String>,
    pub entropy_port: Option<u32>,
    pub writable_overlays: bool,
    pub command: Vec<String>,
}

/// Parses `getopt("+d:e:w")`: options stop at the first non-option.
pub fn parse_args(args: &[String]) -> Result<InitArgs, String> {
    let mut out = InitArgs::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg.len() < 2 {
            break;
        }
        for (pos, c) in arg[1..].char_indices() {
            match c {
                'w' => out.writable_overlays = true,
                'd' | 'e' => {
                    let rest = &arg[1 + pos + 1..];
                    let value = if rest.is_empty() {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| format!("option -{c} requires an argument"))?
                    } else {
                        rest.to_string()
                    };
                    if c == 'd' {
                        out.shell = Some(value);
                    } else {
                        let port: u32 = value
                            .parse()
                            .map_err(|_| format!("invalid entropy port {value:?}"))?;
                        if port == 0 {
                            return Err("entropy port must be nonzero".into());
                        }
                        out.entropy_port = Some(port);
                    }
                    break;
                }
                other => return Err(format!("invalid option -{other}")),
            }
        }
        i += 1;
    }
    out.command = args[i.min(args.len())..].to_vec();
    Ok(out)
}

/// Logs to the kernel log (so the line survives a dead stderr) and to stderr.
pub fn log(priority: u8, msg: &str) {
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(format!("<{priority}>init: {msg}\n").as_bytes());
    }
    eprintln!("init: {msg}");
}

pub fn main(args: &[String]) -> ExitCode {
    let parsed = match parse_args(args.get(1..).unwrap_or_default()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("init: {e}\nusage: init [-d shell] [-e port] [-w] [--] command [args...]");
            return ExitCode::from(1);
        }
    };
    // Mounting over /dev, /proc and /sys is only right for the first process of a fresh
    // system or pid namespace; refuse anywhere else rather than damage a running machine.
    if std::process::id() != 1 {
        eprintln!("init: must run as PID 1");
        return ExitCode::from(1);
    }
    match run(parsed) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log(3, &format!("fatal: {e}"));
            ExitCode::from(1)
        }
    }
}

fn run(args: InitArgs) -> Result<u8, String> {
    // The boot split (issue 17): when this first instruction of ours ran, by the kernel's clock.
    let started = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok();
    SigSet::all()
        .thread_set_mask()
        .map_err(|e| format!("block signals: {e}"))?;
    let nofile = nix::sys::resource::Resource::RLIMIT_NOFILE;
    if let Err(e) = nix::sys::resource::setrlimit(nofile, 1024, 1024 * 1024) {
        log(4, &format!("setrlimit(RLIMIT_NOFILE): {e}"));
    }
    for op in INIT_OPS {
        op.apply().map_err(|e| e.to_string())?;
    }
    if args.writable_overlays {
        for op in ops::WRITABLE_OVERLAY_OPS {
            op.apply().map_err(|e| e.to_string())?;
        }
    }
    cgroups::setup().map_err(|e| format!("cgroups: {e}"))?;
    if let Some(t) = started {
        log(
            6,
            &format!(
                "started at {}.{:06} s since boot",
                t.tv_sec(),
                t.tv_nsec() / 1000
            ),
        );
    }
    loopback_up();
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned());
    if let Ok(release) = release {
        let (bridge, rest) =
            modules::split(&Path::new("/lib/modules").join(release), modules::BRIDGE);
        modules::load_logged(bridge, "the bridge's");
        if optional_services().next().is_some() {
            // The GPU daemons expect their drivers: everything is loaded before they start.
            modules::load_logged(rest, "the rest");
        } else {
            load_in_background(rest);
        }
    }
    if let Some(port) = args.entropy_port {
        match feed_entropy(port) {
            Ok(n) => log(6, &format!("added {n} bytes of boot entropy")),
            Err(e) => log(4, &format!("entropy from port {port}: {e}")),
        }
    }
    start_optional_services();
    let command = if args.command.is_empty() {
        // LCOWv1 legacy: no arguments means the agent with a log file.
        [
            "/bin/gcs",
            "-loglevel",
            "debug",
            "-logfile=/run/gcs/gcs.log",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args.command
    };
    let agent = launch(&command).map_err(|e| format!("launch {:?}: {e}", command[0]))?;
    let primary = match &args.shell {
        Some(shell) => launch(std::slice::from_ref(shell))
            .map_err(|e| format!("launch shell {shell:?}: {e}"))?,
        None => agent,
    };
    Ok(reap_until(primary))
}

/// Loads `rest` in a child process while init goes on to start the agent, which answers
/// NegotiateProtocol meanwhile and holds other requests until [`crate::boot::MODULES_LOADING`]
/// is gone (issue 17: module loading was most of the agent's share of the boot). The child is
/// reaped by init's loop like any other.
fn load_in_background(rest: Vec<modules::Module>) {
    if rest.is_empty() {
        return;
    }
    let marker = Path::new(crate::boot::MODULES_LOADING);
    if let Err(e) = std::fs::write(marker, b"") {
        log(
            4,
            &format!("{}: {e}; loading modules now", marker.display()),
        );
        modules::load_logged(rest, "the rest");
        return;
    }
    match crate::sys::fork_single_threaded() {
        Ok(None) => {
            crate::sys::lowest_priority();
            // The marker goes whatever happens here: requests wait for it.
            let done = std::panic::catch_unwind(|| {
                modules::load_logged(rest, "the rest, in the background");
            });
            let _ = std::fs::remove_file(marker);
            crate::sys::exit_now(i32::from(done.is_err()));
        }
        Ok(Some(_)) => {}
        Err(e) => {
            log(4, &format!("fork: {e}; loading modules now"));
            modules::load_logged(rest, "the rest");
            let _ = std::fs::remove_file(marker);
        }
    }
}

/// `lo` up for IPv4 and IPv6 (one ioctl on either family's socket sets the link flags).
fn loopback_up() {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let sock = match socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None) {
            Ok(s) => s,
            Err(e) => {
                log(4, &format!("socket({family:?}): {e}"));
                continue;
            }
        };
        if let Err(e) = crate::sys::set_link_up(sock.as_fd(), "lo") {
            log(4, &format!("bring lo up ({family:?}): {e}"));
        }
    }
}

/// Reads the host's entropy until EOF and credits it to the kernel.
fn feed_entropy(port: u32) -> std::io::Result<usize> {
    let mut conn = File::from(crate::transport::sync_dial::dial(port)?);
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")?;
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        crate::sys::add_entropy(random.as_fd(), &buf[..n]).map_err(std::io::Error::from)?;
        total += n;
    }
}

/// The GPU daemons the image carries, as command lines.
fn optional_services() -> impl Iterator<Item = &'static [&'static str]> {
    const SERVICES: [&[&str]; 2] = [
        &["/bin/nvidia-persistenced"],
        &[
            "/bin/nv-fabricmanager",
            "-c",
            "/usr/share/nvidia/nvswitch/fabricmanager.cfg",
        ],
    ];
    SERVICES
        .into_iter()
        .filter(|argv| Path::new(argv[0]).exists())
}

fn start_optional_services() {
    for argv in optional_services() {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        if let Err(e) = launch(&argv) {
            log(4, &format!("start {}: {e}", argv[0]));
        }
    }
}

/// Starts `argv` as a session leader with signals unblocked and only `PATH` in its
/// environment (plus the test-only vsock redirection, when set).
fn launch(argv: &[String]) -> std::io::Result<Pid> {
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(rest).env_clear().env("PATH", CHILD_PATH);
    if let Some(uds) = std::env::var_os(VSOCK_UDS_ENV) {
        cmd.env(VSOCK_UDS_ENV, uds);
    }
    let pid = crate::sys::spawn_session_leader(&mut cmd)?;
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    Ok(Pid::from_raw(pid))
}

/// Reaps every child, orphans included, until `primary` exits; returns its exit code, or
/// 128 + the signal number.
fn reap_until(primary: Pid) -> u8 {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == primary => {
                return u8::try_from(code & 0xff).unwrap_or(1);
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == primary => {
                return u8::try_from(128 + (sig as i32 & 0x7f)).unwrap_or(1);
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                log(3, &format!("waitpid: {e}"));
                return 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<InitArgs, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn host_command_line() {
        let a = parse(&["-e", "1", "/bin/vsockexec", "-e", "109", "/bin/gcs", "-v4"]).unwrap();
        assert_eq!(a.entropy_port, Some(1));
        assert!(!a.writable_overlays);
        assert_eq!(
            a.command,
            ["/bin/vsockexec", "-e", "109", "/bin/gcs", "-v4"]
        );
    }

    #[test]
    fn grouped_and_attached_options() {
        let a = parse(&["-we1", "-d/bin/sh", "--", "-x"]).unwrap();
        assert!(a.writable_overlays);
        assert_eq!(a.entropy_port, Some(1));
        assert_eq!(a.shell.as_deref(), Some("/bin/sh"));
        assert_eq!(a.command, ["-x"]);
    }

    #[test]
    fn bad_options() {
        assert!(parse(&["-e", "0", "x"]).is_err());
        assert!(parse(&["-e"]).is_err());
        assert!(parse(&["-q", "x"]).is_err());
        assert_eq!(parse(&[]).unwrap().command, Vec::<String>::new());
    }
}
