//! `uvmboot`: boots the agent in a QEMU utility VM and acts as its host.
//!
//! ```text
//! uvmboot [--kernel PATH] [--initrd PATH] [--memory MIB] [--log] [--timing] exec -- CMD [ARGS...]
//! ```
//! `exec` runs CMD in the utility VM itself (ExecuteProcess with the null container id), relays
//! its stdout and stderr here, powers the VM off and exits with CMD's exit code. `run` (a
//! container from SCSI-attached layers) arrives with the storage work.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use gcs::host::{StdioPorts, Uvm, UvmConfig};
use gcs::protocol::messages::{ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::{INFINITE_WAIT, NULL_CONTAINER_ID};
use tokio::io::AsyncWriteExt;

struct Options {
    kernel: String,
    initrd: String,
    memory_mib: u32,
    log: bool,
    timing: bool,
    command: String,
    args: Vec<String>,
}

fn usage() -> &'static str {
    "usage: uvmboot [--kernel PATH] [--initrd PATH] [--memory MIB] [--log] [--timing] exec -- CMD [ARGS...]"
}

fn parse() -> anyhow::Result<Options> {
    let mut o = Options {
        kernel: "out/kernel/vmlinux".into(),
        initrd: "out/test-initrd.img".into(),
        memory_mib: 512,
        log: false,
        timing: false,
        command: String::new(),
        args: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kernel" => o.kernel = it.next().context("--kernel needs a path")?,
            "--initrd" => o.initrd = it.next().context("--initrd needs a path")?,
            "--memory" => o.memory_mib = it.next().context("--memory needs MiB")?.parse()?,
            "--log" => o.log = true,
            "--timing" => o.timing = true,
            "exec" => {
                o.command = a;
                let rest: Vec<String> = it.by_ref().collect();
                o.args = match rest.first().map(String::as_str) {
                    Some("--") => rest[1..].to_vec(),
                    _ => rest,
                };
            }
            "-h" | "--help" => bail!("{}", usage()),
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    if o.command.is_empty() || o.args.is_empty() {
        bail!("{}", usage());
    }
    Ok(o)
}

async fn exec(o: &Options) -> anyhow::Result<u8> {
    let t0 = Instant::now();
    let mut config = UvmConfig::new(&o.kernel, &o.initrd);
    config.memory_mib = o.memory_mib;
    let mut uvm = Uvm::boot(&config).await.context("boot the utility VM")?;
    if o.timing {
        eprintln!(
            "uvmboot: first log line {:?}, bridge connected {:?}, negotiated {:?}",
            uvm.timings.first_log_line, uvm.timings.bridge_connected, uvm.timings.negotiated
        );
    }
    let ports = StdioPorts::default();
    let vsock = uvm.vsock();
    let (out_port, err_port) = (ports.allocate(), ports.allocate());
    let (out_l, err_l) = (vsock.listen(out_port)?, vsock.listen(err_port)?);
    let params = ProcessParameters {
        command_args: o.args.clone(),
        working_directory: "/".into(),
        environment: Some(
            [(
                "PATH".to_string(),
                "/sbin:/usr/sbin:/bin:/usr/bin".to_string(),
            )]
            .into(),
        ),
        create_std_out_pipe: true,
        create_std_err_pipe: true,
        ..Default::default()
    };
    let relay = |l: tokio::net::UnixListener, to_stderr: bool| {
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                if to_stderr {
                    let _ = tokio::io::copy(&mut s, &mut tokio::io::stderr()).await;
                } else {
                    let mut out = tokio::io::stdout();
                    let _ = tokio::io::copy(&mut s, &mut out).await;
                    let _ = out.flush().await;
                }
            }
        })
    };
    let (o_task, e_task) = (relay(out_l, false), relay(err_l, true));
    let t_exec = Instant::now();
    let pid = uvm
        .client
        .execute_process(
            NULL_CONTAINER_ID,
            &params,
            VsockStdioRelaySettings {
                std_in: 0,
                std_out: out_port,
                std_err: err_port,
            },
        )
        .await
        .context("ExecuteProcess")?;
    let code = uvm
        .client
        .wait_for_process(NULL_CONTAINER_ID, pid, INFINITE_WAIT)
        .await
        .context("WaitForProcess")?;
    let _ = tokio::join!(o_task, e_task);
    let t_done = t_exec.elapsed();
    if o.log {
        while let Ok(line) = uvm.log.try_recv() {
            eprintln!("gcs: {line}");
        }
    }
    let status = uvm.shutdown().await.context("shut the UVM down")?;
    if o.timing {
        eprintln!(
            "uvmboot: process ran {t_done:?}; total {:?}; QEMU exit {status}",
            t0.elapsed()
        );
    }
    Ok(u8::try_from(code & 0xff).unwrap_or(1))
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("uvmboot: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("uvmboot: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(exec(&options)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("uvmboot: {e:#}");
            ExitCode::from(1)
        }
    }
}
