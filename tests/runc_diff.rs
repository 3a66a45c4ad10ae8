//! The same process spec under Debian's runc (the original agent's runtime) and under the agent,
//! comparing what the process sees: ids and groups, environment, umask, cwd, capabilities,
//! no_new_privs, rlimits, `/dev/shm`, hostname, the terminal's size, and the errors. As root;
//! the agent runs sandboxed, runc on this machine with a private state root.
//!
//! The reference is what the original hands runc: the spec after its own rewrite (the user
//! name resolved to `uid:gid`, an init's cwd created, an exec's rlimits replaced by the
//! container's). One deliberate departure is encoded here and listed in the README: for a user
//! name without a group, the agent adds the user's `/etc/group` memberships as Docker does, so
//! runc is handed them as `additionalGids`.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Agent, Outcome};
use serde_json::{json, Value};

/// What the process prints about itself.
const PROBE: &str = "echo id=$(id); echo umask=$(umask); echo pwd=$(pwd); \
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
ulimit -a; echo shm=$(df -k /dev/shm | tail -1 | awk '{print $2}'); echo hostname=$(hostname); \
echo home=$HOME; env | grep -v -E '^(PWD|SHLVL|OLDPWD)=' | sort";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Init,
    Exec,
}

struct Cell {
    name: String,
    mode: Mode,
    /// The process: the trace's, with these fields replaced.
    process: Value,
    readonly_root: bool,
    /// `linux.seccomp` of the container (init cells).
    seccomp: Option<Value>,
    /// A bind mount of an empty directory at `/data` (init cells).
    bind_data: bool,
}

fn cell(name: &str, mode: Mode, process: Value) -> Cell {
    Cell {
        name: name.to_string(),
        mode,
        process,
        readonly_root: false,
        seccomp: None,
        bind_data: false,
    }
}

/// Device access: a block node made in the container (refused by the device cgroup), a char
/// node outside the default list, and default nodes.
const DEVICES: &str = "mknod /dev/probe b 7 0 2>/dev/null; head -c 1 /dev/probe >/dev/null 2>&1 && echo block-opened || echo block-refused; \
mknod /dev/kmem2 c 1 2 2>/dev/null; head -c 1 /dev/kmem2 >/dev/null 2>&1 && echo kmem-opened || echo kmem-refused; \
head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo null-ok; head -c 3 /dev/zero | wc -c; \
exec 3<>/dev/ptmx && echo ptmx-ok";

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn probe() -> Value {
    json!(["/bin/sh", "-c", PROBE])
}

