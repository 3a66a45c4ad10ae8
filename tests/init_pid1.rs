//! `init` as PID 1 of fresh pid, mount, net, uts, ipc and cgroup namespaces, chrooted into a
//! throw-away busybox rootfs, inside a cgroup of its own: it mounts what the spec lists, brings
//! `lo` up, takes entropy from port 1, runs its child, reaps orphans and exits with the child's
//! status. Needs root, `unshare` and Debian's busybox-static (installed by `make test`).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "cat", "grep", "sleep", "wc", "echo", "kill", "readlink", "ls", "test", "[",
];

struct Sandbox {
    root: tempfile::TempDir,
    cgroup: std::path::PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        assert!(nix::unistd::geteuid().is_root(), "the init test needs root");
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} missing: install busybox-static (make test does)"
        );
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["bin", "dev", "proc", "sys", "run", "tmp", "etc"] {
            std::fs::create_dir(r.join(d)).unwrap();
        }
        std::fs::copy(common::GCS, r.join("init")).unwrap();
        std::fs::copy(BUSYBOX, r.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
        }
        // A cgroup of its own in the unified hierarchy, so that what init enables stays there.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cgroup = Path::new("/sys/fs/cgroup/unified")
            .join(format!("gcs-init-test-{}-{n}", std::process::id()));
        Sandbox { root, cgroup }
    }

    /// Runs `/init <init_args> -- <script>` as PID 1 in the sandbox.
    fn run(&self, init_args: &[&str], script: &str) -> Output {
        let mut cmd = Command::new("sh");
        let cg = if Path::new("/sys/fs/cgroup/unified").exists() {
            format!(
                "mkdir -p {0} && echo $$ > {0}/cgroup.procs && ",
                self.cgroup.display()
            )
        } else {
            String::new()
        };
        cmd.arg("-c")
            .arg(format!(
                "{cg}exec unshare --fork --pid --mount --net --uts --ipc --cgroup --propagation private chroot \"$0\" /init \"$@\""
            ))
            .arg(self.root.path())
            .args(init_args)
            .args(["--", "/bin/sh", "-c", script]);
        cmd.env(gcs::transport::VSOCK_UDS_ENV, "/vsock");
        cmd.output().unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

#[test]
fn init_mounts_runs_child_reaps_orphans_and_returns_its_status() {
    let sandbox = Sandbox::new();
    // The host's entropy stream on port 1.
    let listener = UnixListener::bind(sandbox.root.path().join("vsock_1")).unwrap();
    let entropy = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&[0x5a; 512]).unwrap();
    });
    let script = r#"
        echo pid=$$
        grep -q ' /proc proc ' /proc/mounts && echo proc-ok
        grep -q ' /run tmpfs ' /proc/mounts && echo run-ok
        grep -q ' /tmp tmpfs ' /proc/mounts && echo tmp-ok
        grep -q ' /dev/shm tmpfs ' /proc/mounts && echo shm-ok
        grep -q ' /dev/pts devpts ' /proc/mounts && echo pts-ok
        grep -q ' /sys sysfs ' /proc/mounts && echo sys-ok
        grep -q ' /sys/fs/cgroup cgroup' /proc/mounts && echo cgroup-ok
        [ "$(readlink /dev/fd)" = /proc/self/fd ] && echo fd-ok
        echo lo-flags=$(cat /sys/class/net/lo/flags)
        echo init=$(cat /proc/1/cmdline | tr '\0' ' ' 2>/dev/null || cat /proc/1/cmdline)
        echo env=$(cat /proc/self/environ | tr '\0' ' ')
        (sleep 0.2 &)
        sleep 1
        echo zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)
        exit 7
    "#;
    let out = sandbox.run(&["-e", "1"], script);
    entropy.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for want in [
        "proc-ok",
        "run-ok",
        "tmp-ok",
        "shm-ok",
        "pts-ok",
        "sys-ok",
        "cgroup-ok",
        "fd-ok",
        "zombies=0",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == want),
            "missing {want}:\n{stdout}\n{stderr}"
        );
    }
    // The child is not PID 1: init is, and it reaped the orphaned sleep.
    assert!(!stdout.contains("pid=1\n"), "{stdout}");
    // lo is up: IFF_UP (0x1) set.
    let flags = stdout
        .lines()
        .find_map(|l| l.strip_prefix("lo-flags="))
        .unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo flags {flags:#x}");
    assert!(
        stderr.contains("added 512 bytes of boot entropy"),
        "{stderr}"
    );
    // The child sees only PATH (and the test-only vsock redirection).
    let env = stdout.lines().find_map(|l| l.strip_prefix("env=")).unwrap();
    assert!(env.contains("PATH=/sbin:/usr/sbin:/bin:/usr/bin"), "{env}");
    assert!(!env.contains("HOME="), "{env}");
}

#[test]
fn init_reports_128_plus_signal_and_survives_missing_entropy() {
    let sandbox = Sandbox::new();
    // No listener on port 1: not fatal.
    let out = sandbox.run(&["-e", "1"], "kill -KILL $$");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    assert!(stderr.contains("entropy from port 1"), "{stderr}");
}

#[test]
fn init_refuses_to_run_unless_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("init");
    std::os::unix::fs::symlink(common::GCS, &link).unwrap();
    let out = Command::new(&link).arg("true").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as PID 1"));
}
