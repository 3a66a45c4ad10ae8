//! A process in the UVM itself (null container id) against the floor, in the same run
//! (issue 17): ExecuteProcess + WaitForProcess of `/bin/true` with no stdio, no environment and
//! no working directory, median of 200, against `fork` + `execve("/bin/true")` + `waitpid` of
//! the same binary in this process (a small one: one thread, a current-thread tokio runtime),
//! median of 200, and against `posix_spawn` + `waitpid` for information. The three alternate in
//! blocks of 20 so that other load on the machine weighs on all of them.
//! Also the agent's memory: idle right after NegotiateProtocol, and after 100 of those execs.
//!
//! Run with `make bench` (or `cargo bench --bench uvm_exec`); no root needed.

#![allow(
    unsafe_code,
    reason = "the floor calls fork, execve, posix_spawn and waitpid"
)]
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "benchmark code"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::ffi::{c_char, CString};
use std::time::{Duration, Instant};

use common::Agent;
use gcs::protocol::messages::{ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::{INFINITE_WAIT, NULL_CONTAINER_ID};

const RUNS: usize = 200;
/// Untimed runs of each floor before the timed ones.
const WARMUP: usize = 5;
/// The RSS figure after this many UVM execs.
const RSS_AFTER: usize = 100;
const PROGRAM: &str = "/bin/true";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The exit status of child `pid`, waited for.
fn wait_child(pid: libc::pid_t) -> libc::c_int {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable c_int for the duration of the call; `pid` is our
    // own child, not yet reaped.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(reaped, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

fn assert_true_exited(status: libc::c_int) {
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{PROGRAM} ended with status {status:#x}"
    );
}

/// `/bin/true`'s path, argv and envp, made before any fork.
struct Floor {
    program: CString,
    argv: [*mut c_char; 2],
    envp: [*mut c_char; 1],
}

impl Floor {
    fn new() -> Floor {
        let program = CString::new(PROGRAM).unwrap();
        let argv = [program.as_ptr().cast_mut(), std::ptr::null_mut()];
        Floor {
            program,
            argv,
            envp: [std::ptr::null_mut()],
        }
    }

    /// `fork` + `execve` + `waitpid`, the minimal C way.
    fn fork(&self) -> Duration {
        let t = Instant::now();
        // SAFETY: the child only calls execve and _exit, both async-signal-safe, on data
        // prepared before the fork (`self` outlives the call).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: `argv` and `envp` are NULL-terminated arrays of NUL-terminated strings
            // (`argv[0]` points into `program`); _exit ends the child if execve fails.
            unsafe {
                libc::execve(
                    self.program.as_ptr(),
                    self.argv.as_ptr().cast(),
                    self.envp.as_ptr().cast(),
                );
                libc::_exit(127);
            }
        }
        let status = wait_child(pid);
        let elapsed = t.elapsed();
        assert_true_exited(status);
        elapsed
    }

    /// glibc's `posix_spawn` (clone with CLONE_VM|CLONE_VFORK) + `waitpid`.
    fn posix_spawn(&self) -> Duration {
        let t = Instant::now();
        let mut pid: libc::pid_t = 0;
        // SAFETY: `pid` is writable; no file actions or attributes (null is allowed); `argv`
        // and `envp` are NULL-terminated arrays of NUL-terminated strings that posix_spawn
        // does not modify.
        let err = unsafe {
            libc::posix_spawn(
                &mut pid,
                self.program.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        assert_eq!(
            err,
            0,
            "posix_spawn: {}",
            std::io::Error::from_raw_os_error(err)
        );
        let status = wait_child(pid);
        let elapsed = t.elapsed();
        assert_true_exited(status);
        elapsed
    }
}

/// VmRSS, RssAnon and RssFile of `pid`, in KiB.
fn rss(pid: u32) -> String {
    let [total, anon, file] = ["VmRSS", "RssAnon", "RssFile"].map(|f| common::status_field(pid, f));
    format!("{total} KiB (RssAnon {anon}, RssFile {file})")
}

struct Figures {
    fork: Duration,
    posix_spawn: Duration,
    exec: Duration,
    rss_negotiated: String,
    rss_idle: String,
    rss_after: String,
    rss_after_idle: String,
}

/// How long the agent is left alone before an "idle" figure (its bridge trims the heap after
/// 1 s with no request in flight).
const IDLE: Duration = Duration::from_millis(1500);

/// The samples alternate in blocks of `RUNS / ROUNDS` (floor, posix_spawn, ours), so that a
/// machine busy with something else slows all three alike.
const ROUNDS: usize = 10;

async fn measure() -> Figures {
    let agent = Agent::negotiated(&["-loglevel", "warning"]).await;
    let pid = agent.child.id();
    let rss_negotiated = rss(pid);
    tokio::time::sleep(IDLE).await;
    let rss_idle = rss(pid);
    let params = ProcessParameters {
        command_args: vec![PROGRAM.into()],
        ..ProcessParameters::default()
    };
    let c = &agent.client;
    let exec = || async {
        let t = Instant::now();
        let p = c
            .execute_process(
                NULL_CONTAINER_ID,
                &params,
                VsockStdioRelaySettings::default(),
            )
            .await
            .unwrap();
        let code = c
            .wait_for_process(NULL_CONTAINER_ID, p, INFINITE_WAIT)
            .await
            .unwrap();
        assert_eq!(code, 0);
        t.elapsed()
    };
    let floor = Floor::new();
    for _ in 0..WARMUP {
        floor.fork();
        floor.posix_spawn();
    }
    let (mut fork, mut spawn, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    let mut rss_after = String::new();
    for _ in 0..ROUNDS {
        fork.extend((0..RUNS / ROUNDS).map(|_| floor.fork()));
        spawn.extend((0..RUNS / ROUNDS).map(|_| floor.posix_spawn()));
        for _ in 0..RUNS / ROUNDS {
            ours.push(exec().await);
            if ours.len() == RSS_AFTER {
                rss_after = rss(pid);
            }
        }
    }
    tokio::time::sleep(IDLE).await;
    let rss_after_idle = rss(pid);
    Figures {
        fork: median(fork),
        posix_spawn: median(spawn),
        exec: median(ours),
        rss_negotiated,
        rss_idle,
        rss_after,
        rss_after_idle,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(measure());
    let (fork, spawn, ours) = (f.fork, f.posix_spawn, f.exec);
    println!(
        "floor: fork+execve+waitpid of {PROGRAM} in this process: {:.0} us (median of {RUNS})",
        us(fork)
    );
    println!(
        "floor for information: posix_spawn+waitpid: {:.0} us (median of {RUNS})",
        us(spawn)
    );
    println!(
        "gcs UVM exec (ExecuteProcess+WaitForProcess of {PROGRAM}, no stdio): {:.0} us (median of {RUNS}), \
         {:.2}x fork floor (goal <= 1.20x), {:.2}x posix_spawn",
        us(ours),
        us(ours) / us(fork),
        us(ours) / us(spawn)
    );
    println!(
        "agent RSS right after NegotiateProtocol: {} (goal <= 3072 KiB)",
        f.rss_negotiated
    );
    println!(
        "agent RSS idle {} ms later: {} (goal <= 3072 KiB)",
        IDLE.as_millis(),
        f.rss_idle
    );
    println!(
        "agent RSS after {RSS_AFTER} UVM execs: {} (goal <= 4096 KiB)",
        f.rss_after
    );
    println!(
        "agent RSS after {RUNS} UVM execs and {} ms idle: {}",
        IDLE.as_millis(),
        f.rss_after_idle
    );
}
