//! `uvmboot`: boots the agent in a QEMU utility VM and acts as its host.
//!
//! ```text
//! uvmboot [--kernel PATH] [--initrd PATH] [--memory MIB] [--log] [--timing] exec -- CMD [ARGS...]
//! uvmboot [...] run [--layer IMAGE]... [--tty] -- CMD [ARGS...]
//! ```
//! `exec` runs CMD in the utility VM itself (ExecuteProcess with the null container id). `run`
//! hot-adds each layer image (ext4) as a read-only SCSI disk through QMP, sends the
//! ModifySettings the real host would (MappedVirtualDisk per layer, CombinedLayers with a
//! scratch), creates and starts a container running CMD, and cleans up after it; without
//! `--layer` it builds a busybox layer with `mkfs.ext4 -d`. Both relay the process's output
//! here, power the VM off and exit with the process's exit code.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use gcs::host::{StdioPorts, Uvm, UvmConfig};
use gcs::protocol::messages::{ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::{INFINITE_WAIT, NULL_CONTAINER_ID};
use tokio::io::AsyncWriteExt;

struct Options {
    layers: Vec<String>,
    tty: bool,
    kernel: String,
    initrd: String,
    memory_mib: u32,
    log: bool,
    timing: bool,
    command: String,
    args: Vec<String>,
}

fn usage() -> &'static str {
    "usage: uvmboot [--kernel PATH] [--initrd PATH] [--memory MIB] [--log] [--timing] exec -- CMD [ARGS...]\n       uvmboot [...] run [--layer IMAGE]... [--tty] -- CMD [ARGS...]"
}

