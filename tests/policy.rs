//! Security policy enforcement through the real agent (issue 16): the closed door of
//! `-initial-policy-stance deny`, `SecurityPolicy` installation, and Rego policies deciding
//! every enforcement point. Sandboxed (tests/sandbox.sh): root only.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::modify;

use common::policy::{
    allow_all_but, assert_refusal, decision_of, denied, failure, generated_policy, install,
    install_as, policy_file, verity_format,
};
use common::Agent;
use gcs::protocol::messages::{ModifySettingRequest, ProcessParameters, VsockStdioRelaySettings};
use gcs::protocol::NULL_CONTAINER_ID;
use serde_json::{json, Value};

async fn modify_err(agent: &Agent, request: ModifySettingRequest) -> String {
    agent
        .client
        .modify_settings(NULL_CONTAINER_ID, request)
        .await
        .unwrap_err()
        .to_string()
}

/// A sandboxed agent with `policy` installed.
async fn agent_with(policy: &str) -> Agent {
    let agent = Agent::sandboxed(&[]).await;
    install(&agent, policy).await.unwrap();
    agent
}

/// The error of a process in the UVM started with `params`.
async fn uvm_exec_err(agent: &Agent, params: &ProcessParameters) -> String {
    agent
        .client
        .execute_process(
            NULL_CONTAINER_ID,
            params,
            VsockStdioRelaySettings::default(),
        )
        .await
        .unwrap_err()
        .to_string()
}

/// The error of a ModifySettings of `resource` (`request_type`, `settings`) on the UVM.
async fn refused(agent: &Agent, resource: &str, request_type: &str, settings: Value) -> String {
    modify_err(agent, modify(resource, request_type, settings)).await
}

/// The real host's container spec (trace 09) for container `id`, running `args`.
fn spec_for(id: &str, args: &[&str]) -> Value {
    let mut spec = common::trace_spec(args);
    spec["root"]["path"] = json!(format!("/run/gcs/c/{id}/rootfs"));
    spec
}

fn spec(args: &[&str]) -> Value {
    spec_for("c1", args)
}

/// Container ids as confidential hosts send them (64 hex digits).
const C1: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const C2: &str = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2";

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
    let err = uvm_exec_err(&agent, &params).await;
    assert!(
        err.contains("exec is denied due to policy: starting additional processes in uvm is denied by policy"),
        "{err}"
    );
    let err = refused(
        &agent,
        "CombinedLayers",
        "Add",
        json!({"ContainerID": "c1", "ContainerRootPath": "/run/gcs/c/c1/rootfs",
                   "Layers": [{"Path": layer}]}),
    )
    .await;
    assert!(
        err.contains(
            "overlay creation denied by policy: creating an overlay fs is denied by policy"
        ),
        "{err}"
    );
    let err = refused(
        &agent,
        "MappedVirtualDisk",
        "Remove",
        json!({"MountPath": "/run/mounts/scsi/m0", "ReadOnly": true}),
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

#[tokio::test]
async fn an_empty_policy_opens_the_closed_door_once_and_logging_resumes() {
    let agent = Agent::sandboxed(&["-initial-policy-stance", "deny"]).await;
    assert!(agent.client.dump_stacks().await.is_err());
    assert_eq!(agent.log(), "");
    install(&agent, "").await.unwrap();
    assert!(agent
        .client
        .dump_stacks()
        .await
        .unwrap()
        .contains("threads"));
    assert!(
        agent.log().contains("security policy installed"),
        "{}",
        agent.log()
    );
    let err = install(&agent, "").await.unwrap_err();
    assert!(
        err.contains("security policy has already been set"),
        "{err}"
    );
}

#[tokio::test]
async fn policies_that_cannot_work_are_refused_and_change_nothing() {
    let agent = Agent::sandboxed(&[]).await;
    let err = install(&agent, "package policy\nallow := {")
        .await
        .unwrap_err();
    assert!(
        err.contains("error creating security policy enforcer: rego compilation failed"),
        "{err}"
    );
    let err = agent
        .client
        .modify_settings(
            NULL_CONTAINER_ID,
            modify(
                "SecurityPolicy",
                "Add",
                json!({"EncodedSecurityPolicy": "%%%"}),
            ),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed to decode base64 security policy"),
        "{err}"
    );
    let err = install_as(&agent, "open_door", "package policy")
        .await
        .unwrap_err();
    assert!(
        err.contains("Invalid policy for open-door enforcer"),
        "{err}"
    );
    let err = install_as(&agent, "opa", "").await.unwrap_err();
    assert!(err.contains("unknown enforcer: \"opa\""), "{err}");
    // None of those counted: a good policy is still accepted, then no other.
    install(&agent, &policy_file("deny_all.rego"))
        .await
        .unwrap();
    let err = install(&agent, &policy_file("allow_all.rego"))
        .await
        .unwrap_err();
    assert!(
        err.contains("security policy has already been set"),
        "{err}"
    );
}

#[tokio::test]
async fn an_allow_all_policy_runs_a_whole_container_lifecycle() {
    let agent = agent_with(&policy_file("allow_all.rego")).await;
    let layer = common::busybox_layer(&agent);
    common::create_container(
        &agent,
        C1,
        layer,
        spec_for(C1, &["sh", "-c", "echo init; read x"]),
    )
    .await
    .unwrap();
    let init = common::start_process(&agent, C1, None, false)
        .await
        .unwrap();
    let exec = common::start_process(
        &agent,
        C1,
        Some(
            json!({"args": ["/bin/sh", "-c", "echo exec $A"], "env": ["A=1"], "cwd": "/",
                    "user": {"uid": 0, "gid": 0},
                    "capabilities": {"bounding": [], "effective": [], "permitted": []}}),
        ),
        false,
    )
    .await
    .unwrap();
    let out = exec.finish(&agent, C1).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "exec 1\n"));
    let props = agent
        .client
        .get_properties(C1, &["ProcessList"])
        .await
        .unwrap();
    assert!(!props.process_list.is_empty());
    agent.client.shutdown_forced(C1).await.unwrap();
    let out = init.finish(&agent, C1).await;
    assert_eq!(out.stdout, "init\n");
    common::destroy_container(&agent, C1).await;
    assert!(
        !agent
            .root()
            .join(format!("run/gcs/c/{C1}/rootfs/bin"))
            .exists(),
        "the overlay is gone"
    );
}

