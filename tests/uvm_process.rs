//! Processes in the UVM itself (null container id), as in traces 02–07: stdio over the host's
//! relay ports, exit codes, the child's fd layout, signals, wait timeouts and a pty.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{read_all, Agent, HostStdio};
use gcs::protocol::messages::{ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::{Hresult, INFINITE_WAIT, NULL_CONTAINER_ID};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn params(args: &[&str]) -> ProcessParameters {
    ProcessParameters {
        command_args: args.iter().map(|s| s.to_string()).collect(),
        working_directory: "/".into(),
        environment: Some(BTreeMap::from([("PATH".to_string(), PATH.to_string())])),
        ..ProcessParameters::default()
    }
}

#[tokio::test]
async fn cat_echoes_stdin_until_half_close() {
    let agent = Agent::negotiated(&[]).await;
    let mut p = params(&["cat"]);
    let streams = HostStdio::listen(&agent, &mut p, [true, true, true]);
    let pid = agent
        .client
        .execute_process(NULL_CONTAINER_ID, &p, streams.ports)
        .await
        .unwrap();
    let (stdin, stdout, stderr) = streams.accept().await;
    let mut stdin = stdin.unwrap();
    stdin.write_all(b"abc\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    assert_eq!(out, "abc\n");
    assert_eq!(err, "");
    assert_eq!(
        agent
            .client
            .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    // The first successful wait removed the process.
    let err = agent
        .client
        .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::NOT_FOUND));
}

#[tokio::test]
async fn exit_code_and_stderr() {
    let agent = Agent::negotiated(&[]).await;
    let mut p = params(&["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7"]);
    let streams = HostStdio::listen(&agent, &mut p, [false, true, true]);
    let pid = agent
        .client
        .execute_process(NULL_CONTAINER_ID, &p, streams.ports)
        .await
        .unwrap();
    let (_, o, e) = streams.accept().await;
    let (out, err) = tokio::join!(read_all(o), read_all(e));
    assert_eq!((out.as_str(), err.as_str()), ("to-stdout\n", "to-stderr\n"));
    assert_eq!(
        agent
            .client
            .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        7
    );
}

const FD_SCRIPT: &str = r#"for f in 0 1 2 3; do if [ -e /proc/$$/fd/$f ]; then echo "$f $(readlink /proc/$$/fd/$f | sed 's/\[[0-9]*\]//')"; else echo "$f closed"; fi; done; echo "env: $(env | sort | tr '\n' ' ')"; echo "cwd: $(pwd)""#;

#[tokio::test]
async fn fd_layout_matches_the_original() {
    let agent = Agent::negotiated(&[]).await;
    // stdout only: the other fds are closed, the environment is exactly what was sent.
    let mut p = params(&["sh", "-c", FD_SCRIPT]);
    let streams = HostStdio::listen(&agent, &mut p, [false, true, false]);
    let pid = agent
        .client
        .execute_process(NULL_CONTAINER_ID, &p, streams.ports)
        .await
        .unwrap();
    let (_, o, _) = streams.accept().await;
    let out = read_all(o).await;
    assert_eq!(
        out,
        format!("0 closed\n1 socket:\n2 closed\n3 closed\nenv: PATH={PATH} PWD=/ \ncwd: /\n")
    );
    assert_eq!(
        agent
            .client
            .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    // All three.
    let mut p = params(&["sh", "-c", FD_SCRIPT]);
    let streams = HostStdio::listen(&agent, &mut p, [true, true, true]);
    let pid = agent
        .client
        .execute_process(NULL_CONTAINER_ID, &p, streams.ports)
        .await
        .unwrap();
    let (_stdin, stdout, stderr) = streams.accept().await;
    let (out, _) = tokio::join!(read_all(stdout), read_all(stderr));
    assert_eq!(
        out,
        format!("0 socket:\n1 socket:\n2 socket:\n3 closed\nenv: PATH={PATH} PWD=/ \ncwd: /\n")
    );
    assert_eq!(
        agent
            .client
            .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    // No pipes at all: fd 1 is closed (exit 12), not /dev/null and never the agent's own.
    let p = params(&[
        "sh",
        "-c",
        "echo x >&2; [ -e /proc/self/fd/1 ] && exit 11; exit 12",
    ]);
    let pid = agent
        .client
        .execute_process(NULL_CONTAINER_ID, &p, VsockStdioRelaySettings::default())
        .await
        .unwrap();
    assert_eq!(
        agent
            .client
            .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        12
    );
    assert!(agent.client.failure().is_none());
}

#[tokio::test]
async fn start_failures_are_clear_errors() {
    let agent = Agent::negotiated(&[]).await;
    let c = &agent.client;
    let none = VsockStdioRelaySettings::default();
    let err = c
        .execute_process(NULL_CONTAINER_ID, &params(&["does-not-exist"]), none)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::FAIL));
    assert!(
        err.to_string()
            .contains("exec: \"does-not-exist\": executable file not found in $PATH"),
        "{err}"
    );
    let err = c
        .execute_process(NULL_CONTAINER_ID, &params(&["/bin/does-not-exist"]), none)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("fork/exec /bin/does-not-exist: no such file or directory"),
        "{err}"
    );
    let mut p = params(&["true"]);
    p.working_directory = "/does/not/exist".into();
    let err = c
        .execute_process(NULL_CONTAINER_ID, &p, none)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("chdir /does/not/exist: no such file or directory"),
        "{err}"
    );
    let err = c
        .execute_process(NULL_CONTAINER_ID, &params(&[]), none)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no command"), "{err}");
    // A requested stream whose port nobody listens on.
    let mut p = params(&["true"]);
    p.create_std_out_pipe = true;
    let ports = VsockStdioRelaySettings {
        std_out: 0x4000_0100,
        ..none
    };
    let err = c
        .execute_process(NULL_CONTAINER_ID, &p, ports)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dial stdout port"), "{err}");
    // CommandLine is split with shell-words rules when CommandArgs is empty.
    let p = ProcessParameters {
        command_line: "sh -c 'exit 5'".into(),
        ..params(&[])
    };
    let pid = c
        .execute_process(NULL_CONTAINER_ID, &p, none)
        .await
        .unwrap();
    assert_eq!(
        c.wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        5
    );
}

