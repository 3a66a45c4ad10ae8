//! The last step of every container process (init and exec), as runc 1.1 takes it, replacing
//! libcontainer's default executor (which refuses a spec without `PATH`, passes the
//! environment through a hash map that loses its order, and `execvp`s with a shell fallback).
//!
//! Runs inside the container process, after libcontainer has entered its namespaces, changed
//! root, set its ids and dropped capabilities. [`Executor::validate`] runs before the
//! container's start is awaited, so its errors are the Create's (or the exec's) errors, as
//! runc's are: an invalid environment, an executable not found or not executable. It also sets
//! the terminal's initial size (`process.consoleSize`). [`Executor::exec`] `execve`s what
//! `validate` settled (as runc looks the executable up once, before the start); if that fails
//! (exec format error, `E2BIG`) the process writes runc's message to its stderr and exits 1,
//! as under runc.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};

/// runc's executor: environment, `PATH` look-up, errors and `execve` as runc 1.1 does them.
#[derive(Debug, Clone, Default)]
pub struct RuncExecutor {
    /// For an exec: the container's `linux.seccomp`, which libcontainer 0.7 leaves out of an
    /// exec'd process (runc applies it). Loaded just before the start; a profile that cannot
    /// be loaded fails the exec.
    pub exec_seccomp: Option<libcontainer::oci_spec::runtime::LinuxSeccomp>,
    /// The environment and executable `validate` settled, for `exec` (same process).
    prepared: std::cell::OnceCell<(Vec<String>, PathBuf)>,
}

impl RuncExecutor {
    /// An executor for an exec into a container whose profile is `seccomp`.
    pub fn for_exec(seccomp: Option<libcontainer::oci_spec::runtime::LinuxSeccomp>) -> Self {
        Self {
            exec_seccomp: seccomp,
            ..Self::default()
        }
    }
}

/// The environment runc gives a process (`populateProcessEnvironment`, then `setupUser`):
/// entries in spec order, a repeated name keeping its first position and its last value;
/// `HOME`, when absent or empty, from `home` (the passwd entry of the process's uid, else "/").
///
/// Errors are runc's, for an entry without `=`, with an empty name, or with a NUL byte.
pub fn runc_env(spec_env: &[String], home: impl FnOnce() -> String) -> Result<Vec<String>, String> {
    let mut names: Vec<&str> = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for pair in spec_env {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("invalid environment variable: {pair:?}"));
        };
        if name.is_empty() {
            return Err(format!(
                "environment variable name can't be empty: {pair:?}"
            ));
        }
        if name.contains('\0') {
            return Err(format!(
                "environment variable name can't contain null(\\x00): {pair:?}"
            ));
        }
        if value.contains('\0') {
            return Err(format!(
                "environment variable value can't contain null(\\x00): {pair:?}"
            ));
        }
        match index.get(name) {
            Some(&i) => values[i] = value.to_string(),
            None => {
                index.insert(name, names.len());
                names.push(name);
                values.push(value.to_string());
            }
        }
    }
    match index.get("HOME") {
        Some(&i) if !values[i].is_empty() => {}
        Some(&i) => values[i] = home(),
        None => {
            names.push("HOME");
            values.push(home());
        }
    }
    Ok(names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}={v}"))
        .collect())
}

/// The home directory runc gives `uid`: the first `/etc/passwd` entry with that uid, else "/".
pub fn home_of(passwd: Option<&str>, uid: u32) -> String {
    passwd
        .map(super::passwd::parse_passwd)
        .and_then(|entries| entries.into_iter().find(|e| e.uid == Some(uid)))
        .map_or_else(|| "/".to_string(), |e| e.home)
}

/// `PATH` of an environment built by [`runc_env`] (empty when unset).
fn path_var(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("")
}

/// Go's `exec.LookPath` as runc 1.1 uses it: a name with a `/` is checked as is, any other is
/// searched in `PATH`. Errors are Go's texts (`exec: "x": executable file not found in $PATH`).
pub fn look_path(file: &str, path: &str) -> Result<PathBuf, String> {
    // Go 1.19's findExecutable: a stat error names the stat; a directory or a file without
    // any execute bit is "permission denied".
    fn executable(p: &Path) -> Result<(), String> {
        let meta = std::fs::metadata(p)
            .map_err(|e| format!("stat {}: {}", p.display(), errno_text(&e)))?;
        if !meta.is_dir() && meta.permissions().mode() & 0o111 != 0 {
            Ok(())
        } else {
            Err("permission denied".into())
        }
    }
    if file.contains('/') {
        return executable(Path::new(file))
            .map(|()| PathBuf::from(file))
            .map_err(|e| format!("exec: {file:?}: {e}"));
    }
    // Go's filepath.SplitList: an empty PATH has no entries, an empty entry is ".".
    let dirs = if path.is_empty() {
        None
    } else {
        Some(path.split(':'))
    };
    for dir in dirs.into_iter().flatten() {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(file);
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: {file:?}: executable file not found in $PATH"
    ))
}

/// An errno as Go prints it: the C library's text, lower-cased first letter.
pub fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let text = nix::errno::Errno::from_raw(n).desc();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text.to_string(),
            }
        }
        None => e.to_string(),
    }
}

fn process_env(spec: &Spec) -> Result<Vec<String>, String> {
    let process = spec.process().as_ref().ok_or("spec has no process")?;
    let env = process.env().clone().unwrap_or_default();
    runc_env(&env, || {
        use std::os::unix::fs::OpenOptionsExt;
        // Inside the container (its root is ours now): a regular file, bounded, never a FIFO
        // that would hold the runtime.
        let passwd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/etc/passwd")
            .and_then(super::passwd::read_database)
            .ok();
        home_of(passwd.as_deref(), nix::unistd::getuid().as_raw())
    })
}