#[tokio::test]
async fn each_refusal_carries_the_decision_with_the_originals_input_and_changes_nothing() {
    let agent = Agent::sandboxed(&[]).await;
    let policy = allow_all_but(&[
        (
            "create_container",
            r#"create_container := {"allowed": input.argList[0] != "forbidden", "env_list": null, "allow_stdio_access": true}"#,
        ),
        (
            "exec_in_container",
            r#"exec_in_container := {"allowed": false}"#,
        ),
        (
            "signal_container_process",
            r#"signal_container_process := {"allowed": input.signal == 9}"#,
        ),
        (
            "shutdown_container",
            r#"shutdown_container := {"allowed": false}"#,
        ),
    ]);
    install(&agent, &policy).await.unwrap();
    let layer = common::busybox_layer(&agent);

    // create_container: the whole input, as the original builds it.
    let err = common::create_container(&agent, C2, layer, spec_for(C2, &["forbidden"]))
        .await
        .unwrap_err();
    assert!(
        err.contains("container creation denied due to policy: policyDecision< "),
        "{err}"
    );
    let d = decision_of(&err);
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["reason"]["errors"], json!(["refused create_container"]));
    let input = &d["input"];
    assert_eq!(input["rule"], "create_container");
    assert_eq!(input["containerID"], C2);
    assert_eq!(input["argList"], json!(["forbidden"]));
    assert_eq!(
        input["envList"],
        json!(["PATH=<<redacted>>"]),
        "environment values never leave the guest"
    );
    assert_eq!(input["workingDir"], "/");
    assert_eq!(
        input["sandboxDir"],
        format!("/run/gcs/c/{C2}/sandboxMounts")
    );
    assert_eq!(input["hugePagesDir"], format!("/run/gcs/c/{C2}/hugepages"));
    assert_eq!(input["user"], json!({"id": "0", "name": "root"}));
    assert_eq!(input["groups"], json!([{"id": "0", "name": "root"}]));
    assert_eq!(input["umask"], "0022");
    assert_eq!(input["capabilities"], "[unprivileged]");
    assert_eq!(input["seccompProfileSHA256"], "");
    assert_eq!(input["privileged"], false);
    assert_eq!(input["isSandboxContainer"], false);
    assert_eq!(input["devices"], json!([]));
    let mounts = input["mounts"].as_array().unwrap();
    assert!(
        mounts.contains(
            &json!({"destination": "/proc", "source": "proc", "type": "proc",
                                 "options": ["nosuid", "noexec", "nodev"]})
        ),
        "{mounts:?}"
    );
    assert!(
        mounts.iter().any(|m| m["destination"] == "/etc/hosts"),
        "{mounts:?}"
    );
    assert!(!agent
        .root()
        .join(format!("run/gcs/c/{C2}/config.json"))
        .exists());

    // A container the policy allows; its exec, SIGTERM and shutdown are refused.
    common::create_container(
        &agent,
        C1,
        layer,
        spec_for(C1, &["sh", "-c", "echo up; read x"]),
    )
    .await
    .unwrap();
    let init = common::start_process(&agent, C1, None, false)
        .await
        .unwrap();
    let err = common::start_process(
        &agent,
        C1,
        Some(
            json!({"args": ["ls", "/"], "env": ["SECRET=hunter2"], "cwd": "/tmp",
                    "capabilities": {"bounding": ["CAP_KILL"], "effective": [], "permitted": []},
                    "noNewPrivileges": true}),
        ),
        false,
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.contains("exec in container denied due to policy: policyDecision< "),
        "{err}"
    );
    let d = decision_of(&err);
    assert!(!d.to_string().contains("hunter2"));
    assert_eq!(
        d["input"],
        json!({"rule": "exec_in_container", "containerID": C1, "argList": ["ls", "/"],
               "envList": ["SECRET=<<redacted>>"], "workingDir": "/tmp", "noNewPrivileges": true,
               "user": {"id": "0", "name": "root"}, "groups": [{"id": "0", "name": "root"}],
               "umask": "0022",
               "capabilities": {"bounding": ["CAP_KILL"], "effective": [], "inheritable": [],
                                "permitted": [], "ambient": []}})
    );
    let err = agent
        .client
        .signal_process(C1, init.pid, Some(15))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        decision_of(&err)["input"],
        json!({"rule": "signal_container_process", "containerID": C1, "signal": 15,
               "isInitProcess": true, "argList": ["sh", "-c", "echo up; read x"]})
    );
    let err = agent
        .client
        .shutdown_graceful(C1)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        decision_of(&err)["input"],
        json!({"rule": "shutdown_container", "containerID": C1})
    );
    // Still running after every refusal: SIGKILL is allowed and ends it.
    agent
        .client
        .signal_process(C1, init.pid, Some(9))
        .await
        .unwrap();
    let out = init.finish(&agent, C1).await;
    assert_eq!((out.code, out.stdout.as_str()), (137, "up\n"));
    common::destroy_container(&agent, C1).await;
}

