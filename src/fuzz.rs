//! Side-effect-free entry points over everything the bridge does with a host's bytes before it
//! acts: the frame reader, every request decoder, and the handlers' input checks — for the fuzz
//! harnesses (`tests/fuzz.rs`, `make fuzz`) and their saved regressions (issue 15). Nothing here
//! mounts, execs, dials or writes; the only file access is `stat` of device paths named in a
//! spec (as `linux.devices` is rebuilt) and the reads of a container's `/etc/passwd`, which
//! here always point at nothing.
//!
//! Each function returns what the agent would decide (`Ok` or the error text it would send); a
//! panic is a bug. Decoded requests are also re-encoded and decoded again: a value that does not
//! survive its own round trip panics too (the agent would answer with something other than what
//! it was asked).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bridge::handlers;
use crate::protocol::json::{from_embedded, to_go_json};
use crate::protocol::messages::{
    CreateRequest, ExecuteProcessRequest, GetPropertiesRequest, ModifySettingsRequest,
    ProcessParameters, PropertyQuery, RequestBase, ResizeConsoleRequest, SignalProcessRequest,
    WaitForProcessRequest,
};
use crate::protocol::{MessageHeader, MessageType};

/// Splits `stream` into frames with the bridge's own reader; each frame's header and its payload
/// length, or why it has none. Reading stops at the end of the stream or at a read error.
pub fn frames(stream: &[u8]) -> Vec<(MessageHeader, Result<usize, String>)> {
    use futures_util::FutureExt as _;
    let large = std::sync::Arc::new(tokio::sync::Semaphore::new(
        crate::bridge::LARGE_PAYLOAD_BYTES,
    ));
    let mut reader = stream;
    let mut out = Vec::new();
    // Reading from a slice never waits, and each frame's budget share is back before the next.
    while let Some(Ok(Some((header, payload)))) =
        crate::bridge::read_frame_len(&mut reader, &large).now_or_never()
    {
        out.push((header, payload.map_err(|e| e.to_string())));
    }
    out
}

fn decode<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    payload: &[u8],
    what: &'static str,
) -> Result<T, String> {
    let value: T = handlers::decode(payload, what).map_err(|e| e.to_string())?;
    round_trip(&value, what);
    Ok(value)
}