#[tokio::test]
async fn signals_and_wait_timeouts() {
    let agent = Agent::negotiated(&[]).await;
    let c = &agent.client;
    let none = VsockStdioRelaySettings::default();
    let pid = c
        .execute_process(NULL_CONTAINER_ID, &params(&["sleep", "100"]), none)
        .await
        .unwrap();
    // SignalProcess does not special-case the null id (as the original): not found.
    let err = c
        .signal_process(NULL_CONTAINER_ID, pid, Some(15))
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::SYSTEM_NOT_FOUND));
    // A 50 ms probe times out while it runs.
    let err = c
        .wait_for_process(NULL_CONTAINER_ID, pid, 50)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::TIMEOUT));
    // Killed by a signal: Go's ExitCode() of -1.
    let killer = c
        .execute_process(
            NULL_CONTAINER_ID,
            &params(&["kill", "-TERM", &pid.to_string()]),
            none,
        )
        .await
        .unwrap();
    assert_eq!(
        c.wait_for_process(NULL_CONTAINER_ID, killer, INFINITE_WAIT)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        c.wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        4294967295
    );
}

#[tokio::test]
async fn tty_process_with_console_size() {
    let agent = Agent::negotiated(&[]).await;
    let mut p = params(&[
        "sh",
        "-c",
        "echo size1=$(stty size); read line; echo got=$line; exit 5",
    ]);
    p.emulate_console = true;
    p.console_size = vec![24, 80];
    p.environment
        .as_mut()
        .unwrap()
        .insert("TERM".into(), "xterm".into());
    let streams = HostStdio::listen(&agent, &mut p, [true, true, false]);
    let pid = agent
        .client
        .execute_process(NULL_CONTAINER_ID, &p, streams.ports)
        .await
        .unwrap();
    let (stdin, stdout, _) = streams.accept().await;
    let mut stdin = stdin.unwrap();
    // The null id is not supported for resizing, as in the original.
    let err = agent
        .client
        .resize_console(NULL_CONTAINER_ID, pid, 40, 100)
        .await
        .unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::SYSTEM_NOT_FOUND));
    // Type only once the first line is out, so that the pty's echo comes after it.
    let mut stdout = stdout.unwrap();
    let mut out = Vec::new();
    while !out.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stdout.read(&mut byte).await.unwrap(), 1);
        out.push(byte[0]);
    }
    stdin.write_all(b"hello\n").await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), read_all(Some(stdout)))
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap() + &rest;
    // ConsoleSize is applied (the original ignores it and reports 0 0).
    assert_eq!(out, "size1=24 80\r\nhello\r\ngot=hello\r\n");
    assert_eq!(
        agent
            .client
            .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap(),
        5
    );
}