fn parse() -> anyhow::Result<Options> {
    let mut o = Options {
        layers: Vec::new(),
        tty: false,
        kernel: UvmConfig::default_image_path("kernel/vmlinux")
            .to_string_lossy()
            .into_owned(),
        initrd: UvmConfig::default_image_path("test-initrd.img")
            .to_string_lossy()
            .into_owned(),
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
            "exec" | "run" => {
                o.command = a;
                while let Some(b) = it.next() {
                    match b.as_str() {
                        "--layer" if o.command == "run" => {
                            o.layers.push(it.next().context("--layer needs an image")?)
                        }
                        "--tty" if o.command == "run" => o.tty = true,
                        "--" => break,
                        _ => {
                            o.args.push(b);
                            break;
                        }
                    }
                }
                o.args.extend(it.by_ref());
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
    let (o_task, e_task) = (relay_out(out_l, false), relay_out(err_l, true));
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
    let result = if options.command == "run" {
        runtime.block_on(run(&options))
    } else {
        runtime.block_on(exec(&options))
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("uvmboot: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Copies a host-side stdio connection to this terminal.
fn relay_out(listener: tokio::net::UnixListener, to_stderr: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Ok((mut s, _)) = listener.accept().await {
            if to_stderr {
                let _ = tokio::io::copy(&mut s, &mut tokio::io::stderr()).await;
            } else {
                let mut out = tokio::io::stdout();
                let _ = tokio::io::copy(&mut s, &mut out).await;
                let _ = out.flush().await;
            }
        }
    })
}

/// A busybox ext4 layer image, as `docker export` of busybox would give.
fn busybox_layer(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let tree = gcs::host::layers::busybox_tree(dir)?;
    let image = dir.join("busybox.ext4");
    gcs::host::layers::ext4_image(&image, Some(&tree), "16M")?;
    Ok(image)
}

async fn run(o: &Options) -> anyhow::Result<u8> {
    use gcs::protocol::messages::{ContainerSettings, ModifySettingRequest, SchemaVersion};
    use serde_json::json;
    let t0 = Instant::now();
    let work = tempfile::tempdir()?;
    let layers: Vec<std::path::PathBuf> = if o.layers.is_empty() {
        vec![busybox_layer(work.path())?]
    } else {
        o.layers.iter().map(std::path::PathBuf::from).collect()
    };
    let mut config = UvmConfig::new(&o.kernel, &o.initrd);
    config.memory_mib = o.memory_mib;
    let mut uvm = Uvm::boot(&config).await.context("boot the utility VM")?;
    let booted = t0.elapsed();
    let client = &uvm.client;
    let mut qmp = gcs::host::qmp::Qmp::connect(&uvm.qmp_socket())
        .await
        .context("QMP")?;
    let modify =
        |resource: &str, request: &str, settings: serde_json::Value| ModifySettingRequest {
            resource_type: resource.into(),
            request_type: request.into(),
            settings: Some(settings),
        };
    let mut mounts = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let lun = u8::try_from(i + 1).context("too many layers")?;
        qmp.add_scsi_disk(layer, lun, true)
            .await
            .with_context(|| format!("hot-add {}", layer.display()))?;
        let mount = format!("/run/mounts/scsi/m{i}");
        client
            .modify_settings(
                NULL_CONTAINER_ID,
                modify(
                    "MappedVirtualDisk",
                    "Add",
                    json!({"MountPath": mount, "Lun": lun, "ReadOnly": true, "Options": ["ro"]}),
                ),
            )
            .await
            .with_context(|| format!("mount layer {}", layer.display()))?;
        mounts.push((lun, mount));
    }
    let attached = t0.elapsed();
    let id = format!("uvmboot-{}", std::process::id());
    let root = format!("/run/gcs/c/{id}/rootfs");
    let top_first: Vec<serde_json::Value> = mounts
        .iter()
        .rev()
        .map(|(_, m)| json!({"Path": m}))
        .collect();
    client
        .modify_settings(NULL_CONTAINER_ID, modify("CombinedLayers", "Add", json!({"ContainerID": id, "ContainerRootPath": root, "Layers": top_first, "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")})))
        .await
        .context("CombinedLayers")?;
    let settings = ContainerSettings {
        schema_version: SchemaVersion { major: 2, minor: 1 },
        oci_bundle_path: format!("/run/gcs/c/{id}"),
        oci_specification: Some(gcs::host::spec::container_spec(&o.args, &root, o.tty)),
        scratch_dir_path: format!("/run/gcs/c/{id}/scratch/{id}"),
    };
    client
        .create_container(&id, &settings)
        .await
        .context("Create")?;
    client.start_container(&id).await.context("Start")?;
    let ports = StdioPorts::default();
    let vsock = uvm.vsock();
    let mut params = ProcessParameters {
        create_std_out_pipe: true,
        ..Default::default()
    };
    let mut relay = VsockStdioRelaySettings {
        std_out: ports.allocate(),
        ..Default::default()
    };
    let out_task = relay_out(vsock.listen(relay.std_out)?, false);
    let err_task = if o.tty {
        None
    } else {
        params.create_std_err_pipe = true;
        relay.std_err = ports.allocate();
        Some(relay_out(vsock.listen(relay.std_err)?, true))
    };
    if o.tty {
        params.create_std_in_pipe = true;
        relay.std_in = ports.allocate();
        let listener = vsock.listen(relay.std_in)?;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut s).await;
            }
        });
    }
    let t_start = Instant::now();
    let pid = client
        .execute_process(&id, &params, relay)
        .await
        .context("start the container")?;
    let started = t_start.elapsed();
    let code = client
        .wait_for_process(&id, pid, INFINITE_WAIT)
        .await
        .context("WaitForProcess")?;
    let _ = out_task.await;
    if let Some(t) = err_task {
        let _ = t.await;
    }
    let exited = t0.elapsed();
    let _ = client
        .next_notification(std::time::Duration::from_secs(10))
        .await;
    client
        .modify_settings(
            NULL_CONTAINER_ID,
            modify(
                "CombinedLayers",
                "Remove",
                json!({"ContainerRootPath": root}),
            ),
        )
        .await?;
    for (lun, mount) in &mounts {
        client
            .modify_settings(
                NULL_CONTAINER_ID,
                modify(
                    "MappedVirtualDisk",
                    "Remove",
                    json!({"MountPath": mount, "Lun": lun, "ReadOnly": true}),
                ),
            )
            .await?;
        client
            .modify_settings(
                NULL_CONTAINER_ID,
                modify("SCSIDevice", "Remove", json!({"Lun": lun})),
            )
            .await?;
        qmp.remove_scsi_disk(*lun).await?;
    }
    client
        .delete_container_state(&id)
        .await
        .context("DeleteContainerState")?;
    if o.log {
        while let Ok(line) = uvm.log.try_recv() {
            eprintln!("gcs: {line}");
        }
    }
    let timings = uvm.timings.clone();
    let status = uvm.shutdown().await.context("shut the UVM down")?;
    if o.timing {
        eprintln!(
            "uvmboot: bridge connected {:?}, negotiated {:?}, booted {booted:?}, layers attached {attached:?}, container start {started:?}, exited {exited:?}, total {:?}, QEMU {status}",
            timings.bridge_connected, timings.negotiated, t0.elapsed()
        );
    }
    Ok(u8::try_from(code & 0xff).unwrap_or(1))
}