/// Panics unless `value` encodes (as the agent encodes) and decodes back to itself.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    value: &T,
    what: &str,
) {
    let bytes = match to_go_json(value) {
        Ok(b) => b,
        Err(e) => panic!("{what} decoded but does not encode: {e}: {value:?}"),
    };
    match serde_json::from_slice::<T>(&bytes) {
        Ok(again) if again == *value => {}
        Ok(again) => panic!(
            "{what} changes in a round trip:\n{value:?}\n{again:?}\nvia {}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => panic!(
            "{what} does not decode from its own encoding: {e}: {}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

fn embedded<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, String> {
    from_embedded(text).map_err(|e| format!("{what}: {e}"))
}

/// Everything the agent checks of a request of `message_type` before acting on it; `Ok` when it
/// would go on to act, or the error it would answer.
pub fn request(message_type: MessageType, payload: &[u8]) -> Result<(), String> {
    // What every request goes through: the pre-parse, the log's view, the scrubber.
    let base: RequestBase = serde_json::from_slice(payload).unwrap_or_default();
    let _ = crate::protocol::scrub::scrub_payload(payload);
    let header = MessageHeader::for_payload(message_type, 1, payload.len());
    let _ = crate::bridge::encode_response(
        header,
        &base.activity_id,
        Err(crate::bridge::BridgeError::InvalidRequest(
            String::from_utf8_lossy(payload).into_owned(),
        )),
    );
    match message_type {
        MessageType::NEGOTIATE_PROTOCOL => handlers::negotiate::handle(payload)
            .map(drop)
            .map_err(|e| e.to_string()),
        MessageType::CREATE => create(payload),
        MessageType::EXECUTE_PROCESS => {
            let exec: ExecuteProcessRequest = decode(payload, "ExecuteProcess")?;
            let params: ProcessParameters =
                embedded(&exec.settings.process_parameters, "ProcessParameters")?;
            round_trip(&params, "ProcessParameters");
            if !params.command_line.is_empty() {
                crate::guest::external::split_command_line(&params.command_line)
                    .map_err(|e| e.to_string())?;
            }
            if let Some(process) = &params.oci_process {
                if let Some(user) = process.pointer("/user/username").and_then(|u| u.as_str()) {
                    crate::guest::spec::user::parse_user_str(user, None, None)
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        MessageType::WAIT_FOR_PROCESS => {
            decode::<WaitForProcessRequest>(payload, "WaitForProcess").map(drop)
        }
        MessageType::SIGNAL_PROCESS => {
            let signal: SignalProcessRequest = decode(payload, "SignalProcess")?;
            let _ = signal.signal();
            Ok(())
        }
        MessageType::RESIZE_CONSOLE => {
            decode::<ResizeConsoleRequest>(payload, "ResizeConsole").map(drop)
        }
        MessageType::GET_PROPERTIES => {
            let get: GetPropertiesRequest = decode(payload, "GetProperties")?;
            if !get.query.is_empty() {
                let query: PropertyQuery = embedded(&get.query, "Query")?;
                round_trip(&query, "Query");
            }
            Ok(())
        }
        MessageType::MODIFY_SETTINGS => modify(payload),
        MessageType::START
        | MessageType::SHUTDOWN_GRACEFUL
        | MessageType::SHUTDOWN_FORCED
        | MessageType::DUMP_STACKS
        | MessageType::DELETE_CONTAINER_STATE => decode::<RequestBase>(payload, "RequestBase")
            .and_then(|b| {
                crate::guest::spec::check_container_id(&b.container_id).map_err(|e| e.to_string())
            }),
        other => Err(format!("no handler for {other}")),
    }
}

fn create(payload: &[u8]) -> Result<(), String> {
    use crate::guest::spec;
    let create: CreateRequest = decode(payload, "Create")?;
    let settings = handlers::create::settings(&create).map_err(|e| e.to_string())?;
    let id = &create.base.container_id;
    spec::check_container_id(id).map_err(|e| e.to_string())?;
    let mut spec_value = settings.oci_specification.unwrap_or_default();
    let kind = spec::classify(id, &spec_value).map_err(|e| e.to_string())?;
    spec::annotations::apply_annotations(&mut spec_value, &kind).map_err(|e| e.to_string())?;
    spec::devices::rebuild_devices(&mut spec_value).map_err(|e| e.to_string())?;
    spec::devices::block_device_mounts(&mut spec_value).map_err(|e| e.to_string())?;
    let sandbox_root = Path::new("/run/gcs/c/fuzz-sandbox");
    if matches!(kind, spec::Kind::Workload { .. }) {
        spec::mounts::rewrite_mount_sources(&mut spec_value, sandbox_root)
            .map_err(|e| e.to_string())?;
    }
    spec::mounts::tee_log_path(&spec_value, sandbox_root).map_err(|e| e.to_string())?;
    spec::mounts::enforce_readonly_cgroupfs(&mut spec_value);
    let _ = spec::mounts::bind_sources(&spec_value);
    if !matches!(kind, spec::Kind::Workload { .. }) {
        spec::pod_files::hostname_for(&spec_value).map_err(|e| e.to_string())?;
    }
    if let Some(user) = spec_value
        .pointer("/process/user/username")
        .and_then(|u| u.as_str())
    {
        spec::user::parse_user_str(user, None, None).map_err(|e| e.to_string())?;
    }
    if let Some(resources) = spec_value.pointer("/linux/resources") {
        crate::guest::constraints::validate(resources).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn modify(payload: &[u8]) -> Result<(), String> {
    use crate::storage::{checked_path, checked_share_path};
    let modify: ModifySettingsRequest = decode(payload, "ModifySettings")?;
    handlers::modify_settings::validate(&modify).map_err(|e| e.to_string())?;
    let settings = modify.request.settings.clone().unwrap_or_default();
    fn typed<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
        settings: &serde_json::Value,
        what: &str,
    ) -> Result<T, String> {
        let value: T = if settings.is_null() {
            serde_json::from_value(serde_json::json!({}))
        } else {
            serde_json::from_value(settings.clone())
        }
        .map_err(|e| format!("Settings of {what}: {e}"))?;
        round_trip(&value, what);
        Ok(value)
    }
    let err = |e: crate::storage::StorageError| e.to_string();
    match modify.request.resource_type.as_str() {
        "MappedVirtualDisk" => {
            let disk: crate::storage::scsi::MappedVirtualDisk =
                typed(&settings, "MappedVirtualDisk")?;
            crate::storage::scsi::check(&disk).map_err(err)
        }
        "SCSIDevice" => {
            typed::<crate::storage::scsi::ScsiDevice>(&settings, "SCSIDevice").map(drop)
        }
        "VPMemDevice" => {
            let dev: crate::storage::pmem::VpmemDevice = typed(&settings, "VPMemDevice")?;
            checked_path(Path::new(&dev.mount_path), &[])
                .map(drop)
                .map_err(err)
        }
        "CombinedLayers" => {
            let layers: crate::storage::overlay::CombinedLayers =
                typed(&settings, "CombinedLayers")?;
            checked_path(Path::new(&layers.container_root_path), &[]).map_err(err)?;
            for layer in &layers.layers {
                crate::storage::overlay::option_safe(
                    checked_path(Path::new(&layer.path), &[]).map_err(err)?,
                )
                .map_err(err)?;
            }
            Ok(())
        }
        "MappedDirectory" => {
            let share: crate::storage::plan9::MappedDirectory =
                typed(&settings, "MappedDirectory")?;
            share.validate().map(drop).map_err(err)?;
            checked_share_path(Path::new(&share.mount_path))
                .map(drop)
                .map_err(err)
        }
        "Network" => {
            let adapter: crate::network::adapter::Adapter = typed(&settings, "Network")?;
            adapter.validate().map_err(|e| e.to_string())
        }
        "VPCIDevice" => {
            let device: crate::devices::VpciDevice = typed(&settings, "VPCIDevice")?;
            crate::protocol::is_guid(&device.vmbus_guid)
                .then_some(())
                .ok_or_else(|| format!("VMBusGUID {:?} is not a GUID", device.vmbus_guid))
        }
        "ContainerConstraints" => {
            crate::guest::constraints::validate(&settings).map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}