fn args(spec: &Spec) -> Result<&[String], String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.args().as_deref())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| "args must not be empty".to_string())
}

/// Checks made before the start, as runc's init makes them: environment, executable. The
/// environment and the executable found.
fn check(spec: &Spec) -> Result<(Vec<String>, PathBuf), String> {
    let env = process_env(spec)?;
    let args = args(spec)?;
    let name = look_path(&args[0], path_var(&env))?;
    // runc: an executable on a noexec mount, or not executable by this user.
    if let Err(e) = nix::unistd::access(&name, nix::unistd::AccessFlags::X_OK) {
        return Err(format!(
            "exec {}: {}",
            name.display(),
            errno_text(&std::io::Error::from(e))
        ));
    }
    Ok((env, name))
}

/// Sets the controlling terminal's size (stdin is the pty's slave) from `process.consoleSize`,
/// before the process runs.
fn apply_console_size(spec: &Spec) {
    let Some(process) = spec.process().as_ref() else {
        return;
    };
    if process.terminal() != Some(true) {
        return;
    }
    if let Some(size) = process.console_size() {
        let rows = u16::try_from(size.height()).unwrap_or(u16::MAX);
        let cols = u16::try_from(size.width()).unwrap_or(u16::MAX);
        let stdin = std::io::stdin();
        use std::os::fd::AsFd;
        let _ = crate::sys::set_window_size(stdin.as_fd(), rows, cols);
    }
}

impl Executor for RuncExecutor {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let prepared = check(spec).map_err(ExecutorValidationError::ArgValidationError)?;
        let _ = self.prepared.set(prepared);
        // runc's default umask when `user.umask` is unset (libcontainer keeps the runtime's).
        if spec
            .process()
            .as_ref()
            .is_some_and(|p| p.user().umask().is_none())
        {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        }
        apply_console_size(spec);
        if let Some(profile) = &self.exec_seccomp {
            match libcontainer::seccomp::initialize_seccomp(profile) {
                Ok(None) => {}
                Ok(Some(listener)) => {
                    // Nobody listens for an exec's notifications: the profile is refused.
                    let _ = nix::unistd::close(listener);
                    return Err(ExecutorValidationError::ArgValidationError(
                        "seccomp: SCMP_ACT_NOTIFY is not supported for an exec".into(),
                    ));
                }
                Err(e) => {
                    return Err(ExecutorValidationError::ArgValidationError(format!(
                        "seccomp: cannot load the container's profile: {e}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The environment is built in [`Executor::exec`] from the spec, in order; the map
    /// libcontainer passes here has lost it.
    fn setup_envs(&self, _envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        Ok(())
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let fail = |text: String| ExecutorError::Other(text);
        let (env, name) = match self.prepared.get() {
            Some(prepared) => prepared.clone(),
            None => check(spec).map_err(fail)?,
        };
        let args = args(spec).map_err(fail)?;
        let cstr = |s: &[u8]| CString::new(s).map_err(|_| fail("NUL byte in an argument".into()));
        let program = cstr(name.as_os_str().as_bytes())?;
        let argv = args
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = env
            .iter()
            .map(|e| cstr(e.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let e = match nix::unistd::execve(&program, &argv, &envp) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        // As runc's init: the process has started as far as the runtime is concerned; the
        // failure goes to its own stderr and it exits 1 (exec format error, E2BIG, ...).
        let message = format!(
            "exec {}: {}\n",
            name.display(),
            errno_text(&std::io::Error::from(e))
        );
        let _ = nix::unistd::write(std::io::stderr(), message.as_bytes());
        crate::sys::exit_now(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn environment_order_duplicates_and_home() {
        let e = runc_env(&env(&["A=1", "B=2", "A=3"]), || "/root".into()).unwrap();
        assert_eq!(e, ["A=3", "B=2", "HOME=/root"]);
        let e = runc_env(&env(&["HOME=", "X=y"]), || "/home/alice".into()).unwrap();
        assert_eq!(e, ["HOME=/home/alice", "X=y"]);
        let e = runc_env(&env(&["HOME=/h"]), || unreachable!()).unwrap();
        assert_eq!(e, ["HOME=/h"]);
        assert_eq!(runc_env(&[], || "/".into()).unwrap(), ["HOME=/"]);
        assert_eq!(
            runc_env(&env(&["NOEQUALS"]), || "/".into()).unwrap_err(),
            "invalid environment variable: \"NOEQUALS\""
        );
        assert!(runc_env(&env(&["=v"]), || "/".into()).is_err());
    }

    #[test]
    fn home_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(home_of(Some(passwd), 1000), "/home/alice");
        assert_eq!(home_of(Some(passwd), 4242), "/");
        assert_eq!(home_of(None, 0), "/");
    }

    #[test]
    fn look_path_as_go() {
        assert_eq!(
            look_path("sh", "/nonexistent:/bin").unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(
            look_path("no-such-tool", "/bin").unwrap_err(),
            "exec: \"no-such-tool\": executable file not found in $PATH"
        );
        assert_eq!(
            look_path("sh", "").unwrap_err(),
            "exec: \"sh\": executable file not found in $PATH"
        );
        assert_eq!(
            look_path("/no/such", "").unwrap_err(),
            "exec: \"/no/such\": stat /no/such: no such file or directory"
        );
        assert_eq!(
            look_path("/bin", "").unwrap_err(),
            "exec: \"/bin\": permission denied"
        );
        assert_eq!(look_path("/bin/sh", "").unwrap(), Path::new("/bin/sh"));
    }
}