#[tokio::test]
async fn decisions_filter_the_environment_and_refused_stdio_goes_nowhere() {
    let agent = Agent::sandboxed(&[]).await;
    let policy = allow_all_but(&[(
        "create_container",
        r#"create_container := {"allowed": true, "env_list": ["KEEP=1", "PATH=/bin"], "allow_stdio_access": false}"#,
    )]);
    install(&agent, &policy).await.unwrap();
    let layer = common::busybox_layer(&agent);
    let mut s = spec_for(
        C1,
        &[
            "sh",
            "-c",
            "env > /env.txt; echo to-stdout; read x; echo read-done > /stdin.txt",
        ],
    );
    s["process"]["env"] = json!(["PATH=/bin", "KEEP=1", "DROP=2"]);
    common::create_container(&agent, C1, layer, s)
        .await
        .unwrap();
    let host = agent.host();
    let (pid, listener) = common::start_init_stdout_only(&agent.client, &host, C1, 9100).await;
    let code = agent
        .client
        .wait_for_process(C1, pid, 20_000)
        .await
        .unwrap();
    assert_eq!(code, 0, "stdin ended at once, output was discarded");
    let accepted =
        tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "the host's stdout port was dialled");
    let rootfs = agent.root().join(format!("run/gcs/c/{C1}/rootfs"));
    let env = std::fs::read_to_string(rootfs.join("env.txt")).unwrap();
    assert!(env.contains("KEEP=1") && env.contains("PATH=/bin"), "{env}");
    assert!(!env.contains("DROP=2"), "{env}");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("stdin.txt")).unwrap(),
        "read-done\n"
    );
    // A terminal cannot be given to a container without stdio.
    let err = common::start_process(
        &agent,
        C1,
        Some(json!({"args": ["sh"], "cwd": "/", "terminal": true,
                    "capabilities": {"bounding": [], "effective": [], "permitted": []}})),
        true,
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.contains("exec in container of process that requires terminal access denied due to policy not allowing stdio access"),
        "{err}"
    );
    common::destroy_container(&agent, C1).await;
}

#[tokio::test]
async fn a_policy_refusing_runtime_logging_ends_the_log_stream() {
    let agent = Agent::sandboxed(&[]).await;
    let policy = allow_all_but(&[(
        "runtime_logging",
        r#"runtime_logging := {"allowed": false}"#,
    )]);
    install(&agent, &policy).await.unwrap();
    let before = agent.log();
    assert!(before.contains("the log stream ends here"), "{before}");
    let layer = common::busybox_layer(&agent);
    common::create_container(&agent, C1, layer, spec_for(C1, &["true"]))
        .await
        .unwrap();
    let init = common::start_process(&agent, C1, None, false)
        .await
        .unwrap();
    init.finish(&agent, C1).await;
    common::destroy_container(&agent, C1).await;
    assert_eq!(agent.log(), before, "nothing about the workload was logged");
}

#[tokio::test]
async fn a_generated_policy_allows_only_its_verity_layers_and_a_failed_mount_leaves_no_trace() {
    // The whole confidential flow, with the layers verified through dm-verity, runs in QEMU
    // (tests/qemu.rs); this machine's kernel has no device-mapper, so here the mount of an
    // allowed layer fails after the decision, which shows the transaction's rollback.
    let work = tempfile::tempdir().unwrap();
    let tree = gcs::host::layers::busybox_tree(work.path()).unwrap();
    let good = work.path().join("good.ext4");
    gcs::host::layers::ext4_image(&good, Some(&tree), "16M").unwrap();
    let root_hash = verity_format(&good);
    // Another image the policy does not name: the same tree and one more file.
    std::fs::write(tree.join("extra"), "not in the policy\n").unwrap();
    let other = work.path().join("other.ext4");
    gcs::host::layers::ext4_image(&other, Some(&tree), "16M").unwrap();
    verity_format(&other);
    let (l0, l1) = (
        common::Loop::attach(&good, true),
        common::Loop::attach(&other, true),
    );
    let agent =
        Agent::sandboxed_with_devices(&[], &format!("{} {}", l0.node("pmem0"), l1.node("pmem1")))
            .await;
    let container = json!({
        "id": "busybox", "name": "busybox", "layers": [root_hash],
        "command": ["sh"], "env_rules": [], "working_dir": "/", "mounts": [],
        "exec_processes": [], "signals": [],
        "user": {"user_idname": {"pattern": "", "strategy": "any"},
                 "group_idnames": [{"pattern": "", "strategy": "any"}], "umask": "0022"},
        "capabilities": null, "seccomp_profile_sha256": "", "allow_elevated": false,
        "allow_stdio_access": true, "no_new_privileges": false,
    });
    let policy = generated_policy(&[container], &[("allow_unencrypted_scratch", true)]);
    install(&agent, &policy).await.unwrap();

    // A layer the policy does not name is refused by its root hash, read from the device.
    let err = refused(
        &agent,
        "VPMemDevice",
        "Add",
        json!({"DeviceNumber": 1, "MountPath": "/run/layers/p1"}),
    )
    .await;
    assert!(
        err.contains("mounting pmem device 1 onto /run/layers/p1 denied by policy"),
        "{err}"
    );
    let d = decision_of(&err);
    assert_eq!(
        d["reason"]["errors"],
        json!(["deviceHash not found"]),
        "{d}"
    );
    assert_ne!(d["input"]["deviceHash"], json!(root_hash));
    assert_eq!(d["input"]["mountPathRegex"], "/run/layers/p[0-9]+");
    // The policy's layer is allowed; mounting it through dm-verity then fails here, and the
    // policy forgets it: the same Add fails the same way, not as "already mounted".
    let add = || modify("VPMemDevice", "Add", json!({"MountPath": "/run/layers/p0"}));
    let first = modify_err(&agent, add()).await;
    assert!(first.contains("device-mapper"), "{first}");
    assert!(!first.contains("policyDecision"), "{first}");
    let again = modify_err(&agent, add()).await;
    assert_eq!(again, first);
    assert!(!agent.root().join("run/layers/p0/bin").exists());
    // A rootfs that is not the id's own overlay is refused before any decision.
    let err = refused(
        &agent,
        "CombinedLayers",
        "Add",
        json!({"ContainerID": "c1", "ContainerRootPath": "/run/gcs/c/c1/rootfs",
                   "Layers": [{"Path": "/run/layers/p0"}]}),
    )
    .await;
    assert!(
        err.contains("must be 64 hex digits in a confidential guest"),
        "{err}"
    );
}