/// The matrix: every user form with and without entries, environments, cwd, umask, rlimits,
/// capabilities, no_new_privs, terminals, a read-only root, and the errors.
fn matrix() -> Vec<Cell> {
    let mut cells = Vec::new();
    for mode in [Mode::Init, Mode::Exec] {
        let m = if mode == Mode::Init { "init" } else { "exec" };
        for user in [
            "1000",
            "4242",
            "1000:50",
            "alice:staff",
            "4242:4343",
            "nobody:nogroup",
            "alice",
            "root",
            "65532",
            "alice:4343",
            "4242:staff",
            "nobody",
        ] {
            cells.push(cell(
                &format!("{m} user {user}"),
                mode,
                json!({"user": {"uid": 0, "gid": 0, "username": user}, "args": probe(), "env": [PATH]}),
            ));
        }
        for (name, env) in [
            ("env absent", Value::Null),
            ("env empty", json!([])),
            ("env FOO", json!(["FOO=1"])),
            ("env HOME empty", json!([PATH, "HOME="])),
            ("env HOME set", json!([PATH, "HOME=/custom"])),
            ("env duplicates", json!(["A=1", "B=2", "A=3", PATH])),
        ] {
            let mut p = json!({"user": {"uid": 1000, "gid": 1000}, "args": probe()});
            if !env.is_null() {
                p["env"] = env.clone();
            }
            cells.push(cell(&format!("{m} {name} (sh)"), mode, p));
            // /bin/env run directly shows the order runc gives.
            let mut p = json!({"user": {"uid": 0, "gid": 0}, "args": ["/bin/env"]});
            if !env.is_null() {
                p["env"] = env;
            }
            cells.push(cell(&format!("{m} {name} (env)"), mode, p));
        }
        let big = format!("BIG={}", "x".repeat(200 * 1024));
        for (name, process) in [
            (
                "bare name without PATH",
                json!({"args": ["sh", "-c", "echo ran"], "env": ["FOO=1"]}),
            ),
            (
                "uid without entry, gid given",
                json!({"user": {"uid": 4242, "gid": 4343, "additionalGids": [50, 7]}, "args": probe(), "env": [PATH]}),
            ),
            (
                "umask 077",
                json!({"user": {"uid": 1000, "gid": 1000, "umask": 63}, "args": probe(), "env": [PATH]}),
            ),
            (
                "cwd present",
                json!({"cwd": "/home/alice", "args": probe(), "env": [PATH]}),
            ),
            (
                "cwd not enterable by the user",
                json!({"cwd": "/secret", "user": {"uid": 1000, "gid": 1000}, "args": probe(), "env": [PATH]}),
            ),
            (
                "missing executable",
                json!({"args": ["/no/such"], "env": [PATH]}),
            ),
            ("unknown command", json!({"args": ["nope"], "env": [PATH]})),
            (
                "not executable",
                json!({"args": ["/noexec"], "env": [PATH]}),
            ),
            ("a directory", json!({"args": ["/home"], "env": [PATH]})),
            (
                "exec format error",
                json!({"args": ["/garbage"], "env": [PATH]}),
            ),
            (
                "environment string over 128 KiB",
                json!({"args": ["/bin/echo", "hi"], "env": [PATH, big]}),
            ),
            (
                "invalid environment entry",
                json!({"args": ["/bin/env"], "env": [PATH, "NOEQUALS"]}),
            ),
            (
                "terminal with consoleSize",
                json!({"terminal": true, "consoleSize": {"height": 24, "width": 80}, "args": ["/bin/sh", "-c", "stty size"], "env": [PATH]}),
            ),
            (
                "terminal without consoleSize",
                json!({"terminal": true, "args": ["/bin/sh", "-c", "stty size; echo tty=$(tty | cut -c1-9)"], "env": [PATH]}),
            ),
            (
                "capabilities reduced, no_new_privs off",
                json!({"args": probe(), "env": [PATH], "noNewPrivileges": false,
                    "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
                                     "permitted": ["CAP_KILL", "CAP_CHOWN"], "inheritable": ["CAP_KILL"]}}),
            ),
            (
                "ambient capabilities",
                json!({"args": probe(), "env": [PATH], "user": {"uid": 1000, "gid": 1000},
                    "capabilities": {"bounding": ["CAP_KILL", "CAP_NET_RAW"], "effective": ["CAP_KILL"],
                                     "permitted": ["CAP_KILL", "CAP_NET_RAW"], "inheritable": ["CAP_KILL", "CAP_NET_RAW"],
                                     "ambient": ["CAP_KILL"]}}),
            ),
            (
                // runc ignores names it does not know, with a warning; so must the agent
                // (libcontainer would refuse the first and grant the lower-case one).
                "unknown capability names",
                json!({"args": probe(), "env": [PATH],
                    "capabilities": {"bounding": ["CAP_KILL", "CAP_NOT_A_CAP", "cap_chown"], "effective": ["CAP_KILL", "NET_RAW"],
                                     "permitted": ["CAP_KILL", "CAP_NOT_A_CAP"], "inheritable": []}}),
            ),
            (
                "rlimits",
                json!({"args": probe(), "env": [PATH],
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 777}, {"type": "RLIMIT_CORE", "soft": 1, "hard": 2},
                                {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}]}),
            ),
            (
                "device cgroup",
                json!({"args": ["/bin/sh", "-c", DEVICES], "env": [PATH]}),
            ),
        ] {
            cells.push(cell(&format!("{m} {name}"), mode, process));
        }
    }
    cells.push(cell(
        "init cwd missing (created, as the original does)",
        Mode::Init,
        json!({"cwd": "/made/by/create", "args": probe(), "env": [PATH]}),
    ));
    cells.push(cell(
        "init cwd is a file",
        Mode::Init,
        json!({"cwd": "/noexec", "args": probe(), "env": [PATH]}),
    ));
    let mut c = cell(
        "init cwd under a bind mount",
        Mode::Init,
        json!({"cwd": "/data/deep/er", "args": ["/bin/sh", "-c", "pwd; ls -d /data/deep"], "env": [PATH]}),
    );
    c.bind_data = true;
    cells.push(c);
    cells.push(cell(
        "exec cwd missing",
        Mode::Exec,
        json!({"cwd": "/no/such/dir", "args": probe(), "env": [PATH]}),
    ));
    cells.push(cell(
        "exec cwd is a file",
        Mode::Exec,
        json!({"cwd": "/noexec", "args": probe(), "env": [PATH]}),
    ));
    for (name, profile) in [
        (
            "init seccomp denying mkdir",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}),
        ),
        (
            "init seccomp with an unknown syscall name",
            json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]}),
        ),
        (
            "init seccomp killing on uname",
            json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_KILL"}]}),
        ),
    ] {
        let mut c = cell(
            name,
            Mode::Init,
            json!({"args": ["/bin/sh", "-c", "grep Seccomp: /proc/self/status; mkdir /seccomp-probe 2>&1 | sed 's/.*: //'; rmdir /seccomp-probe 2>/dev/null; uname -s"], "env": [PATH]}),
        );
        c.seccomp = Some(profile);
        cells.push(c);
    }
    let mut ro = cell(
        "init read-only root",
        Mode::Init,
        json!({"args": ["/bin/sh", "-c", "touch /x 2>&1 | sed 's/.*: //'; echo id=$(id)"], "env": [PATH]}),
    );
    ro.readonly_root = true;
    cells.push(ro);
    cells
}