#[tokio::test]
async fn many_concurrent_uvm_processes() {
    let agent = Agent::negotiated(&[]).await;
    let c = &agent.client;
    let mut pids = Vec::new();
    for i in 0..30 {
        let p = params(&["sh", "-c", &format!("exit {i}")]);
        pids.push((
            i,
            c.execute_process(NULL_CONTAINER_ID, &p, VsockStdioRelaySettings::default())
                .await
                .unwrap(),
        ));
    }
    for (i, pid) in pids {
        assert_eq!(
            c.wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
                .await
                .unwrap(),
            i
        );
    }
}

/// `-scrub-logs` (the default): environment values of logged requests never reach the log;
/// with `-scrub-logs=false` they do (which shows the check can fail).
#[tokio::test]
async fn logged_requests_have_their_environment_scrubbed() {
    const SECRET: &str = "hunter2-scrub-probe";
    for (flags, leaks) in [(&[][..], false), (&["-scrub-logs=false"][..], true)] {
        let agent = Agent::negotiated(flags).await;
        let mut p = params(&["true"]);
        p.environment
            .get_or_insert_with(Default::default)
            .insert("SECRET_TOKEN".into(), SECRET.into());
        let pid = agent
            .client
            .execute_process(NULL_CONTAINER_ID, &p, Default::default())
            .await
            .unwrap();
        agent
            .client
            .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
            .await
            .unwrap();
        let log = agent.log();
        assert!(log.contains("request received"), "{log}");
        assert!(log.contains("SECRET_TOKEN"), "{log}");
        assert_eq!(log.contains(SECRET), leaks, "{flags:?}: {log}");
    }
}

/// On confidential hardware (`/dev/sev` present) requests are served one at a time: a
/// DumpStacks sent behind a slow ModifySettings (a VPMem device that never appears, 5 s) is
/// answered only after it; elsewhere at once. WaitForProcess always runs on its own, as in the
/// original (spec §10.1): a DumpStacks behind a pending wait is answered at once either way.
#[tokio::test]
async fn confidential_hardware_serves_requests_one_at_a_time_but_never_a_wait() {
    for (devices, sequential) in [("sev=c:1:3", true), ("", false)] {
        let agent = Agent::sandboxed_with_devices(&[], devices).await;
        let pid = agent
            .client
            .execute_process(
                NULL_CONTAINER_ID,
                &params(&["sleep", "3"]),
                Default::default(),
            )
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let (wait, stacks) = tokio::join!(
            agent.client.wait_for_process(NULL_CONTAINER_ID, pid, 1500),
            async {
                // Sent just after the wait.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let r = agent.client.dump_stacks().await;
                (r, start.elapsed())
            }
        );
        assert_eq!(wait.unwrap_err().hresult(), Some(Hresult::TIMEOUT));
        let (stacks, answered) = (stacks.0.unwrap(), stacks.1);
        assert!(!stacks.is_empty());
        assert!(
            answered < std::time::Duration::from_millis(1000),
            "{devices:?}: a wait held a later request for {answered:?}"
        );

        let slow = gcs::protocol::messages::ModifySettingRequest {
            resource_type: "VPMemDevice".into(),
            request_type: "Add".into(),
            settings: Some(
                serde_json::json!({"DeviceNumber": 7, "MountPath": "/run/layers/never"}),
            ),
        };
        let start = std::time::Instant::now();
        let (added, stacks) = tokio::join!(
            agent.client.modify_settings(NULL_CONTAINER_ID, slow),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let r = agent.client.dump_stacks().await;
                (r, start.elapsed())
            }
        );
        assert!(added.is_err());
        let answered = stacks.1;
        assert!(stacks.0.is_ok());
        if sequential {
            assert!(
                answered >= std::time::Duration::from_millis(4000),
                "{answered:?}"
            );
            assert!(agent.log().contains("serving requests one at a time"));
        } else {
            assert!(
                answered < std::time::Duration::from_millis(2000),
                "{answered:?}"
            );
        }
    }
}