/// The agent's mount table, as it sees it.
fn mountinfo(agent: &Agent) -> String {
    std::fs::read_to_string(format!("/proc/{}/mountinfo", agent.agent_pid())).unwrap()
}

/// CombinedLayers Add of `layer` as container `id`'s rootfs, with its scratch in the bundle:
/// its result.
async fn add_overlay(agent: &Agent, id: &str, layer: &str) -> Result<(), String> {
    agent
        .client
        .modify_settings(
            NULL_CONTAINER_ID,
            modify(
                "CombinedLayers",
                "Add",
                json!({"ContainerID": id, "ContainerRootPath": format!("/run/gcs/c/{id}/rootfs"),
                       "Layers": [{"Path": layer}],
                       "ScratchPath": format!("/run/gcs/c/{id}/scratch/{id}")}),
            ),
        )
        .await
        .map_err(|e| e.to_string())
}

/// CombinedLayers Remove of container `id`'s rootfs: its result.
async fn remove_overlay(agent: &Agent, id: &str) -> Result<(), String> {
    agent
        .client
        .modify_settings(
            NULL_CONTAINER_ID,
            modify(
                "CombinedLayers",
                "Remove",
                json!({"ContainerRootPath": format!("/run/gcs/c/{id}/rootfs")}),
            ),
        )
        .await
        .map_err(|e| e.to_string())
}

/// The storage error of an overlay Remove whose unmount found the overlay busy.
fn busy_overlay(id: &str) -> String {
    failure(&format!(
        "storage: unmount \"/run/gcs/c/{id}/rootfs\": Device or resource busy (os error 16)"
    ))
}

#[tokio::test]
async fn a_failed_allowed_unmount_disables_storage_and_containers_in_a_confidential_uvm() {
    let agent = agent_with(&policy_file("allow_all.rego")).await;
    let layer = common::busybox_layer(&agent);

    // A path that does not exist is refused once the policy allowed its Remove, and latches
    // nothing.
    let err = refused(
        &agent,
        "VPMemDevice",
        "Remove",
        json!({"DeviceNumber": 7, "MountPath": "/run/layers/p7"}),
    )
    .await;
    assert_eq!(
        err,
        failure("unmounting pmem device at /run/layers/p7 failed: directory does not exist")
    );
    let err = refused(
        &agent,
        "MappedVirtualDisk",
        "Remove",
        json!({"MountPath": "/run/mounts/scsi/m9", "Lun": 9, "ReadOnly": true}),
    )
    .await;
    assert_eq!(
        err,
        failure("unmounting scsi device at /run/mounts/scsi/m9 failed: directory does not exist")
    );

    // An allowed overlay Remove whose unmount really fails: a file inside stays open.
    add_overlay(&agent, C1, layer).await.unwrap();
    let rootfs = agent.root().join(format!("run/gcs/c/{C1}/rootfs"));
    let busy = std::fs::File::open(rootfs.join("bin/busybox")).unwrap();
    assert_eq!(
        remove_overlay(&agent, C1).await.unwrap_err(),
        busy_overlay(C1)
    );
    drop(busy);
    assert!(mountinfo(&agent).contains(&format!("/run/gcs/c/{C1}/rootfs ")));

    let latched = failure(&format!(
        "mount, unmount, container creation and deletion have been disabled in this UVM due to a previous error: unmounting overlay at /run/gcs/c/{C1}/rootfs failed: unmount \"/run/gcs/c/{C1}/rootfs\": Device or resource busy (os error 16)"
    ));
    // Every later mount, unmount, Create and DeleteContainerState is refused with the first
    // cause, before anything else is looked at; nothing is mounted or created.
    let err = refused(
        &agent,
        "MappedDirectory",
        "Add",
        json!({"MountPath": format!("/run/gcs/c/{C2}/mounts/m0"), "Port": 564, "ShareName": "1"}),
    )
    .await;
    assert_eq!(err, latched);
    assert_eq!(add_overlay(&agent, C2, layer).await.unwrap_err(), latched);
    assert!(!agent.root().join(format!("run/gcs/c/{C2}/rootfs")).exists());
    let err = refused(
        &agent,
        "VPMemDevice",
        "Add",
        json!({"DeviceNumber": 0, "MountPath": "/run/layers/p1"}),
    )
    .await;
    assert_eq!(err, latched);
    assert_eq!(
        remove_overlay(&agent, C1).await.unwrap_err(),
        latched,
        "not even the retry that would now work"
    );
    let err = agent
        .client
        .create_container(C1, &common::container_settings(C1, spec_for(C1, &["true"])))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, latched);
    assert!(!agent
        .root()
        .join(format!("run/gcs/c/{C1}/config.json"))
        .exists());
    let err = agent
        .client
        .delete_container_state(C1)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, latched, "refused before the container is looked up");
    // The agent keeps serving everything else.
    assert!(agent
        .client
        .dump_stacks()
        .await
        .unwrap()
        .contains("threads"));
    assert!(
        agent
            .log()
            .contains("the UVM is inconsistent: mounts, unmounts, container creation and deletion are refused from now on"),
        "{}",
        agent.log()
    );
}