/// The original's resolution of a user name (hcsshim `ParseUserStr`) against the fixture, plus
/// the Docker membership groups of the departure above.
fn resolved(user: &str) -> Value {
    let (uid, gid, groups): (u32, u32, &[u32]) = match user {
        "1000" | "alice" => (1000, 1000, &[50]),
        "4242" | "65532" => (user.parse().unwrap(), 0, &[]),
        "1000:50" | "alice:staff" => (1000, 50, &[]),
        "4242:4343" => (4242, 4343, &[]),
        "nobody:nogroup" => (65534, 65534, &[]),
        "nobody" => (65534, 65534, &[]),
        "root" => (0, 0, &[]),
        "alice:4343" => (1000, 4343, &[]),
        "4242:staff" => (4242, 50, &[]),
        other => panic!("no reference resolution for {other}"),
    };
    let mut u = json!({"uid": uid, "gid": gid});
    if !groups.is_empty() {
        u["additionalGids"] = json!(groups);
    }
    u
}

/// The trace's process with the cell's fields.
fn process_of(cell: &Cell) -> Value {
    let mut p = common::trace_spec(&[])["process"].clone();
    p["env"] = json!([PATH]);
    for (k, v) in cell.process.as_object().unwrap() {
        p[k] = v.clone();
    }
    if cell.process.get("env").is_none() {
        p.as_object_mut().unwrap().remove("env");
    }
    p
}

