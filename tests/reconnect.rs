//! Host disconnect and reconnect over the hybrid-vsock transport (`-vsock-uds`), and
//! notifications queued while no host is connected.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and benchmark code: a failed unwrap is a failed test"
)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gcs::bridge::{Bridge, ConnectionEnd};
use gcs::host::{BridgeClient, HybridVsock};
use gcs::protocol::messages::{ContainerNotification, NotificationType};
use gcs::protocol::{Hresult, NULL_CONTAINER_ID};

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn accept(host: &HybridVsock) -> BridgeClient {
    let stream = tokio::time::timeout(Duration::from_secs(10), host.accept_bridge())
        .await
        .expect("agent did not dial within 10 s")
        .unwrap();
    BridgeClient::new(stream)
}

#[tokio::test]
async fn agent_redials_until_a_listener_appears_and_renegotiates_after_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("vm.vsock");
    let log_path = dir.path().join("gcs.log");
    let _agent = Child(
        Command::new(common::GCS)
            .args(["-v4", "-loglevel", "debug", "-vsock-uds"])
            .arg(&prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // Nobody listens for a while: the agent keeps redialling.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let host = HybridVsock::new(&prefix);
    let listening = Instant::now();
    let client = accept(&host).await;
    // Redial period is 100 ms.
    assert!(
        listening.elapsed() < Duration::from_millis(1000),
        "{:?}",
        listening.elapsed()
    );
    client.negotiate().await.unwrap();
    client.dump_stacks().await.unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("cannot dial the bridge, retrying"), "{log}");

    // The host drops the connection; the agent comes back on a new one with version 0.
    drop(client);
    let client = accept(&host).await;
    let err = client.dump_stacks().await.unwrap_err();
    assert_eq!(err.hresult(), Some(Hresult::NOT_IMPL));
    client.negotiate().await.unwrap();
    assert!(client.dump_stacks().await.unwrap().contains("threads"));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("bridge connection lost, will reconnect"),
        "{log}"
    );

    // And a UVM shutdown ends it for good.
    client.shutdown_forced(NULL_CONTAINER_ID).await.unwrap();
}

/// A new in-memory connection to `bridge`: the host's end, and the task serving the guest's.
fn connect(
    bridge: &Arc<Bridge>,
) -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<ConnectionEnd>,
) {
    let (host_side, guest_side) = tokio::io::duplex(64 * 1024);
    let bridge = Arc::clone(bridge);
    (
        host_side,
        tokio::spawn(async move { bridge.serve(guest_side).await }),
    )
}

#[tokio::test]
async fn notifications_queued_while_disconnected_are_sent_on_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (guest, bridge) = common::in_process_bridge(dir.path(), None);

    // First connection: a notification goes straight out.
    let (host_side, serving) = connect(&bridge);
    let client = BridgeClient::new(host_side);
    client.negotiate().await.unwrap();
    guest.notify(ContainerNotification::exited(
        "c0",
        NULL_CONTAINER_ID,
        NotificationType::ForcedExit,
    ));
    let n = client
        .next_notification(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (n.container_id.as_str(), n.notification_type),
        ("c0", NotificationType::ForcedExit)
    );
    drop(client);
    assert!(matches!(
        serving.await.unwrap(),
        ConnectionEnd::Closed | ConnectionEnd::Failed(_)
    ));

    // No host: notifications queue up, in order.
    for i in 1..=3 {
        guest.notify(ContainerNotification::exited(
            &format!("c{i}"),
            NULL_CONTAINER_ID,
            NotificationType::UnexpectedExit,
        ));
    }
    let (host_side, serving) = connect(&bridge);
    let client = BridgeClient::new(host_side);
    for i in 1..=3 {
        let n = client
            .next_notification(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(n.container_id, format!("c{i}"));
        assert_eq!(n.operation, "None");
    }
    assert!(client.try_notification().await.is_none());
    client.negotiate().await.unwrap();
    guest.request_shutdown();
    assert!(matches!(serving.await.unwrap(), ConnectionEnd::Shutdown));
}

/// A migrating host (spec §10.3): a request still running when the host drops the bridge is
/// answered on the next connection with its old id, and the host's waiting call completes.
#[tokio::test]
async fn responses_of_a_dropped_connection_follow_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (guest, bridge) = common::in_process_bridge(dir.path(), None);
    let (host_side, first) = connect(&bridge);
    let client = Arc::new(BridgeClient::new(host_side));
    client.negotiate().await.unwrap();
    // A request that takes seconds: a VPMem device that never appears (5 s).
    let slow = tokio::spawn({
        let client = Arc::clone(&client);
        async move {
            client
                .modify_settings(
                    NULL_CONTAINER_ID,
                    gcs::protocol::messages::ModifySettingRequest {
                        resource_type: "VPMemDevice".into(),
                        request_type: "Add".into(),
                        settings: Some(serde_json::json!({"DeviceNumber": 9, "MountPath": "/run/gcs-test-never"})),
                    },
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!slow.is_finished());
    // The host drops the transport and takes the guest's redial.
    let (host_side, second) = connect(&bridge);
    client.migrate(host_side).await.unwrap();
    assert!(matches!(
        first.await.unwrap(),
        ConnectionEnd::Closed | ConnectionEnd::Failed(_)
    ));
    let answered = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the old request was never answered")
        .unwrap();
    let e = answered.unwrap_err();
    assert!(e.to_string().contains("did not appear"), "{e}");
    assert!(client.failure().is_none(), "{:?}", client.failure());
    // The new connection serves on.
    assert!(!client.dump_stacks().await.unwrap().is_empty());
    guest.request_shutdown();
    assert!(matches!(second.await.unwrap(), ConnectionEnd::Shutdown));
}

/// Spec §10.3 against the real agent: a UVM process's WaitForProcess is outstanding when the
/// host drops the bridge; the host takes the agent's redial, renegotiates, and the response
/// (exit code 5) arrives with the old id.
#[tokio::test]
async fn a_wait_outstanding_across_a_bridge_drop_is_answered_on_the_redial() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("vm.vsock");
    let _agent = Child(
        Command::new(common::GCS)
            .args(["-v4", "-loglevel", "debug", "-vsock-uds"])
            .arg(&prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("gcs.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let host = HybridVsock::new(&prefix);
    let client = Arc::new(accept(&host).await);
    client.negotiate().await.unwrap();
    let params = gcs::protocol::messages::ProcessParameters {
        command_args: vec!["sh".into(), "-c".into(), "sleep 2; exit 5".into()],
        working_directory: "/".into(),
        environment: Some([("PATH".to_string(), "/bin:/usr/bin".to_string())].into()),
        ..Default::default()
    };
    let pid = client
        .execute_process(NULL_CONTAINER_ID, &params, Default::default())
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let client = Arc::clone(&client);
        async move {
            client
                .wait_for_process(NULL_CONTAINER_ID, pid, gcs::protocol::INFINITE_WAIT)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.detach().await;
    let stream = tokio::time::timeout(Duration::from_secs(10), host.accept_bridge())
        .await
        .expect("the agent did not redial")
        .unwrap();
    client.resume(stream).await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the outstanding wait was never answered")
        .unwrap()
        .unwrap();
    assert_eq!(code, 5);
    assert!(client.failure().is_none(), "{:?}", client.failure());
    client.shutdown_forced(NULL_CONTAINER_ID).await.unwrap();
}
