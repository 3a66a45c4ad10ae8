//! Security policy enforcement through the real agent (issue 16): the closed door of
//! `-initial-policy-stance deny`, `SecurityPolicy` installation, and Rego policies deciding
//! every enforcement point. Sandboxed (tests/sandbox.sh): root only.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::Agent;
use gcs::protocol::messages::{ModifySettingRequest, ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::NULL_CONTAINER_ID;
use serde_json::{json, Value};

fn modify(resource: &str, request: &str, settings: Value) -> ModifySettingRequest {
    ModifySettingRequest {
        resource_type: resource.into(),
        request_type: request.into(),
        settings: Some(settings),
    }
}

async fn modify_err(agent: &Agent, request: ModifySettingRequest) -> String {
    agent
        .client
        .modify_settings(NULL_CONTAINER_ID, request)
        .await
        .unwrap_err()
        .to_string()
}

/// A busybox container spec of the test image, standalone.
fn spec(args: &[&str]) -> Value {
    common::trace_spec(args)
}

#[tokio::test]
async fn closed_door_refuses_every_request_with_its_fixed_message_and_logs_nothing() {
    let agent = Agent::sandboxed(&["-initial-policy-stance", "deny"]).await;
    let layer = common::busybox_layer(&agent);

    let err = agent.client.dump_stacks().await.unwrap_err().to_string();
    assert!(
        err.contains("dump stacks denied due to policy: getting stack dumps is denied by policy"),
        "{err}"
    );
    let err = agent
        .client
        .get_properties("c1", &["ProcessList"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("getting container properties is denied by policy"),
        "{err}"
    );
    let params = ProcessParameters {
        command_args: vec!["/bin/true".into()],
        ..Default::default()
    };
    let err = agent
        .client
        .execute_process(
            NULL_CONTAINER_ID,
            &params,
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exec is denied due to policy: starting additional processes in uvm is denied by policy"),
        "{err}"
    );
    let err = modify_err(
        &agent,
        modify(
            "CombinedLayers",
            "Add",
            json!({"ContainerID": "c1", "ContainerRootPath": "/run/gcs/c/c1/rootfs",
                   "Layers": [{"Path": layer}]}),
        ),
    )
    .await;
    assert!(
        err.contains(
            "overlay creation denied by policy: creating an overlay fs is denied by policy"
        ),
        "{err}"
    );
    let err = modify_err(
        &agent,
        modify(
            "MappedVirtualDisk",
            "Remove",
            json!({"MountPath": "/run/mounts/scsi/m0", "ReadOnly": true}),
        ),
    )
    .await;
    assert!(
        err.contains("unmounting scsi device at /run/mounts/scsi/m0 denied by policy: unmounting is denied by policy"),
        "{err}"
    );
    // A Create reaches its decision with a bundle that exists, and leaves nothing behind.
    std::fs::create_dir_all(agent.root().join("run/gcs/c/c1/rootfs")).unwrap();
    let err = agent
        .client
        .create_container("c1", &common::container_settings("c1", spec(&["true"])))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "container creation denied due to policy: running commands is denied by policy"
        ),
        "{err}"
    );
    assert!(!agent.root().join("run/gcs/c/c1/config.json").exists());
    // The container id is free again: the same Create is refused by the policy, not as a
    // duplicate.
    let again = agent
        .client
        .create_container("c1", &common::container_settings("c1", spec(&["true"])))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        again.contains("running commands is denied by policy"),
        "{again}"
    );
    assert_eq!(agent.log(), "", "the closed door withholds the log stream");
}