/// What the original hands runc for this process (its rewrite of §6.3/§6.5).
/// `exec_of`: for an exec, the container's process (its rlimits replace the exec's, §6.5).
fn as_the_original_hands_runc(mut p: Value, exec_of: Option<&Value>) -> Value {
    if let Some(name) = p.pointer("/user/username").and_then(Value::as_str) {
        p["user"] = resolved(name);
    }
    if let Some(container) = exec_of {
        match container.get("rlimits") {
            Some(r) => p["rlimits"] = r.clone(),
            None => {
                p.as_object_mut().unwrap().remove("rlimits");
            }
        }
    }
    p
}

/// The container's init for exec cells: it waits, as root, with a umask of its own (an exec
/// does not take it under runc 1.1) and no rlimits (an exec then has none either).
fn sleeper() -> Value {
    json!({"args": ["/bin/sleep", "1000"], "env": [PATH], "user": {"uid": 0, "gid": 0, "umask": 63}})
}

/// A runc bundle over a fresh users tree; runc's own state root beside it.
struct Runc {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
}

impl Runc {
    fn new() -> Runc {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = common::users_tree(dir.path());
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        Runc { dir, rootfs }
    }

    fn runc(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(self.dir.path().join("state"));
        c
    }

    fn write_bundle(&self, name: &str, process: &Value, readonly: bool) -> PathBuf {
        self.write_bundle_with(name, process, readonly, None)
    }

    fn write_bundle_with(
        &self,
        name: &str,
        process: &Value,
        readonly: bool,
        seccomp: Option<&Value>,
    ) -> PathBuf {
        let bundle = self.dir.path().join(name);
        std::fs::create_dir_all(&bundle).unwrap();
        let mut spec = common::trace_spec(&[]);
        spec["process"] = process.clone();
        spec["root"] = json!({"path": self.rootfs, "readonly": readonly});
        if let Some(profile) = seccomp {
            spec["linux"]["seccomp"] = profile.clone();
        }
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        bundle
    }

    /// `runc run` in the foreground; a terminal process runs under `script` for a pty.
    fn run(&self, id: &str, process: &Value, cell: &Cell) -> Result<Outcome, String> {
        let readonly = cell.readonly_root;
        // The original creates an init's cwd in the rootfs before `runc create` (§6.5).
        if let Some(cwd) = process.get("cwd").and_then(Value::as_str) {
            let _ = std::fs::create_dir_all(self.rootfs.join(cwd.trim_start_matches('/')));
        }
        let bundle = self.write_bundle_with(id, process, readonly, cell.seccomp.as_ref());
        if cell.bind_data {
            let source = self.dir.path().join(format!("data-{id}"));
            std::fs::create_dir_all(&source).unwrap();
            let config = bundle.join("config.json");
            let mut spec: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
            spec["mounts"].as_array_mut().unwrap().push(
                json!({"destination": "/data", "type": "bind", "source": source, "options": ["rbind"]}),
            );
            std::fs::write(&config, spec.to_string()).unwrap();
        }
        if process["terminal"] == json!(true) {
            let mut c = self.runc();
            c.args(["run", "-d", "--bundle"]).arg(&bundle);
            return self.on_console(id, c);
        }
        let mut c = self.runc();
        c.args(["run", "--bundle"]).arg(&bundle).arg(id);
        let out = c.stdin(Stdio::null()).output().unwrap();
        let _ = self.runc().args(["delete", "-f", id]).output();
        runc_outcome(out)
    }

    fn start_sleeper(&self, id: &str) {
        let bundle = self.write_bundle(id, &sleeper_process(), false);
        let out = self
            .runc()
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(out.success(), "runc run -d");
    }

    fn exec(&self, id: &str, process: &Value) -> Result<Outcome, String> {
        let file = self.dir.path().join(format!("{id}-process.json"));
        std::fs::write(&file, process.to_string()).unwrap();
        if process["terminal"] == json!(true) {
            let mut c = self.runc();
            c.args(["exec", "-d", "--process"]).arg(&file);
            return self.on_console(id, c);
        }
        let out = self
            .runc()
            .args(["exec", "--process"])
            .arg(&file)
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        runc_outcome(out)
    }

