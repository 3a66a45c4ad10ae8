//! Processes run directly in the UVM (null container id, or `CreateInUtilityVM`): plain
//! fork-exec as root in the agent's namespaces. Without a console the host's connections become
//! the child's fds 0–2 directly (no relay, unrequested fds closed); with `EmulateConsole` the
//! child gets a pty from `/dev/ptmx` and the agent relays it.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use super::stdio::{self, StdioConnections};
use super::GuestError;
use crate::protocol::messages::{ProcessParameters, VsockStdioRelaySettings};
use crate::reaper::{ExitStatus, Reaper};
use crate::sys::{SpawnRequest, SpawnStage};
use crate::transport::Dialer;

/// A process in the UVM.
#[derive(Debug)]
pub struct ExternalProcess {
    pub pid: u32,
    /// Set once the process exited (and, with a pty, its output drained).
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl ExternalProcess {
    pub fn exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Splits a command line with shell-words rules (quotes and backslashes; no expansion).
pub fn split_command_line(line: &str) -> Result<Vec<String>, GuestError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(GuestError::InvalidRequest(
                                "unterminated ' in CommandLine".into(),
                            ))
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => {
                                return Err(GuestError::InvalidRequest(
                                    "unterminated \" in CommandLine".into(),
                                ))
                            }
                        },
                        Some(c) => word.push(c),
                        None => {
                            return Err(GuestError::InvalidRequest(
                                "unterminated \" in CommandLine".into(),
                            ))
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Finds `name` in `path` the way Go's `exec.LookPath` does.
pub fn look_path(name: &str, path: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

fn cstring(s: &str, what: &str) -> Result<CString, GuestError> {
    CString::new(s).map_err(|_| GuestError::InvalidRequest(format!("{what} contains a NUL byte")))
}

fn start_error(what: String) -> GuestError {
    GuestError::StartProcess(what)
}

/// Checks a UVM process's arguments (`CommandArgs`, or `CommandLine` as split) and
/// `Environment` against `execve(2)`'s limits ([`check_exec_sizes`]), before anything copies
/// them (the policy's input, the spawn request).
///
/// Errors: [`GuestError::InvalidRequest`] naming the field, as [`check_exec_sizes`] does, or an
/// unterminated quote in `CommandLine`.
pub fn check_sizes(params: &ProcessParameters) -> Result<(), GuestError> {
    use super::spec::process::{check_exec_sizes, ExecString};
    let split;
    let (field, argv) = if params.command_args.is_empty() {
        split = split_command_line(&params.command_line)?;
        ("CommandLine", &split)
    } else {
        ("CommandArgs", &params.command_args)
    };
    check_exec_sizes(
        "ProcessParameters",
        argv.iter().map(|a| ExecString::arg(field, a)).chain(
            params
                .environment
                .iter()
                .flatten()
                .map(|(k, v)| ExecString {
                    field: "Environment",
                    len: k.len() + 1 + v.len(),
                    shown: k,
                }),
        ),
    )
}

/// Starts a UVM process; returns once it runs (or failed to start). Without `stdio_allowed`
/// (the policy's decision) its requested streams go nowhere.
pub async fn start(
    dialer: &Dialer,
    reaper: &Arc<Reaper>,
    params: &ProcessParameters,
    ports: VsockStdioRelaySettings,
    stdio_allowed: bool,
) -> Result<Arc<ExternalProcess>, GuestError> {
    let argv = if params.command_args.is_empty() {
        split_command_line(&params.command_line)?
    } else {
        params.command_args.clone()
    };
    let Some(name) = argv.first() else {
        return Err(GuestError::InvalidRequest("no command to run".into()));
    };
    let env: BTreeMap<String, String> = params.environment.clone().unwrap_or_default();
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    let program = look_path(name, &path).map_err(start_error)?;
    let request = SpawnRequest {
        program: cstring(&program.to_string_lossy(), "program")?,
        argv: argv
            .iter()
            .map(|a| cstring(a, "argument"))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}"), "environment"))
            .collect::<Result<_, _>>()?,
        cwd: (!params.working_directory.is_empty())
            .then(|| cstring(&params.working_directory, "WorkingDirectory"))
            .transpose()?,
        stdio: [None, None, None],
        controlling_tty: params.emulate_console,
    };
    let io = if stdio_allowed {
        stdio::dial(dialer, params, ports).await?
    } else {
        stdio::null(params)
    };
    let (exit_tx, exit_rx) = watch::channel(None);
    let (pid, relay_done) = if params.emulate_console {
        let size = (
            params.console_size.first().copied(),
            params.console_size.get(1).copied(),
        );
        let rows = size.0.and_then(|h| u16::try_from(h).ok()).unwrap_or(0);
        let cols = size.1.and_then(|w| u16::try_from(w).ok()).unwrap_or(0);
        let (master, slave) = stdio::open_pty(rows, cols)?;
        let slave_fd = slave.as_raw_fd();
        let request = SpawnRequest {
            stdio: [Some(slave_fd); 3],
            ..request
        };
        let pid = spawn(&request, reaper, &program, &params.working_directory)?;
        drop(slave);
        let (_master, done) = stdio::relay_pty(master, io, None)?;
        (pid, Some(done))
    } else {
        let StdioConnections {
            stdin,
            stdout,
            stderr,
        } = io;
        let fds: Vec<Option<OwnedFd>> = [stdin, stdout, stderr]
            .into_iter()
            .map(|s| s.map(|s| s.into_blocking_fd()).transpose())
            .collect::<Result<_, _>>()
            .map_err(|source| GuestError::Io {
                what: "stdio connection".into(),
                source,
            })?;
        let raw = [0, 1, 2].map(|i| fds[i].as_ref().map(|f| f.as_raw_fd()));
        let request = SpawnRequest {
            stdio: raw,
            ..request
        };
        // Our copies close when `fds` drops; the child keeps its own.
        (
            spawn(&request, reaper, &program, &params.working_directory)?,
            None,
        )
    };
    let exited = reaper.watch(pid);
    tokio::spawn(async move {
        let status = exited.await.unwrap_or(ExitStatus::Code(255));
        if let Some(done) = relay_done {
            let _ = tokio::time::timeout(stdio::DRAIN_AFTER_EXIT, done).await;
        }
        exit_tx.send_replace(Some(status));
    });
    let pid =
        u32::try_from(pid).map_err(|_| GuestError::InvalidRequest("pid out of range".into()))?;
    Ok(Arc::new(ExternalProcess { pid, exit: exit_rx }))
}

fn spawn(
    request: &SpawnRequest,
    reaper: &Arc<Reaper>,
    program: &Path,
    cwd: &str,
) -> Result<i32, GuestError> {
    reaper.spawn(request).map_err(|(stage, errno, pid)| {
        if let Some(pid) = pid {
            // The failed child exits 127; let the reaper drop its status.
            drop(reaper.watch(pid));
        }
        let reason = errno.desc().to_lowercase();
        start_error(match stage {
            SpawnStage::Chdir => format!("chdir {cwd}: {reason}"),
            SpawnStage::Exec => format!("fork/exec {}: {reason}", program.display()),
            SpawnStage::Fork | SpawnStage::Setup => format!("fork: {reason}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(split_command_line("ls -l  /").unwrap(), ["ls", "-l", "/"]);
        assert_eq!(
            split_command_line(r#"sh -c 'echo "a b"' x\ y"#).unwrap(),
            ["sh", "-c", "echo \"a b\"", "x y"]
        );
        assert_eq!(
            split_command_line(r#"a "b\"c" ''"#).unwrap(),
            ["a", "b\"c", ""]
        );
        assert!(split_command_line("a 'b").is_err());
        assert!(split_command_line("").unwrap().is_empty());
    }

    #[test]
    fn look_path_like_go() {
        assert_eq!(look_path("/x/y", "").unwrap(), PathBuf::from("/x/y"));
        assert!(look_path("sh", "/nonexistent:/bin")
            .unwrap()
            .ends_with("sh"));
        let err = look_path("does-not-exist", "/bin").unwrap_err();
        assert_eq!(
            err,
            "exec: \"does-not-exist\": executable file not found in $PATH"
        );
    }
}
