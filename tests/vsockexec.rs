//! `vsockexec` wires stdio to host ports (here hybrid-vsock Unix sockets via GCS_VSOCK_UDS).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn vsockexec(dir: &Path) -> PathBuf {
    let link = dir.join("vsockexec");
    std::os::unix::fs::symlink(common::GCS, &link).unwrap();
    link
}

fn listen(prefix: &Path, port: u32) -> UnixListener {
    UnixListener::bind(gcs::transport::Dialer::uds_path(prefix, port)).unwrap()
}

fn read_all(l: UnixListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

#[test]
fn direct_mode_connects_each_fd_and_execs() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("v");
    let out = read_all(listen(&prefix, 5));
    let err = read_all(listen(&prefix, 6));
    let status = Command::new(vsockexec(dir.path()))
        .env(gcs::transport::VSOCK_UDS_ENV, &prefix)
        .args([
            "-o",
            "5",
            "-e",
            "6",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 4",
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(4));
    assert_eq!(out.join().unwrap(), "to-out\n");
    assert_eq!(err.join().unwrap(), "to-err\n");
}

#[test]
fn same_port_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("v");
    let both = read_all(listen(&prefix, 109));
    let status = Command::new(vsockexec(dir.path()))
        .env(gcs::transport::VSOCK_UDS_ENV, &prefix)
        .args(["-o", "109", "-e", "109", "sh", "-c", "echo a; echo b >&2"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(both.join().unwrap(), "a\nb\n");
}

#[test]
fn missing_listener_fails_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(vsockexec(dir.path()))
        .env(gcs::transport::VSOCK_UDS_ENV, dir.path().join("nobody"))
        .args(["-e", "109", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect: port 109"));
}

#[test]
fn reconnect_mode_waits_for_a_late_listener_and_keeps_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("v");
    let mut child = Command::new(vsockexec(dir.path()))
        .env(gcs::transport::VSOCK_UDS_ENV, &prefix)
        .args([
            "-r",
            "-e",
            "109",
            "sh",
            "-c",
            "echo early >&2; sleep 0.3; echo late >&2; exit 3",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(250));
    let log = read_all(listen(&prefix, 109));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(log.join().unwrap(), "early\nlate\n");
}