    /// Runs `cmd` (a detached `run` or `exec`) with a console socket, as the original runs
    /// runc for a terminal, and reads the pty until the process has gone. The exit code is not
    /// seen this way (0).
    fn on_console(&self, id: &str, mut cmd: Command) -> Result<Outcome, String> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let sock = self.dir.path().join(format!("{id}-console.sock"));
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let out = cmd
            .arg("--console-socket")
            .arg(&sock)
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !out.status.success() {
            let _ = self.runc().args(["delete", "-f", id]).output();
            return runc_outcome(out);
        }
        listener.set_nonblocking(false).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let (_, fds) = gcs::runtime::channel::recv(conn.as_raw_fd(), &mut buf)
            .unwrap()
            .unwrap();
        let mut master = std::fs::File::from(fds.into_iter().next().unwrap());
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        // EIO once every slave end is closed.
        while let Ok(n) = master.read(&mut chunk) {
            if n == 0 {
                break;
            }
            data.extend_from_slice(&chunk[..n]);
        }
        if !id.starts_with("diff-exec") || !out.status.success() {
            let _ = self.runc().args(["delete", "-f", id]).output();
        }
        Ok(Outcome {
            code: 0,
            stdout: String::from_utf8_lossy(&data).into_owned(),
            stderr: String::new(),
        })
    }

    fn stop(&self, id: &str) {
        let _ = self.runc().args(["delete", "-f", id]).output();
    }
}

fn sleeper_process() -> Value {
    let mut p = common::trace_spec(&[])["process"].clone();
    for (k, v) in sleeper().as_object().unwrap() {
        p[k] = v.clone();
    }
    p.as_object_mut().unwrap().remove("rlimits");
    p
}

/// A runc run's outcome, or its error: what runc reports after "unable to start container
/// process: " (the cause, which the agent's error must name too).
fn runc_outcome(out: std::process::Output) -> Result<Outcome, String> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for text in [&stderr, &stdout] {
        if let Some(i) = text.find("unable to start container process: ") {
            let cause = &text[i + "unable to start container process: ".len()..];
            let cause = cause
                .strip_prefix("error during container init: ")
                .unwrap_or(cause);
            // runc logs in logrus's text form: msg="...", quotes escaped.
            let cause = cause.lines().next().unwrap_or_default().trim();
            let cause = cause
                .strip_suffix('"')
                .unwrap_or(cause)
                .replace("\\\"", "\"");
            return Err(cause);
        }
    }
    if let Some(cause) = stderr
        .lines()
        .chain(stdout.lines())
        .find_map(|l| l.trim().split("exec failed: ").nth(1))
    {
        let cause = cause
            .strip_suffix('"')
            .unwrap_or(cause)
            .replace("\\\"", "\"");
        return Err(cause);
    }
    // runc's own warnings (logrus's text form) go to its stderr here; the original runs runc
    // with `--log <file>`, so its container's stderr never has them (errors are kept).
    let stderr: String = stderr
        .split_inclusive('\n')
        .filter(|l| !(l.starts_with("time=\"") && l.contains(" level=warning msg=")))
        .collect();
    Ok(Outcome {
        code: out.status.code().unwrap_or(255) as u32,
        stdout,
        stderr,
    })
}

/// A terminal's output without carriage returns; its exit code is not compared (runc's
/// detached terminal run does not report it).
fn normalise(o: &Outcome, terminal: bool) -> (u32, String, String) {
    let clean = |s: &str| s.replace('\r', "");
    let code = if terminal { 0 } else { o.code };
    (code, clean(&o.stdout), clean(&o.stderr))
}

