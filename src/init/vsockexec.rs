//! The `vsockexec` role: connect stdio to host vsock ports, then exec a program.
//!
//! Usage: `vsockexec [-r] [-i port] [-o port] [-e port] [--] program [args...]`
//! Without `-r` each of fds 0, 1, 2 with a port is replaced by a connection to that port (fds
//! naming the same port share one connection) and the program is exec'd, keeping the pid. With
//! `-r` the program runs as a child writing into a pipe, and this process relays the pipe to the
//! `-e` port (or `-o`), redialling every 100 ms after any failure and resending what was not
//! written, so the log stream survives a host reconnect.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitStatus};

use crate::transport::sync_dial::dial;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct VsockexecArgs {
    pub reconnect: bool,
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    pub stderr: Option<u32>,
    pub command: Vec<String>,
}

pub fn parse_args(args: &[String]) -> Result<VsockexecArgs, String> {
    let mut out = VsockexecArgs::default();
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
        let flag = &arg[1..2];
        let attached = &arg[2..];
        match flag {
            "r" if attached.is_empty() => out.reconnect = true,
            "i" | "o" | "e" => {
                let value = if attached.is_empty() {
                    i += 1;
                    args.get(i)
                        .ok_or_else(|| format!("option -{flag} requires a port"))?
                        .as_str()
                } else {
                    attached
                };
                let port: u32 = value
                    .parse()
                    .map_err(|_| format!("invalid port {value:?}"))?;
                let port = (port != 0).then_some(port);
                match flag {
                    "i" => out.stdin = port,
                    "o" => out.stdout = port,
                    _ => out.stderr = port,
                }
            }
            _ => return Err(format!("invalid option {arg}")),
        }
        i += 1;
    }
    out.command = args[i.min(args.len())..].to_vec();
    if out.command.is_empty() {
        return Err("missing program".into());
    }
    Ok(out)
}

pub fn main(args: &[String]) -> ExitCode {
    let parsed = match parse_args(args.get(1..).unwrap_or_default()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vsockexec: {e}\nusage: vsockexec [-r] [-i port] [-o port] [-e port] [--] program [args...]");
            return ExitCode::from(1);
        }
    };
    let result = if parsed.reconnect {
        run_reconnecting(&parsed)
    } else {
        run_direct(&parsed)
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vsockexec: {e}");
            ExitCode::from(1)
        }
    }
}

fn cstrings(argv: &[String]) -> Result<Vec<CString>, String> {
    argv.iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("argument {a:?} contains NUL")))
        .collect()
}

fn run_direct(args: &VsockexecArgs) -> Result<u8, String> {
    let mut conns: Vec<(u32, OwnedFd)> = Vec::new();
    for (fd, port) in [(0, args.stdin), (1, args.stdout), (2, args.stderr)] {
        let Some(port) = port else { continue };
        if !conns.iter().any(|(p, _)| *p == port) {
            let conn = dial(port).map_err(|e| format!("connect: port {port}: {e}"))?;
            conns.push((port, conn));
        }
        let conn = conns
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, c)| c.as_raw_fd())
            .unwrap_or(-1);
        nix::unistd::dup2(conn, fd).map_err(|e| format!("dup2 onto fd {fd}: {e}"))?;
    }
    // The originals are dup2'ed where they are needed; close our extra copies before exec.
    drop(conns);
    let argv = cstrings(&args.command)?;
    let err = nix::unistd::execvp(&argv[0], &argv)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    Err(format!("exec {}: {err}", args.command[0]))
}

fn run_reconnecting(args: &VsockexecArgs) -> Result<u8, String> {
    let port = args.stderr.or(args.stdout).ok_or("-r needs -e or -o")?;
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let argv = cstrings(&args.command)?;
    match crate::sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        None => {
            drop(read_end);
            if args.stdout.is_some() {
                let _ = nix::unistd::dup2(write_end.as_raw_fd(), 1);
            }
            if args.stderr.is_some() {
                let _ = nix::unistd::dup2(write_end.as_raw_fd(), 2);
            }
            drop(write_end);
            let err = nix::unistd::execvp(&argv[0], &argv).err();
            eprintln!("vsockexec: exec {}: {err:?}", args.command[0]);
            // Leave without running the parent's destructors or flushing its buffers.
            crate::sys::exit_now(127);
        }
        Some(child) => {
            drop(write_end);
            relay_with_redial(std::fs::File::from(read_end), port);
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => {
                        return Ok(u8::try_from(code & 0xff).unwrap_or(1))
                    }
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        return Ok(u8::try_from(128 + (sig as i32 & 0x7f)).unwrap_or(1))
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("waitpid: {e}")),
                }
            }
        }
    }
}

/// Copies `input` to `port` until `input` ends, redialling after any failure.
fn relay_with_redial(mut input: std::fs::File, port: u32) {
    let mut conn: Option<std::fs::File> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut pending = &buf[..n];
        while !pending.is_empty() {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match dial(port) {
                    Ok(fd) => conn.insert(std::fs::File::from(fd)),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                },
            };
            match c.write(pending) {
                Ok(0) | Err(_) => conn = None,
                Ok(w) => pending = &pending[w..],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<VsockexecArgs, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn host_command_lines() {
        let a = parse(&["-e", "109", "/bin/gcs", "-v4"]).unwrap();
        assert_eq!(a.stderr, Some(109));
        assert_eq!(a.command, ["/bin/gcs", "-v4"]);
        let a = parse(&["-r", "-o", "109", "-e109", "--", "gcs"]).unwrap();
        assert!(a.reconnect);
        assert_eq!((a.stdout, a.stderr), (Some(109), Some(109)));
        assert_eq!(a.command, ["gcs"]);
    }

    #[test]
    fn errors() {
        assert!(parse(&["-e"]).is_err());
        assert!(parse(&["-e", "x", "p"]).is_err());
        assert!(parse(&["-z", "p"]).is_err());
        assert!(parse(&["-e", "1"]).is_err());
    }
}
