//! Kubernetes' own API end to end: containerd's CRI plugin (private, `common::containerd`) with
//! `io.containerd.gcs.v2` as its runtime, driven over gRPC by a CRI client (the `k8s-cri`
//! crate): a pod is one utility VM; its containers share it, and their pod's `/dev/shm`.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::containerd::{Containerd, IMAGE};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

async fn connect(c: &Containerd) -> RuntimeServiceClient<Channel> {
    let socket = c.socket();
    let start = Instant::now();
    loop {
        let socket = socket.clone();
        let channel = Endpoint::try_from("http://[::]")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        let mut client = RuntimeServiceClient::new(channel);
        // The CRI plugin comes up after the socket does.
        match client.version(VersionRequest::default()).await {
            Ok(_) => return client,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "CRI: {e}\n{}",
                    c.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn pod_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "gcs-pod".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "gcs-pod".into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, command: &[&str], memory: i64) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory,
                ..Default::default()
            }),
            ..Default::default()
        }),
        labels: HashMap::new(),
        ..Default::default()
    }
}

async fn exec(client: &mut RuntimeServiceClient<Channel>, id: &str, cmd: &[&str]) -> (String, i32) {
    let r = client
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 60,
        })
        .await
        .unwrap()
        .into_inner();
    (String::from_utf8_lossy(&r.stdout).into_owned(), r.exit_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cri_pod_is_one_vm_shared_by_its_containers() {
    let c = Containerd::start_with(&[], true);
    let mut client = connect(&c).await;

    let pod = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()))
        .into_inner()
        .pod_sandbox_id;

    let mut ids = Vec::new();
    let commands: [(&str, &[&str], i64); 2] = [
        (
            "writer",
            &[
                "sh",
                "-c",
                "echo from-writer > /dev/shm/note; exec sleep 1000",
            ],
            64 << 20,
        ),
        ("reader", &["sleep", "1000"], 0),
    ];
    for (name, command, memory) in commands {
        let id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(name, command, memory)),
                sandbox_config: Some(pod_config()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", c.log()))
            .into_inner()
            .container_id;
        client
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", c.log()));
        ids.push(id);
    }
    let (writer, reader) = (&ids[0], &ids[1]);

    // One VM for the pod: one QEMU among the shims' processes.
    let qemus = c
        .processes_left()
        .into_iter()
        .filter(|p| p.contains("qemu-system"))
        .count();
    assert_eq!(qemus, 1, "{:#?}", c.processes_left());

    // ExecSync, and the pod's /dev/shm shared between its containers.
    let start = Instant::now();
    loop {
        let (out, code) = exec(&mut client, reader, &["cat", "/dev/shm/note"]).await;
        if code == 0 {
            assert_eq!(out, "from-writer\n");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{out} {code}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (out, code) = exec(&mut client, writer, &["sh", "-c", "hostname; exit 3"]).await;
    assert_eq!((out.as_str(), code), ("gcs-pod\n", 3));

    // The memory limit, then UpdateContainerResources, in the container's cgroup in the guest.
    let limit = [
        "sh",
        "-c",
        "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max",
    ];
    let (out, code) = exec(&mut client, writer, &limit).await;
    assert_eq!((out.as_str(), code), ("67108864\n", 0));
    client
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: writer.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", c.log()));
    let (out, _) = exec(&mut client, writer, &limit).await;
    assert_eq!(out, "134217728\n");

    // Stop and remove the pod: its containers go with it, then the VM.
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", c.log()));
    for id in &ids {
        let status = client
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(
            status.state,
            ContainerState::ContainerExited as i32,
            "{status:?}"
        );
    }
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", c.log()));
    let start = Instant::now();
    while !(c.processes_left().is_empty() && c.files_left().is_empty()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "left behind: {:#?} {:#?}",
            c.processes_left(),
            c.files_left()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.mounts_left(), Vec::<String>::new());
}
