//! The `Network` resource against the real agent, as root: the agent runs in the sandbox with a
//! network namespace of its own; a veth pair made by the test stands in for the host's NIC (one
//! end in the agent's namespace, found by its MAC; the other in a namespace of the test's,
//! standing in for the network behind it).
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agent, HostStdio};
use gcs::protocol::messages::{ModifySettingRequest, ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::{INFINITE_WAIT, NULL_CONTAINER_ID};
use serde_json::{json, Value};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// A network namespace of the test's, deleted on drop (with its end of the veth).
struct PeerNamespace(String);

impl Drop for PeerNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

async fn call(agent: &Agent, request: &str, settings: Value) -> Result<(), String> {
    agent
        .client
        .modify_settings(
            NULL_CONTAINER_ID,
            ModifySettingRequest {
                resource_type: "Network".into(),
                request_type: request.into(),
                settings: Some(settings),
            },
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Runs `args` in container `id` with stdout; returns (stdout, exit code).
async fn exec(agent: &Agent, id: &str, args: &[&str]) -> (String, u32) {
    let mut params = ProcessParameters {
        oci_process: Some(json!({"args": args, "cwd": "/", "env": ["PATH=/bin:/sbin"],
            "user": {"uid": 0, "gid": 0}, "terminal": false})),
        ..ProcessParameters::default()
    };
    let stdio = HostStdio::listen(agent, &mut params, [false, true, false]);
    let pid = agent
        .client
        .execute_process(id, &params, stdio.ports)
        .await
        .unwrap();
    let (_, out, _) = stdio.accept().await;
    let out = common::read_all(out).await;
    let code = agent
        .client
        .wait_for_process(id, pid, INFINITE_WAIT)
        .await
        .unwrap();
    (out, code)
}

#[tokio::test]
async fn nic_moved_into_the_pod_configured_and_reachable() {
    let n = std::process::id() % 200 + 20;
    let agent = Agent::sandboxed_with_network(&[]).await;
    let peer = PeerNamespace(format!("gcs-peer-{}", std::process::id()));
    ip(&["netns", "add", &peer.0]);
    let (nic, far) = (format!("gcsn{n}a"), format!("gcsn{n}b"));
    let mac = format!("02:00:00:00:{n:02x}:01");
    ip(&[
        "link", "add", &nic, "address", &mac, "type", "veth", "peer", "name", &far,
    ]);
    ip(&["link", "set", &far, "netns", &peer.0]);
    ip(&["link", "set", &nic, "netns", &agent.agent_pid().to_string()]);
    let subnet = format!("10.77.{n}");
    ip(&[
        "-n",
        &peer.0,
        "addr",
        "add",
        &format!("{subnet}.1/24"),
        "dev",
        &far,
    ]);
    ip(&[
        "-n",
        &peer.0,
        "addr",
        "add",
        &format!("fd77:{n}::1/64"),
        "dev",
        &far,
        "nodad",
    ]);
    ip(&["-n", &peer.0, "link", "set", &far, "up"]);

    // The far end serves one TCP connection.
    let listen_ns = std::fs::File::open(format!("/run/netns/{}", peer.0)).unwrap();
    let addr = format!("{subnet}.1:7777");
    let server = std::thread::spawn(move || {
        nix::sched::setns(listen_ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = std::net::TcpListener::bind(&addr).unwrap();
        let (mut s, from) = listener.accept().unwrap();
        s.write_all(b"hello over tcp\n").unwrap();
        from.ip().to_string()
    });

    let ns = "6e4ea0cb-7bb4-4a0e-a7a4-5c3d3dcbe9ad";
    let adapter = json!({"NamespaceID": ns.to_uppercase(), "ID": "0d0e1f2a-1111-2222-3333-444455556666",
        "MacAddress": mac.replace(':', "-").to_uppercase(),
        "DNSSuffix": "svc.cluster.local,Cluster.Local", "DNSServerList": format!("{subnet}.1"),
        "EncapOverhead": 50,
        "IPConfigs": [{"IPAddress": format!("{subnet}.2"), "PrefixLength": 24},
                      {"IPAddress": format!("fd77:{n}::2"), "PrefixLength": 64}],
        "Routes": [{"NextHop": format!("{subnet}.1"), "DestinationPrefix": "0.0.0.0/0"},
                   {"NextHop": "10.99.0.1", "DestinationPrefix": "192.168.99.0/24", "Metric": 20},
                   {"NextHop": "", "DestinationPrefix": "::/0"}]});
    // Before the pod exists the NIC is only recorded.
    call(&agent, "Add", adapter.clone()).await.unwrap();
    let err = call(&agent, "Add", adapter.clone()).await.unwrap_err();
    assert!(err.contains("already in namespace"), "{err}");

    // The pod's sandbox: the NIC moves into its namespace and is configured there.
    let id = "net-sandbox";
    common::add_rootfs(&agent.client, id, common::busybox_layer(&agent)).await;
    let mut spec = common::trace_spec(&["sleep", "1000"]);
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    spec["hostname"] = json!("netpod");
    spec["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox"});
    spec["windows"] = json!({"network": {"networkNamespace": ns}});
    agent
        .client
        .create_container(id, &common::container_settings(id, spec))
        .await
        .unwrap();
    agent.client.start_container(id).await.unwrap();
    let init = agent
        .client
        .execute_process(
            id,
            &ProcessParameters::default(),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap();
    let (out, code) = exec(
        &agent,
        id,
        &["sh", "-c", "ip addr show; ip route; ip -6 route"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    for want in [
        format!("inet {subnet}.2/24"),
        "mtu 1450".to_string(),
        format!("inet6 fd77:{n}::2/64"),
        format!("default via {subnet}.1 dev {nic}"),
        format!("192.168.99.0/24 via 10.99.0.1 dev {nic}"),
        format!("10.99.0.1 dev {nic} scope link"),
        "inet 127.0.0.1/8".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    // The pod's resolv.conf (bind-mounted into its workload containers) from the adapter.
    assert_eq!(
        std::fs::read_to_string(agent.root().join(format!("run/gcs/c/{id}/resolv.conf"))).unwrap(),
        format!("search svc.cluster.local cluster.local\nnameserver {subnet}.1\n")
    );
    // Gone from the agent's own namespace.
    let links = std::fs::read_dir(format!("/proc/{}/root/sys/class/net", agent.agent_pid()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    assert!(!links.contains(&nic), "{links:?}");

    // A workload container of the pod shares the namespace, gets the pod's DNS and hosts
    // files, and reaches the far end over TCP.
    let wid = "net-workload";
    common::add_rootfs(&agent.client, wid, common::busybox_layer(&agent)).await;
    let mut w = common::trace_spec(&[
        "sh",
        "-c",
        &format!(
            "cat /etc/resolv.conf /etc/hostname; grep -c netpod /etc/hosts; nc {subnet}.1 7777"
        ),
    ]);
    w["root"]["path"] = json!(format!("/run/gcs/c/{wid}/rootfs"));
    w.as_object_mut().unwrap().remove("hostname");
    w["annotations"] = json!({"io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": id});
    w["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"},
        {"type": "network", "path": format!("/proc/{init}/ns/net")}]);
    agent
        .client
        .create_container(wid, &common::container_settings(wid, w))
        .await
        .unwrap();
    agent.client.start_container(wid).await.unwrap();
    let start = Instant::now();
    let mut params = ProcessParameters::default();
    let stdio = HostStdio::listen(&agent, &mut params, [false, true, false]);
    let winit = agent
        .client
        .execute_process(wid, &params, stdio.ports)
        .await
        .unwrap();
    let (_, out, _) = stdio.accept().await;
    let out = common::read_all(out).await;
    assert_eq!(
        agent
            .client
            .wait_for_process(wid, winit, INFINITE_WAIT)
            .await
            .unwrap(),
        0,
        "{out}"
    );
    assert_eq!(
        out,
        format!("search svc.cluster.local cluster.local\nnameserver {subnet}.1\nnetpod\n1\nhello over tcp\n")
    );
    assert_eq!(server.join().unwrap(), format!("{subnet}.2"));
    assert!(start.elapsed() < Duration::from_secs(20));
    common::remove_rootfs(&agent.client, wid).await;
    agent.client.delete_container_state(wid).await.unwrap();

    // Bad input: clear errors, and the agent keeps serving.
    for (settings, want) in [
        (
            json!({"NamespaceID": ns, "ID": "aaaa", "IPConfigs": [{"IPAddress": "10.0.0.300", "PrefixLength": 24}]}),
            "is not an IP address",
        ),
        (
            json!({"NamespaceID": ns, "ID": "bbbb", "IPConfigs": [{"IPAddress": "10.0.0.3", "PrefixLength": 40}]}),
            "not a valid interface address",
        ),
        (
            json!({"NamespaceID": ns, "ID": "cccc", "MacAddress": "02-00-00-00-00-99",
                   "IPConfigs": [{"IPAddress": "10.0.0.3", "PrefixLength": 24}]}),
            "network adapter cccc did not appear within",
        ),
    ] {
        let err = call(&agent, "Add", settings).await.unwrap_err();
        assert!(err.contains(want), "{err}");
    }
    // An adapter the namespace does not have: accepted (and logged), as the original.
    call(&agent, "Remove", json!({"NamespaceID": ns, "ID": "dddd"}))
        .await
        .unwrap();
    assert!(agent.log().contains("does not have"), "no warning logged");
    call(
        &agent,
        "Remove",
        json!({"NamespaceID": "unknown-ns", "ID": "dddd"}),
    )
    .await
    .unwrap();
    call(&agent, "Remove", adapter).await.unwrap();

    agent.client.shutdown_forced(id).await.unwrap();
    agent
        .client
        .wait_for_process(id, init, INFINITE_WAIT)
        .await
        .unwrap();
    common::remove_rootfs(&agent.client, id).await;
    agent.client.delete_container_state(id).await.unwrap();
}

/// `ip` inside the agent's network namespace.
fn ip_in(agent: &Agent, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg("-t")
        .arg(agent.agent_pid().to_string())
        .arg("-n")
        .arg("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn host_network_pod_configures_its_nic_in_place_with_low_metric_routing() {
    let n = std::process::id() % 200 + 21;
    let agent = Agent::sandboxed_with_network(&[]).await;
    let (nic, far) = (format!("gcsh{n}a"), format!("gcsh{n}b"));
    let mac = format!("02:00:00:01:{n:02x}:01");
    ip(&[
        "link", "add", &nic, "address", &mac, "type", "veth", "peer", "name", &far,
    ]);
    ip(&["link", "set", &nic, "netns", &agent.agent_pid().to_string()]);
    // The far end stays here; deleting it removes the pair.
    struct Veth(String);
    impl Drop for Veth {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _far = Veth(far);
    let ns = "1c0ffee0-0000-4000-8000-000000000001";
    call(
        &agent,
        "Add",
        json!({"NamespaceID": ns, "ID": "5e1f0000-0000-0000-0000-000000000001",
        "MacAddress": mac, "EnableLowMetric": true,
        "IPConfigs": [{"IPAddress": format!("10.88.{n}.2"), "PrefixLength": 24}],
        "Routes": [{"NextHop": format!("10.88.{n}.1"), "DestinationPrefix": "0.0.0.0/0"}]}),
    )
    .await
    .unwrap();
    let id = "hostnet-sandbox";
    common::add_rootfs(&agent.client, id, common::busybox_layer(&agent)).await;
    let mut spec = common::trace_spec(&["sleep", "1000"]);
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    spec["annotations"] = json!({"io.kubernetes.cri.container-type": "sandbox",
        "io.microsoft.virtualmachine.lcow.hostnetwork": "true"});
    spec["windows"] = json!({"network": {"networkNamespace": ns}});
    agent
        .client
        .create_container(id, &common::container_settings(id, spec))
        .await
        .unwrap();
    // Configured where the agent is: address, a source rule to table 101, the default route
    // there with the low metric 500.
    let addr = ip_in(&agent, &["-o", "addr", "show", "dev", &nic]);
    assert!(addr.contains(&format!("inet 10.88.{n}.2/24")), "{addr}");
    let rules = ip_in(&agent, &["rule"]);
    assert!(
        rules.contains(&format!("5:\tfrom 10.88.{n}.2 lookup 101")),
        "{rules}"
    );
    let table = ip_in(&agent, &["route", "show", "table", "101"]);
    assert!(
        table.contains(&format!("default via 10.88.{n}.1 dev {nic} "))
            && table.contains("metric 500"),
        "{table}"
    );
    // The container shares the agent's namespace: it sees the NIC.
    agent.client.start_container(id).await.unwrap();
    let init = agent
        .client
        .execute_process(
            id,
            &ProcessParameters::default(),
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap();
    let (out, code) = exec(&agent, id, &["ip", "-o", "link"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&nic), "{out}");
    agent.client.shutdown_forced(id).await.unwrap();
    agent
        .client
        .wait_for_process(id, init, INFINITE_WAIT)
        .await
        .unwrap();
    common::remove_rootfs(&agent.client, id).await;
    agent.client.delete_container_state(id).await.unwrap();
}