#[tokio::test]
async fn without_a_policy_a_failed_unmount_latches_nothing() {
    let agent = Agent::sandboxed(&[]).await;
    let layer = common::busybox_layer(&agent);
    add_overlay(&agent, C1, layer).await.unwrap();
    let rootfs = agent.root().join(format!("run/gcs/c/{C1}/rootfs"));
    let busy = std::fs::File::open(rootfs.join("bin/busybox")).unwrap();
    assert_eq!(
        remove_overlay(&agent, C1).await.unwrap_err(),
        busy_overlay(C1)
    );
    drop(busy);
    // Without a policy, a path that does not exist is the storage's own refusal.
    let err = refused(
        &agent,
        "VPMemDevice",
        "Remove",
        json!({"DeviceNumber": 7, "MountPath": "/run/layers/p7"}),
    )
    .await;
    assert_eq!(
        err,
        failure("storage: no VPMemDevice was added at \"/run/layers/p7\"")
    );
    add_overlay(&agent, C2, layer).await.unwrap();
    remove_overlay(&agent, C2).await.unwrap();
    remove_overlay(&agent, C1).await.unwrap();
    assert!(!mountinfo(&agent).contains("/run/gcs/c/"));
}

#[tokio::test]
async fn a_confidential_guest_takes_only_numeric_plan9_share_names_and_never_dials_for_others() {
    let agent = agent_with(&policy_file("allow_all.rego")).await;
    let host = agent.host();
    let listener = host.listen(9564).unwrap();
    let target = format!("/run/gcs/c/{C1}/mounts/m0");
    for (name, shown) in [("share", "\"share\""), ("1 ", "\"1 \""), ("", "\"\"")] {
        let err = refused(
            &agent,
            "MappedDirectory",
            "Add",
            json!({"MountPath": target, "Port": 9564, "ShareName": name}),
        )
        .await;
        assert_eq!(
            err,
            failure(&format!(
                "invalid plan9 share name {shown}: must match regex \"^[0-9]+$\""
            ))
        );
    }
    let dialled =
        tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept()).await;
    assert!(dialled.is_err(), "the host's Plan9 port was dialled");
    assert!(!agent.root().join(&target[1..]).exists());
    assert!(!mountinfo(&agent).contains(&target));

    // The open door does not check the name: the same request goes on to dial the host.
    let open = Agent::sandboxed(&[]).await;
    let err = modify_err(
        &open,
        modify(
            "MappedDirectory",
            "Add",
            json!({"MountPath": target, "Port": 9565, "ShareName": "share"}),
        ),
    )
    .await;
    assert!(err.contains("dial the Plan9 server on port 9565"), "{err}");
}

/// The names in a directory of the agent's, sorted (empty when it does not exist).
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Create settings for `id` with `spec`, as a CRI pod sandbox in network namespace
/// `namespace`, skipping pod networking when `skip`.
fn pod_spec(id: &str, args: &[&str], namespace: &str, skip: bool) -> Value {
    let mut s = spec_for(id, args);
    s["annotations"] = json!({
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": id,
    });
    if skip {
        s["annotations"]["io.microsoft.cri.skip-pod-networking"] = json!("true");
    }
    s["windows"] = json!({"network": {"networkNamespace": namespace}});
    s
}