async fn agent_init(agent: &Agent, layer: &str, id: &str, cell: &Cell) -> Result<Outcome, String> {
    let mut spec = common::trace_spec(&[]);
    spec["process"] = process_of(cell);
    spec["root"] =
        json!({"path": format!("/run/gcs/c/{id}/rootfs"), "readonly": cell.readonly_root});
    if let Some(profile) = &cell.seccomp {
        spec["linux"]["seccomp"] = profile.clone();
    }
    if cell.bind_data {
        let source = format!("/run/diff-data-{id}");
        std::fs::create_dir_all(agent.root().join(source.trim_start_matches('/'))).unwrap();
        spec["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/data", "type": "bind", "source": source, "options": ["rbind"]}),
        );
    }
    common::create_container(agent, id, layer, spec).await?;
    let terminal = cell.process["terminal"] == json!(true);
    let started = common::start_process(agent, id, None, terminal).await;
    let outcome = match started {
        Ok(s) => Ok(s.finish(agent, id).await),
        Err(e) => Err(e),
    };
    common::destroy_container(agent, id).await;
    outcome
}

/// Compares one cell; returns a description of the difference, if any.
fn compare(
    cell: &Cell,
    runc: &Result<Outcome, String>,
    ours: &Result<Outcome, String>,
) -> Option<String> {
    let name = &cell.name;
    let terminal = cell.process["terminal"] == json!(true);
    match (runc, ours) {
        (Ok(r), Ok(o)) if normalise(r, terminal) == normalise(o, terminal) => None,
        (Err(cause), Err(message))
            if !cause.is_empty()
                && message.contains(cause.as_str())
                && !message.contains('\0')
                && !message.contains("failed to unix syscall") =>
        {
            None
        }
        _ => Some(format!("{name}:\n  runc:  {runc:?}\n  agent: {ours:?}")),
    }
}

