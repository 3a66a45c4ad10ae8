//! containerd drives this agent: Debian's containerd (private, `common::containerd`) runs busybox
//! with `ctr run --runtime io.containerd.gcs.v2`, so each container runs in a QEMU utility VM
//! (TCG) through `containerd-shim-gcs-v2` and the bridge. What `ctr` shows must be what it shows
//! with runc: output, exit codes, stdin, exec, kill, ps, cgroup limits, and nothing left behind.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::containerd::{text, Containerd};

const BOOT: Duration = Duration::from_secs(180);

fn assert_clean(c: &Containerd) {
    // A shim exits after containerd's Shutdown; give it a moment.
    let start = std::time::Instant::now();
    while !(c.processes_left().is_empty() && c.files_left().is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "left behind: processes {:#?}, files {:#?}\n{}",
            c.processes_left(),
            c.files_left(),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.mounts_left(), Vec::<String>::new());
}

#[test]
fn ctr_runs_containers_in_the_utility_vm() {
    let c = Containerd::start(&[]);

    // Output on both streams and the exit code, as with runc.
    let out = c
        .run(
            &["--rm"],
            "exit3",
            &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        text(&out.stderr),
        c.log()
    );
    assert_eq!(text(&out.stdout), "to-stdout\n");
    assert!(
        text(&out.stderr).contains("to-stderr\n"),
        "{}",
        text(&out.stderr)
    );

    // Standard input reaches the process, and its end ends `cat`.
    let mut child = c
        .run(&["--rm"], "stdin", &["sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "line one\nline two\ndone\n");

    // Memory and CPU limits reach the container's cgroup in the guest (the cgroup filesystem
    // mounted explicitly: containerd's default spec has none, runc's containers see the same).
    // The VM is the default 512 MiB, one vCPU: the limit is below it.
    let out = c
        .run(
            &[
                "--rm",
                "--memory-limit",
                "67108864",
                "--cpu-quota",
                "50000",
                "--cpu-period",
                "100000",
                "--mount",
                "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro",
            ],
            "limits",
            &[
                "sh",
                "-c",
                "cd /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); cat memory.max cpu.max; \
                 nproc; sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo",
            ],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), c.log());
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines[..3], ["67108864", "50000 100000", "1"], "{lines:?}");
    let default_kib: u64 = lines[3].parse().unwrap();
    assert!((300 << 10..=512 << 10).contains(&default_kib), "{lines:?}");

    // hcsshim's annotations size the VM: 1 GiB and 2 vCPUs.
    let out = c
        .run(
            &[
                "--rm",
                "--annotation",
                "io.microsoft.virtualmachine.computetopology.memory.sizeinmb=1024",
                "--annotation",
                "io.microsoft.virtualmachine.computetopology.processor.count=2",
            ],
            "sized",
            &[
                "sh",
                "-c",
                "nproc; sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo",
            ],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), c.log());
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "2", "{lines:?}");
    let sized_kib: u64 = lines[1].parse().unwrap();
    assert!((800 << 10..=1024 << 10).contains(&sized_kib), "{lines:?}");

    // A container's writes stay its own: the next container of the image does not see them.
    for (id, script, expected) in [
        (
            "scribbler",
            "echo mine > /marker; rm /bin/ls; echo wrote",
            "wrote\n",
        ),
        (
            "fresh",
            "cat /marker 2>/dev/null || echo no-marker; test -e /bin/ls && echo ls-intact",
            "no-marker\nls-intact\n",
        ),
    ] {
        let out = c
            .run(&["--rm"], id, &["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{id}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{id}");
    }

    // Two containers at once, each in its VM; exec, ps and kill on them.
    let script = "trap 'echo got-term; exit 7' TERM; while :; do sleep 0.2; done";
    let first = c
        .run(&["--rm"], "first", &["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = c
        .run(&["--rm"], "second", &["sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.wait_status("first", "RUNNING", BOOT);
    c.wait_status("second", "RUNNING", BOOT);

    let out = c.ctr(
        &["task", "exec"],
        &[
            "--exec-id",
            "e1",
            "first",
            "sh",
            "-c",
            "echo in-exec; hostname; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("in-exec\n"),
        "{}",
        text(&out.stdout)
    );

    let out = c.ctr(&["task", "ps"], &["first"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pids: Vec<String> = text(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    // sh and its sleep, by their pids in the guest.
    assert!(
        !pids.is_empty() && pids.iter().all(|p| p.parse::<u32>().is_ok()),
        "{pids:?}"
    );

    // Metrics: the guest's cgroup statistics, decoded by ctr as cgroups v1 Metrics.
    let out = c.ctr(&["task", "metrics"], &["first"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let metrics = text(&out.stdout);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(value("memory.usage_in_bytes") > 0, "{metrics}");
    // sh and its sleep (the exec is gone).
    assert!((1..=3).contains(&value("pids.current")), "{metrics}");

    // SIGTERM (ctr's default) runs the trap; SIGKILL is 137.
    let out = c.ctr(&["task", "kill"], &["first"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.ctr(&["task", "kill"], &["--signal", "SIGKILL", "second"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(7), "{}", text(&first.stderr));
    assert_eq!(text(&first.stdout), "got-term\n");
    let second = second.wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(137), "{}", text(&second.stderr));

    // Killing an exited task is refused, as with runc.
    let out = c.ctr(&["task", "kill"], &["first"]);
    assert!(!out.status.success());

    assert_clean(&c);
}

#[test]
fn a_killed_shim_leaves_no_vm_behind() {
    let c = Containerd::start(&[]);
    let out = c
        .run(&["-d"], "orphan", &["sleep", "1000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), c.log());
    c.wait_status("orphan", "RUNNING", BOOT);
    let left = c.processes_left();
    assert!(left.iter().any(|p| p.contains("qemu-system")), "{left:#?}");
    let shim = left
        .iter()
        .find(|p| p.contains("containerd-shim-gcs-v2"))
        .and_then(|p| p.split(':').next())
        .unwrap()
        .to_string();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &shim])
        .status()
        .unwrap();
    assert!(status.success());
    // containerd sees the shim gone, runs `containerd-shim-gcs-v2 delete` and drops the task.
    let start = std::time::Instant::now();
    while c.task_status("orphan").is_some() {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", c.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.log().contains("cleaning up dead shim"), "{}", c.log());
    let out = c.ctr(&["container", "rm"], &["orphan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_clean(&c);
}

/// Runs `ctr` under script(1), which gives it a terminal of `rows` by `cols`.
fn with_terminal(ctr: std::process::Command, rows: u16, cols: u16) -> std::process::Output {
    let words: Vec<String> = std::iter::once(ctr.get_program())
        .chain(ctr.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "stty rows {rows} cols {cols}; exec {}",
            words.join(" ")
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn ctr_run_and_exec_with_a_terminal_get_its_size_and_a_pty() {
    let c = Containerd::start(&[]);
    // `ctr run -t` and `ctr task exec -t` need a terminal of their own.
    let out = with_terminal(
        c.run(
            &["--rm", "-t"],
            "tty",
            &["sh", "-c", "tty; stty size; exit 5"],
        ),
        30,
        100,
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        c.log()
    );
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert!(stdout.contains("30 100"), "{stdout}");

    let out = c
        .run(&["-d"], "ttyexec", &["sleep", "1000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    c.wait_status("ttyexec", "RUNNING", BOOT);
    let out = with_terminal(
        c.command(
            &["task", "exec"],
            &[
                "-t",
                "--exec-id",
                "t1",
                "ttyexec",
                "sh",
                "-c",
                "tty; stty size; exit 2",
            ],
        ),
        11,
        77,
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("/dev/pts/") && stdout.contains("11 77"),
        "{stdout}"
    );
    let out = c.ctr(&["task", "kill"], &["--signal", "SIGKILL", "ttyexec"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    c.wait_status("ttyexec", "STOPPED", Duration::from_secs(30));
    let out = c.ctr(&["task", "rm"], &["ttyexec"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.ctr(&["container", "rm"], &["ttyexec"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_clean(&c);
}

#[test]
fn bind_mounts_of_this_machine_are_shared_into_the_vm() {
    let c = Containerd::start(&[]);
    let host = tempfile::tempdir().unwrap();
    let data = host.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "from the host\n").unwrap();
    let file = host.path().join("single.conf");
    std::fs::write(&file, "one file\n").unwrap();
    let rw = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.display()
    );
    let ro = format!("type=bind,src={},dst=/ro,options=rbind:ro", data.display());
    let one = format!(
        "type=bind,src={},dst=/etc/single.conf,options=rbind:ro",
        file.display()
    );
    let out = c
        .run(
            &["--rm", "--mount", &rw, "--mount", &ro, "--mount", &one],
            "binds",
            &[
                "sh",
                "-c",
                "cat /data/in.txt; echo from the container > /data/out.txt; \
                 echo x > /ro/denied.txt 2>/dev/null || echo read-only; cat /etc/single.conf",
            ],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), c.log());
    assert_eq!(text(&out.stdout), "from the host\nread-only\none file\n");
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "from the container\n"
    );
    assert!(!data.join("denied.txt").exists());
    // A source that is neither a directory nor a file is refused with its name; nothing stays.
    let fifo = host.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let bad = format!("type=bind,src={},dst=/fifo,options=rbind", fifo.display());
    let out = c
        .run(&["--rm", "--mount", &bad], "badbind", &["true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only directories and regular files"),
        "{}",
        text(&out.stderr)
    );
    let _ = c.ctr(&["container", "rm"], &["badbind"]);
    assert_clean(&c);
}

#[test]
fn a_containerd_that_dies_leaves_no_vm_behind() {
    let mut c = Containerd::start(&[]);
    let out = c
        .run(&["-d"], "survivor", &["sleep", "1000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), c.log());
    c.wait_status("survivor", "RUNNING", BOOT);
    // Shims outlive containerd, as runc's do; the new containerd cannot reach this one (its
    // socket was in the dead one's /run): it runs `containerd-shim-gcs-v2 delete`, which ends
    // the shim and its VM.
    c.crash_and_restart();
    let start = std::time::Instant::now();
    while c.task_status("survivor").as_deref() == Some("RUNNING")
        || c.processes_left().iter().any(|p| p.contains("qemu-system"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:#?}\n{}",
            c.processes_left(),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = c.ctr(&["task", "rm"], &["survivor"]);
    let out = c.ctr(&["container", "rm"], &["survivor"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_clean(&c);
}