#[tokio::test]
async fn a_refused_create_leaves_nothing_behind_and_its_id_can_be_created_again() {
    let agent = Agent::sandboxed(&[]).await;
    let policy = allow_all_but(&[(
        "create_container",
        r#"create_container := {"allowed": input.argList[0] != "forbidden", "env_list": null, "allow_stdio_access": true}"#,
    )]);
    install(&agent, &policy).await.unwrap();
    let layer = common::busybox_layer(&agent);
    // The whole input of a create decision is checked elsewhere; here its outline.
    let assert_refused = |err: &str, id: &str| {
        assert!(
            err.starts_with(
                "guest RPC failure: container creation denied due to policy: policyDecision< "
            ),
            "{err}"
        );
        let d = decision_of(err);
        assert_eq!(
            (
                &d["decision"],
                &d["input"]["containerID"],
                &d["input"]["argList"]
            ),
            (&json!("deny"), &json!(id), &json!(["forbidden"]))
        );
        assert_eq!(
            d["reason"],
            json!({"errors": ["refused create_container"], "error_objects": null})
        );
    };
    for id in [C1, C2] {
        common::add_rootfs(&agent.client, id, layer).await;
    }
    let bundle = |id: &str| agent.root().join(format!("run/gcs/c/{id}"));
    let before = listing(&bundle(C1));
    assert_eq!(before, ["rootfs", "scratch"]);

    // A standalone container: its network files and namespace record are made before the
    // decision; none of them stays.
    let mut alone = spec_for(C1, &["forbidden"]);
    alone["windows"] = json!({"network": {"networkNamespace": "ns-alone"}});
    let err = agent
        .client
        .create_container(C1, &common::container_settings(C1, alone))
        .await
        .unwrap_err()
        .to_string();
    assert_refused(&err, C1);
    assert_eq!(listing(&bundle(C1)), before);

    // A pod sandbox that skips pod networking: its shared directories are mounted, its log
    // directory, network files and namespace record made, all before the decision.
    let err = agent
        .client
        .create_container(
            C2,
            &common::container_settings(C2, pod_spec(C2, &["forbidden"], "ns-pod", true)),
        )
        .await
        .unwrap_err()
        .to_string();
    assert_refused(&err, C2);
    assert_eq!(listing(&bundle(C2)), before);
    let mounts = mountinfo(&agent);
    for dir in ["sandboxMounts", "sandboxTmpfsMounts", "hugepages"] {
        assert!(!mounts.contains(dir), "{dir} is still mounted: {mounts}");
    }
    // Neither namespace record stayed: a pod that needs one is told it does not exist.
    for namespace in ["ns-pod", "ns-alone"] {
        let err = agent
            .client
            .create_container(
                C2,
                &common::container_settings(C2, pod_spec(C2, &["true"], namespace, false)),
            )
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "guest RPC failure: HRESULT 0x80070490: network namespace \"{namespace}\" not found (0x80070490)"
            )
        );
        assert_eq!(listing(&bundle(C2)), before);
    }

    // The same ids, allowed this time.
    agent
        .client
        .create_container(C1, &common::container_settings(C1, spec_for(C1, &["true"])))
        .await
        .unwrap();
    agent
        .client
        .create_container(
            C2,
            &common::container_settings(C2, pod_spec(C2, &["true"], "ns-pod", true)),
        )
        .await
        .unwrap();

    // A Create naming a live pod's bundle as its own is refused before it touches anything:
    // the pod keeps its shared mounts, its network files and its config.json.
    const C3: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
    common::add_rootfs(&agent.client, C3, layer).await;
    let pod_files = |name: &str| std::fs::read(bundle(C2).join(name)).unwrap();
    let (config, hosts) = (pod_files("config.json"), pod_files("hosts"));
    let mut stolen = common::container_settings(C3, pod_spec(C3, &["true"], "ns-other", true));
    stolen.oci_bundle_path = format!("/run/gcs/c/{C2}");
    let err = agent
        .client
        .create_container(C3, &stolen)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "OciBundlePath /run/gcs/c/{C2} is the bundle of container {C2}"
        )),
        "{err}"
    );
    let mounts = mountinfo(&agent);
    for dir in ["sandboxMounts", "sandboxTmpfsMounts", "hugepages"] {
        assert!(
            mounts.contains(&format!("{C2}/{dir}")),
            "the pod's {dir} was unmounted: {mounts}"
        );
    }
    assert_eq!(
        (pod_files("config.json"), pod_files("hosts")),
        (config, hosts)
    );
    common::remove_rootfs(&agent.client, C3).await;

    for id in [C1, C2] {
        let init = common::start_process(&agent, id, None, false)
            .await
            .unwrap();
        assert_eq!(init.finish(&agent, id).await.code, 0);
        common::destroy_container(&agent, id).await;
    }
}

/// Container `id`'s spec asking for the host's network (the hostnetwork annotation), its init
/// printing the network namespace it runs in.
fn host_network_spec(id: &str) -> Value {
    let mut s = spec_for(id, &["readlink", "/proc/self/ns/net"]);
    s["annotations"] = json!({"io.microsoft.virtualmachine.lcow.hostnetwork": "true"});
    s
}

#[tokio::test]
async fn host_network_is_asked_for_a_host_network_container_and_allowed_shares_the_uvms() {
    let agent = agent_with(&policy_file("allow_all.rego")).await;
    let layer = common::busybox_layer(&agent);
    common::create_container(&agent, C1, layer, host_network_spec(C1))
        .await
        .unwrap();
    let init = common::start_process(&agent, C1, None, false)
        .await
        .unwrap();
    let out = init.finish(&agent, C1).await;
    let uvm = std::fs::read_link(format!("/proc/{}/ns/net", agent.agent_pid())).unwrap();
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, uvm.to_str().unwrap()),
        "the container runs in the UVM's own network namespace"
    );
    common::destroy_container(&agent, C1).await;

    // Without the annotation, the same container gets a namespace of its own.
    common::create_container(
        &agent,
        C1,
        layer,
        spec_for(C1, &["readlink", "/proc/self/ns/net"]),
    )
    .await
    .unwrap();
    let init = common::start_process(&agent, C1, None, false)
        .await
        .unwrap();
    let out = init.finish(&agent, C1).await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("net:["), "{}", out.stdout);
    assert_ne!(out.stdout.trim(), uvm.to_str().unwrap());
    common::destroy_container(&agent, C1).await;
}