#[tokio::test]
async fn the_process_sees_what_it_sees_under_runc() {
    assert!(
        Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "runc is needed (make test installs Debian's)"
    );
    let agent = Agent::sandboxed(&[]).await;
    let layer = common::users_layer(&agent);
    let runc = Runc::new();
    let cells = matrix();
    assert!(cells.len() >= 40, "{} cells", cells.len());
    let mut differences = Vec::new();

    for (i, cell) in cells.iter().filter(|c| c.mode == Mode::Init).enumerate() {
        let id = format!("diff-init-{i}");
        let reference = runc.run(
            &id,
            &as_the_original_hands_runc(process_of(cell), None),
            cell,
        );
        let ours = agent_init(&agent, layer, &id, cell).await;
        differences.extend(compare(cell, &reference, &ours));
    }

    // Exec cells: one running container on each side.
    let id = "diff-exec";
    runc.start_sleeper(id);
    let mut spec = common::trace_spec(&[]);
    spec["process"] = sleeper_process();
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    common::create_container(&agent, id, layer, spec)
        .await
        .unwrap();
    let init = common::start_process(&agent, id, None, false)
        .await
        .unwrap();
    let container = sleeper_process();
    for cell in cells.iter().filter(|c| c.mode == Mode::Exec) {
        let process = process_of(cell);
        let reference = runc.exec(
            id,
            &as_the_original_hands_runc(process.clone(), Some(&container)),
        );
        let terminal = process["terminal"] == json!(true);
        let ours = match common::start_process(&agent, id, Some(process), terminal).await {
            Ok(s) => Ok(s.finish(&agent, id).await),
            Err(e) => Err(e),
        };
        differences.extend(compare(cell, &reference, &ours));
    }
    runc.stop(id);
    common::kill_and_destroy(&agent, id, init).await;

    let cell_count = cells.len();
    assert!(
        differences.is_empty(),
        "{} of {cell_count} cells differ from runc:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert!(agent.client.failure().is_none());
    println!("{cell_count} cells, none differs from runc");
    let _ = Path::new("");
}

/// The failing inputs of issue 11, each with what runc (and the original) shows.
#[tokio::test]
async fn issue_11_failing_inputs() {
    let agent = Agent::sandboxed(&[]).await;
    let layer = common::users_layer(&agent);
    let mut n = 0;
    let mut init = |process: Value| {
        n += 1;
        let id = format!("i11-{n}");
        let cell = cell(&id, Mode::Init, process);
        let agent = &agent;
        async move { agent_init(agent, layer, &id, &cell).await }
    };
    for (user, want) in [
        ("1000", "1000:1000"),
        ("4242", "4242:0"),
        ("1000:50", "1000:50"),
        ("alice:staff", "1000:50"),
        ("4242:4343", "4242:4343"),
        ("nobody:nogroup", "65534:65534"),
        ("65532", "65532:0"),
    ] {
        let out = init(json!({"user": {"uid": 0, "gid": 0, "username": user},
                              "args": ["/bin/sh", "-c", "echo $(id -u):$(id -g)"], "env": [PATH]}))
        .await
        .unwrap();
        assert_eq!(out.stdout, format!("{want}\n"), "USER {user}");
    }
    let e = init(json!({"user": {"uid": 0, "gid": 0, "username": "bob"}, "args": ["/bin/true"]}))
        .await
        .unwrap_err();
    assert!(e.contains("user \"bob\" not found"), "{e}");
    let out = init(
        json!({"terminal": true, "consoleSize": {"height": 24, "width": 80},
                          "args": ["/bin/sh", "-c", "stty size"], "env": [PATH]}),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, "24 80\r\n");
    for env in [Value::Null, json!([]), json!(["FOO=1"])] {
        let mut p = json!({"args": ["/bin/sh", "-c", "echo ran"]});
        if !env.is_null() {
            p["env"] = env;
        }
        assert_eq!(init(p).await.unwrap().stdout, "ran\n");
    }

    // Execs in one running container.
    let id = "i11-exec";
    let mut spec = common::trace_spec(&[]);
    spec["process"] = sleeper_process();
    spec["process"]["user"] = json!({"uid": 0, "gid": 0, "username": "alice"});
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    common::create_container(&agent, id, layer, spec)
        .await
        .unwrap();
    let sleeper = common::start_process(&agent, id, None, false)
        .await
        .unwrap();
    let exec = |p: Value| {
        let mut process = common::trace_spec(&[])["process"].clone();
        for (k, v) in p.as_object().unwrap() {
            process[k] = v.clone();
        }
        if p.get("env").is_none() {
            process.as_object_mut().unwrap().remove("env");
        }
        let terminal = process["terminal"] == json!(true);
        let agent = &agent;
        async move {
            match common::start_process(agent, id, Some(process), terminal).await {
                Ok(s) => Ok(s.finish(agent, id).await),
                Err(e) => Err(e),
            }
        }
    };
    // Without a name of its own, the exec runs as the container's named user.
    let out =
        exec(json!({"args": ["/bin/sh", "-c", "echo $(id -u):$(id -g) $HOME"], "env": [PATH]}))
            .await
            .unwrap();
    assert_eq!(out.stdout, "1000:1000 /home/alice\n");
    let out = exec(
        json!({"terminal": true, "consoleSize": {"height": 24, "width": 80},
                          "args": ["/bin/sh", "-c", "stty size"], "env": [PATH]}),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, "24 80\r\n");
    for env in [Value::Null, json!([]), json!(["FOO=1"])] {
        let mut p = json!({"args": ["/bin/sh", "-c", "echo ran"]});
        if !env.is_null() {
            p["env"] = env;
        }
        assert_eq!(exec(p).await.unwrap().stdout, "ran\n");
    }
    let e = exec(json!({"cwd": "/no/such/dir", "args": ["/bin/true"], "env": [PATH]}))
        .await
        .unwrap_err();
    assert!(
        e.contains(
            "chdir to cwd (\"/no/such/dir\") set in config.json failed: no such file or directory"
        ),
        "{e}"
    );
    let big = exec(json!({"args": ["/bin/echo", "hi"], "env": [PATH, format!("BIG={}", "x".repeat(200 * 1024))]}))
        .await
        .unwrap();
    assert_eq!(big.code, 1);
    assert_eq!(big.stderr, "exec /bin/echo: argument list too long\n");
    for (e, cause) in [
        (
            exec(json!({"args": ["/no/such"], "env": [PATH]})).await.unwrap_err(),
            "unable to start container process: exec: \"/no/such\": stat /no/such: no such file or directory",
        ),
        (
            exec(json!({"args": ["/bin/env"], "env": ["NOEQUALS"]})).await.unwrap_err(),
            "unable to start container process: invalid environment variable: \"NOEQUALS\"",
        ),
    ] {
        assert!(e.contains(cause), "{e:?}");
        assert!(!e.contains('\0') && !e.contains("failed to unix"), "{e:?}");
    }
    common::kill_and_destroy(&agent, id, sleeper).await;
    assert!(agent.client.failure().is_none());
}

/// A pod's sandbox and workload containers resolve their users against their own image, and
/// an exec into the workload with a user of its own resolves it too.
#[tokio::test]
async fn users_of_pod_containers() {
    let agent = Agent::sandboxed(&[]).await;
    let layer = common::users_layer(&agent);
    let sid = "pod-users";
    let mut s = common::trace_spec(&[]);
    s["process"] = sleeper_process();
    s["process"]["args"] = json!([
        "/bin/sh",
        "-c",
        "echo $(id -u):$(id -g):$(id -G); exec sleep 1000"
    ]);
    s["process"]["user"] = json!({"uid": 0, "gid": 0, "username": "alice:staff"});
    s["root"]["path"] = json!(format!("/run/gcs/c/{sid}/rootfs"));
    s["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox", "io.microsoft.cri.skip-pod-networking": "true"});
    common::create_container(&agent, sid, layer, s)
        .await
        .unwrap();
    let mut sandbox = common::start_process(&agent, sid, None, false)
        .await
        .unwrap();
    let mut line = String::new();
    {
        use tokio::io::AsyncReadExt;
        let out = sandbox.stdout.as_mut().unwrap();
        let mut b = [0u8; 1];
        while !line.ends_with('\n') {
            assert_eq!(out.read(&mut b).await.unwrap(), 1);
            line.push(b[0] as char);
        }
    }
    assert_eq!(line, "1000:50:50\n");

    let wid = "pod-users-w";
    let mut w = common::trace_spec(&[]);
    w.as_object_mut().unwrap().remove("hostname");
    w["process"] = sleeper_process();
    w["process"]["args"] = json!(["/bin/sh", "-c", "echo $(id -u):$(id -g):$(id -G) $HOME"]);
    w["process"]["user"] = json!({"uid": 0, "gid": 0, "username": "1000"});
    w["root"]["path"] = json!(format!("/run/gcs/c/{wid}/rootfs"));
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": sid});
    w["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"},
        {"type": "ipc", "path": format!("/proc/{}/ns/ipc", sandbox.pid)},
        {"type": "uts", "path": format!("/proc/{}/ns/uts", sandbox.pid)},
    ]);
    common::create_container(&agent, wid, layer, w)
        .await
        .unwrap();
    let out = common::start_process(&agent, wid, None, false)
        .await
        .unwrap()
        .finish(&agent, wid)
        .await;
    // USER 1000 names no group: alice's memberships come with it (README: departures).
    assert_eq!(out.stdout, "1000:1000:1000 50 /home/alice\n");
    common::destroy_container(&agent, wid).await;

    let mut p = sleeper_process();
    p["args"] = json!(["/bin/sh", "-c", "echo $(id -u):$(id -g)"]);
    p["user"] = json!({"uid": 0, "gid": 0, "username": "nobody:nogroup"});
    let out = common::start_process(&agent, sid, Some(p), false)
        .await
        .unwrap()
        .finish(&agent, sid)
        .await;
    assert_eq!(out.stdout, "65534:65534\n");
    common::kill_and_destroy(&agent, sid, sandbox).await;
    assert!(agent.client.failure().is_none());
}