#[tokio::test]
async fn a_refused_host_network_is_the_bare_decision_and_the_create_leaves_nothing() {
    let agent = Agent::sandboxed(&[]).await;
    let policy = allow_all_but(&[("host_network", r#"host_network := {"allowed": false}"#)]);
    install(&agent, &policy).await.unwrap();
    let layer = common::busybox_layer(&agent);
    common::add_rootfs(&agent.client, C1, layer).await;
    let bundle = agent.root().join(format!("run/gcs/c/{C1}"));
    let err = agent
        .client
        .create_container(C1, &common::container_settings(C1, host_network_spec(C1)))
        .await
        .unwrap_err()
        .to_string();
    // SP §4.16: no words around the enforcer's text.
    assert_refusal(
        &err,
        "",
        &denied("host_network", json!({}), &["refused host_network"]),
    );
    assert_eq!(listing(&bundle), ["rootfs", "scratch"]);
    // Not asked for a container that does not ask for the host's network.
    agent
        .client
        .create_container(C1, &common::container_settings(C1, spec_for(C1, &["true"])))
        .await
        .unwrap();
    agent.client.start_container(C1).await.unwrap();
    let init = common::start_process(&agent, C1, None, false)
        .await
        .unwrap();
    assert_eq!(init.finish(&agent, C1).await.code, 0);
    common::destroy_container(&agent, C1).await;
}

#[tokio::test]
async fn a_generated_policy_refuses_unencrypted_scratch_and_nothing_is_mounted() {
    let agent = Agent::sandboxed(&[]).await;
    let container = json!({
        "id": "busybox", "name": "busybox", "layers": ["00".repeat(32)],
        "command": ["sh"], "env_rules": [], "working_dir": "/", "mounts": [],
        "exec_processes": [], "signals": [],
        "user": {"user_idname": {"pattern": "", "strategy": "any"},
                 "group_idnames": [{"pattern": "", "strategy": "any"}], "umask": "0022"},
        "capabilities": null, "seccomp_profile_sha256": "", "allow_elevated": false,
        "allow_stdio_access": true, "no_new_privileges": false,
    });
    let policy = generated_policy(&[container], &[("allow_unencrypted_scratch", false)]);
    install(&agent, &policy).await.unwrap();
    let layer = common::busybox_layer(&agent);
    let scratch = format!("/run/gcs/c/{C1}/scratch/{C1}");
    let err = refused(
        &agent,
        "CombinedLayers",
        "Add",
        json!({"ContainerID": C1, "ContainerRootPath": format!("/run/gcs/c/{C1}/rootfs"),
                   "Layers": [{"Path": layer}], "ScratchPath": scratch}),
    )
    .await;
    assert_refusal(
        &err,
        "scratch mounting denied by policy: ",
        &denied(
            "scratch_mount",
            json!({"target": scratch, "encrypted": false}),
            &["unencrypted scratch not allowed"],
        ),
    );
    assert!(!agent.root().join(format!("run/gcs/c/{C1}")).exists());
    assert!(!mountinfo(&agent).contains("/run/gcs/c/"));
}

#[tokio::test]
async fn refused_unmounts_leave_the_layer_and_the_overlay_mounted_and_a_later_allowed_one_works() {
    // The layer is a real ext4 mount of a loop device, made before the policy arrives: under a
    // policy a layer is mounted through dm-verity, which this machine's kernel lacks
    // (tests/qemu.rs covers it).
    let work = tempfile::tempdir().unwrap();
    let tree = gcs::host::layers::busybox_tree(work.path()).unwrap();
    let image = work.path().join("layer.ext4");
    gcs::host::layers::ext4_image(&image, Some(&tree), "16M").unwrap();
    let l0 = common::Loop::attach(&image, true);
    let agent = Agent::sandboxed_with_devices(&[], &l0.node("pmem0")).await;
    let layer = "/run/layers/p0";
    let pmem = || modify("VPMemDevice", "Remove", json!({"MountPath": layer}));
    agent
        .client
        .modify_settings(
            NULL_CONTAINER_ID,
            modify("VPMemDevice", "Add", json!({"MountPath": layer})),
        )
        .await
        .unwrap();
    // Unmounts are refused until a decision opens the gate, kept in the policy's metadata.
    let policy = allow_all_but(&[
        (
            "gate_open",
            "default gate_open := false\ngate_open if data.metadata.gate.open",
        ),
        (
            "unmount_device",
            r#"unmount_device := {"allowed": gate_open}"#,
        ),
        (
            "unmount_overlay",
            r#"unmount_overlay := {"allowed": gate_open}"#,
        ),
        (
            "dump_stacks",
            r#"dump_stacks := {"allowed": true, "metadata": [{"name": "gate", "action": "update", "key": "open", "value": true}]}"#,
        ),
    ]);
    install(&agent, &policy).await.unwrap();
    add_overlay(&agent, C1, layer).await.unwrap();
    let rootfs = format!("/run/gcs/c/{C1}/rootfs");
    let mounted = |agent: &Agent, path: &str| {
        mountinfo(agent)
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(path))
    };
    assert!(mounted(&agent, layer) && mounted(&agent, &rootfs));

    let err = remove_overlay(&agent, C1).await.unwrap_err();
    assert_refusal(
        &err,
        "overlay removal denied by policy: ",
        &denied(
            "unmount_overlay",
            json!({"unmountTarget": rootfs}),
            &["refused unmount_overlay"],
        ),
    );
    let err = modify_err(&agent, pmem()).await;
    assert_refusal(
        &err,
        &format!("unmounting pmem device from {layer} denied by policy: "),
        &denied(
            "unmount_device",
            json!({"unmountTarget": layer}),
            &["refused unmount_device"],
        ),
    );
    assert!(mounted(&agent, layer) && mounted(&agent, &rootfs));
    assert!(agent
        .root()
        .join(format!("run/gcs/c/{C1}/rootfs/bin/busybox"))
        .exists());

    // The gate opens; the same Removes now work, the overlay first.
    agent.client.dump_stacks().await.unwrap();
    remove_overlay(&agent, C1).await.unwrap();
    assert!(!mounted(&agent, &rootfs));
    agent
        .client
        .modify_settings(NULL_CONTAINER_ID, pmem())
        .await
        .unwrap();
    assert!(!mounted(&agent, layer));
    assert!(!agent.root().join("run/layers/p0").exists());
}

#[tokio::test]
async fn a_deny_all_policy_refuses_every_request_with_its_reason_and_nothing_happens() {
    let agent = Agent::sandboxed(&[]).await;
    let layer = common::busybox_layer(&agent);
    // The rootfs is made before the policy arrives, so that Create reaches its decision.
    common::add_rootfs(&agent.client, C1, layer).await;
    install(&agent, &policy_file("deny_all.rego"))
        .await
        .unwrap();
    let reason = ["denied by the deny-all policy"];

    // Mounts.
    let share = format!("/run/gcs/c/{C1}/mounts/m0");
    let err = refused(
        &agent,
        "MappedDirectory",
        "Add",
        json!({"MountPath": share, "Port": 564, "ShareName": "1"}),
    )
    .await;
    assert_refusal(
        &err,
        &format!("mounting plan9 device at {share} denied by policy: "),
        &denied(
            "plan9_mount",
            json!({"rootPrefix": "/run/gcs/c", "mountPathPrefix": "/mounts/m[0-9]+",
                   "target": share}),
            &reason,
        ),
    );
    let err = add_overlay(&agent, C2, layer).await.unwrap_err();
    assert_refusal(
        &err,
        "scratch mounting denied by policy: ",
        &denied(
            "scratch_mount",
            json!({"target": format!("/run/gcs/c/{C2}/scratch/{C2}"), "encrypted": false}),
            &reason,
        ),
    );
    let err = refused(
        &agent,
        "CombinedLayers",
        "Add",
        json!({"ContainerID": C2, "ContainerRootPath": format!("/run/gcs/c/{C2}/rootfs"),
                   "Layers": [{"Path": layer}, {"Path": layer}]}),
    )
    .await;
    assert_refusal(
        &err,
        "overlay creation denied by policy: ",
        &denied(
            "mount_overlay",
            json!({"containerID": C2, "layerPaths": [layer, layer],
                   "target": format!("/run/gcs/c/{C2}/rootfs")}),
            &reason,
        ),
    );
    assert!(!agent.root().join(&share[1..]).exists());
    assert!(!agent.root().join(format!("run/gcs/c/{C2}")).exists());

    // A Create.
    let before = listing(&agent.root().join(format!("run/gcs/c/{C1}")));
    let err = agent
        .client
        .create_container(C1, &common::container_settings(C1, spec_for(C1, &["true"])))
        .await
        .unwrap_err()
        .to_string();
    let d = decision_of(&err);
    let mut expected = denied("create_container", d["input"].clone(), &reason);
    expected["input"]["containerID"] = json!(C1);
    assert_refusal(&err, "container creation denied due to policy: ", &expected);
    assert_eq!(d["input"]["argList"], json!(["true"]));
    assert_eq!(
        listing(&agent.root().join(format!("run/gcs/c/{C1}"))),
        before
    );
    let err = agent
        .client
        .delete_container_state(C1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("container \"{C1}\" does not exist")),
        "{err}"
    );

    // A process in the UVM.
    let params = ProcessParameters {
        command_args: vec!["/bin/sh".into(), "-c".into(), "touch /run/ran".into()],
        working_directory: "/".into(),
        ..Default::default()
    };
    let err = uvm_exec_err(&agent, &params).await;
    assert_refusal(
        &err,
        "exec is denied due to policy: ",
        &denied(
            "exec_external",
            json!({"argList": ["/bin/sh", "-c", "touch /run/ran"], "envList": [],
                   "workingDir": "/"}),
            &reason,
        ),
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!agent.root().join("run/ran").exists());

    // Properties and stacks.
    let err = agent
        .client
        .get_properties(C1, &["ProcessList"])
        .await
        .unwrap_err()
        .to_string();
    assert_refusal(
        &err,
        "get properties denied due to policy: ",
        &denied("get_properties", json!({}), &reason),
    );
    let err = agent.client.dump_stacks().await.unwrap_err().to_string();
    assert_refusal(
        &err,
        "dump stacks denied due to policy: ",
        &denied("dump_stacks", json!({}), &reason),
    );
}
