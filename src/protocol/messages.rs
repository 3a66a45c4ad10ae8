//! Request and response bodies, with the exact JSON keys of the wire (spec §4).
//!
//! Every field defaults when absent or `null` (Go `omitempty` drops zero values on the host
//! side), and serialises with the original's `omitempty` rules, so the same types serve the
//! guest (decode requests, encode responses) and the host client (the reverse).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json::{is_zero, null_default};
use super::{Hresult, NULL_CONTAINER_ID};

/// Fields every request carries at top level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestBase {
    #[serde(default, deserialize_with = "null_default")]
    pub container_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub activity_id: String,
    /// OpenTelemetry W3C trace context (`traceparent`, `tracestate`). Optional to honour.
    #[serde(
        rename = "otsc",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub trace_context: BTreeMap<String, String>,
}

impl RequestBase {
    pub fn new(container_id: &str) -> Self {
        Self {
            container_id: container_id.to_string(),
            activity_id: NULL_CONTAINER_ID.to_string(),
            trace_context: BTreeMap::new(),
        }
    }

    /// True when the request addresses the utility VM rather than a container.
    pub fn targets_uvm(&self) -> bool {
        self.container_id == NULL_CONTAINER_ID
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NegotiateProtocolRequest {
    #[serde(flatten)]
    pub base: RequestBase,
    pub minimum_version: u32,
    pub maximum_version: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SchemaVersion {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateRequest {
    #[serde(flatten)]
    pub base: RequestBase,
    /// String-embedded JSON of [`ContainerSettings`].
    #[serde(deserialize_with = "null_default")]
    pub container_config: String,
}

/// `ContainerConfig` of Create, decoded (`VMHostedContainerSettingsV2`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSettings {
    pub schema_version: SchemaVersion,
    #[serde(deserialize_with = "null_default")]
    pub oci_bundle_path: String,
    /// The OCI runtime spec; validated and typed by the guest, kept raw here so that the
    /// protocol stays independent of the runtime.
    pub oci_specification: Option<Value>,
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub scratch_dir_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecuteProcessRequest {
    #[serde(flatten)]
    pub base: RequestBase,
    pub settings: ExecuteProcessSettings,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecuteProcessSettings {
    /// String-embedded JSON of [`ProcessParameters`].
    #[serde(deserialize_with = "null_default")]
    pub process_parameters: String,
    #[serde(deserialize_with = "null_default")]
    pub vsock_stdio_relay_settings: VsockStdioRelaySettings,
}

/// Host vsock ports for each requested stdio stream; 0 (absent) means not requested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VsockStdioRelaySettings {
    #[serde(skip_serializing_if = "is_zero")]
    pub std_in: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub std_out: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub std_err: u32,
}

/// `ProcessParameters` of ExecuteProcess, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProcessParameters {
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub command_line: String,
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub command_args: Vec<String>,
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_directory: String,
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub environment: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub emulate_console: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub create_std_in_pipe: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub create_std_out_pipe: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub create_std_err_pipe: bool,
    /// Run in the UVM even when a container id is given (the guest's `IsExternal`).
    #[serde(
        rename = "CreateInUtilityVM",
        alias = "CreateInUtilityVm",
        skip_serializing_if = "is_zero"
    )]
    pub create_in_utility_vm: bool,
    /// `[height, width]`; the original guest ignores it.
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub console_size: Vec<u32>,
    /// The OCI `process` of a container exec; absent for a container's init.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oci_process: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct WaitForProcessRequest {
    #[serde(flatten)]
    pub base: RequestBase,
    pub process_id: u32,
    pub timeout_in_ms: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SignalProcessRequest {
    #[serde(flatten)]
    pub base: RequestBase,
    pub process_id: u32,
    /// Absent for "kill".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<SignalProcessOptions>,
}

impl SignalProcessRequest {
    /// The signal to deliver: a missing `Options` or signal 0 means SIGKILL.
    pub fn signal(&self) -> i32 {
        match self.options {
            Some(SignalProcessOptions { signal }) if signal != 0 => signal,
            _ => libc::SIGKILL,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SignalProcessOptions {
    #[serde(skip_serializing_if = "is_zero")]
    pub signal: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ResizeConsoleRequest {
    #[serde(flatten)]
    pub base: RequestBase,
    pub process_id: u32,
    pub height: u16,
    pub width: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GetPropertiesRequest {
    #[serde(flatten)]
    pub base: RequestBase,
    /// String-embedded JSON of [`PropertyQuery`]; empty means no property types.
    #[serde(deserialize_with = "null_default")]
    pub query: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PropertyQuery {
    #[serde(deserialize_with = "null_default")]
    pub property_types: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ModifySettingsRequest {
    #[serde(flatten)]
    pub base: RequestBase,
    #[serde(deserialize_with = "null_default")]
    pub request: ModifySettingRequest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ModifySettingRequest {
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_type: String,
    /// Defaults to `Add` when empty.
    #[serde(
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub request_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
}

impl ModifySettingRequest {
    pub fn request_type(&self) -> &str {
        if self.request_type.is_empty() {
            "Add"
        } else {
            &self.request_type
        }
    }
}

/// One error record of an error response (`commonutils.ErrorRecord`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ErrorRecord {
    pub result: i32,
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stack_trace: String,
    pub module_name: String,
    pub file_name: String,
    pub line: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub function_name: String,
}

/// Fields every response carries at top level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ResponseBase {
    pub result: i32,
    /// Echo of the request's `ActivityId`; the host rejects anything but a GUID here.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub activity_id: String,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub error_message: String,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub error_records: Vec<ErrorRecord>,
}

impl ResponseBase {
    pub fn ok(activity_id: &str) -> Self {
        Self {
            activity_id: echo_activity_id(activity_id),
            ..Self::default()
        }
    }

    /// An error response body: one record carrying the same result and message.
    pub fn error(activity_id: &str, result: Hresult, message: String) -> Self {
        Self {
            result: result.0,
            activity_id: echo_activity_id(activity_id),
            error_records: vec![ErrorRecord {
                result: result.0,
                message: message.clone(),
                module_name: "gcs".to_string(),
                line: u32::MAX,
                ..ErrorRecord::default()
            }],
            error_message: message,
        }
    }

    pub fn hresult(&self) -> Hresult {
        Hresult(self.result)
    }
}

/// The original echoes `ActivityId` verbatim; a non-GUID there makes the host fail to decode the
/// whole response and kill the bridge, so anything that is not a GUID is dropped instead.
fn echo_activity_id(activity_id: &str) -> String {
    if super::is_guid(activity_id) {
        activity_id.to_string()
    } else {
        String::new()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NegotiateProtocolResponse {
    #[serde(flatten)]
    pub base: ResponseBase,
    pub version: u32,
    pub capabilities: GcsCapabilities,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GcsCapabilities {
    #[serde(skip_serializing_if = "is_zero")]
    pub send_host_create_message: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub send_host_start_message: bool,
    #[serde(rename = "HvSocketConfigOnStartup", skip_serializing_if = "is_zero")]
    pub hv_socket_config_on_startup: bool,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub supported_schema_versions: Vec<SchemaVersion>,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub runtime_os_type: String,
    /// A non-pointer struct in Go, so never omitted.
    #[serde(deserialize_with = "null_default")]
    pub guest_defined_capabilities: GuestDefinedCapabilities,
}

impl GcsCapabilities {
    /// What this agent announces: schema 2.1, Linux, and the four guest-defined features.
    pub fn linux_guest() -> Self {
        Self {
            supported_schema_versions: vec![SchemaVersion { major: 2, minor: 1 }],
            runtime_os_type: "Linux".to_string(),
            guest_defined_capabilities: GuestDefinedCapabilities {
                namespace_add_request_supported: true,
                signal_process_supported: true,
                dump_stacks_supported: true,
                delete_container_state_supported: true,
            },
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GuestDefinedCapabilities {
    #[serde(skip_serializing_if = "is_zero")]
    pub namespace_add_request_supported: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub signal_process_supported: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub dump_stacks_supported: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub delete_container_state_supported: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateResponse {
    #[serde(flatten)]
    pub base: ResponseBase,
    /// No `omitempty` in the original: always present, always 0.
    pub selected_protocol_version: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecuteProcessResponse {
    #[serde(flatten)]
    pub base: ResponseBase,
    pub process_id: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct WaitForProcessResponse {
    #[serde(flatten)]
    pub base: ResponseBase,
    pub exit_code: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GetPropertiesResponse {
    #[serde(flatten)]
    pub base: ResponseBase,
    /// String-embedded JSON of [`Properties`].
    pub properties: String,
}

/// `Properties` of a GetProperties response, decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Properties {
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub process_list: Vec<ProcessDetails>,
    #[serde(rename = "LCOWMetrics", skip_serializing_if = "Option::is_none")]
    pub lcow_metrics: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProcessDetails {
    pub process_id: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DumpStacksResponse {
    #[serde(flatten)]
    pub base: ResponseBase,
    pub guest_stacks: String,
}

/// Why a container notification is sent; only the exit kinds are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationType {
    None,
    GracefulExit,
    ForcedExit,
    #[default]
    UnexpectedExit,
    Reboot,
    Constructed,
    Started,
    Paused,
    Unknown,
}

/// The container notification (`0x30100101`, id 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerNotification {
    pub container_id: String,
    pub activity_id: String,
    #[serde(rename = "Type")]
    pub notification_type: NotificationType,
    /// Always `None`.
    pub operation: String,
    pub result: i32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub result_info: String,
}

impl ContainerNotification {
    pub fn exited(container_id: &str, activity_id: &str, kind: NotificationType) -> Self {
        Self {
            container_id: container_id.to_string(),
            activity_id: if super::is_guid(activity_id) {
                activity_id.to_string()
            } else {
                NULL_CONTAINER_ID.to_string()
            },
            notification_type: kind,
            operation: "None".to_string(),
            result: 0,
            result_info: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::to_go_string;

    #[test]
    fn spec_3_6_negotiate_response_bytes() {
        let resp = NegotiateProtocolResponse {
            base: ResponseBase::ok(NULL_CONTAINER_ID),
            version: 4,
            capabilities: GcsCapabilities::linux_guest(),
        };
        let json = to_go_string(&resp).unwrap();
        assert_eq!(
            json,
            r#"{"Result":0,"ActivityId":"00000000-0000-0000-0000-000000000000","Version":4,"Capabilities":{"SupportedSchemaVersions":[{"Major":2,"Minor":1}],"RuntimeOsType":"Linux","GuestDefinedCapabilities":{"NamespaceAddRequestSupported":true,"SignalProcessSupported":true,"DumpStacksSupported":true,"DeleteContainerStateSupported":true}}}"#
        );
        assert_eq!(json.len() + 16, 342);
    }

    #[test]
    fn spec_3_6_negotiate_request_parses() {
        let payload = "{\"ContainerId\":\"00000000-0000-0000-0000-000000000000\",\"ActivityId\":\"00000000-0000-0000-0000-000000000000\",\"MinimumVersion\":4,\"MaximumVersion\":4}\n";
        assert_eq!(payload.len() + 16, 161);
        let req: NegotiateProtocolRequest = serde_json::from_str(payload).unwrap();
        assert_eq!(req.minimum_version, 4);
        assert_eq!(req.maximum_version, 4);
        assert!(req.base.targets_uvm());
    }

    #[test]
    fn spec_9_4_error_response_bytes() {
        let resp = ResponseBase::error(
            NULL_CONTAINER_ID,
            Hresult::SYSTEM_NOT_FOUND,
            "HRESULT: 0xc037010e".to_string(),
        );
        assert_eq!(
            to_go_string(&resp).unwrap(),
            r#"{"Result":-1070137074,"ActivityId":"00000000-0000-0000-0000-000000000000","ErrorMessage":"HRESULT: 0xc037010e","ErrorRecords":[{"Result":-1070137074,"Message":"HRESULT: 0xc037010e","ModuleName":"gcs","FileName":"","Line":4294967295}]}"#
        );
    }

    #[test]
    fn notification_bytes() {
        let n = ContainerNotification::exited(
            "cid",
            NULL_CONTAINER_ID,
            NotificationType::UnexpectedExit,
        );
        assert_eq!(
            to_go_string(&n).unwrap(),
            r#"{"ContainerId":"cid","ActivityId":"00000000-0000-0000-0000-000000000000","Type":"UnexpectedExit","Operation":"None","Result":0}"#
        );
    }

    #[test]
    fn non_guid_activity_id_is_not_echoed() {
        assert_eq!(ResponseBase::ok("hello").activity_id, "");
        assert_eq!(
            ResponseBase::ok(NULL_CONTAINER_ID).activity_id,
            NULL_CONTAINER_ID
        );
    }

    #[test]
    fn signal_defaults_to_kill() {
        let mut r = SignalProcessRequest::default();
        assert_eq!(r.signal(), libc::SIGKILL);
        r.options = Some(SignalProcessOptions { signal: 0 });
        assert_eq!(r.signal(), libc::SIGKILL);
        r.options = Some(SignalProcessOptions { signal: 15 });
        assert_eq!(r.signal(), 15);
    }

    #[test]
    fn omitempty_drops_zero_stdio_ports() {
        let s = VsockStdioRelaySettings {
            std_in: 0,
            std_out: 1073741825,
            std_err: 0,
        };
        assert_eq!(to_go_string(&s).unwrap(), r#"{"StdOut":1073741825}"#);
    }

    #[test]
    fn nulls_and_missing_fields_default() {
        let r: ModifySettingsRequest =
            serde_json::from_str(r#"{"ContainerId":null,"Request":null}"#).unwrap();
        assert_eq!(r.base.container_id, "");
        assert_eq!(r.request.request_type(), "Add");
        let p: ProcessParameters =
            serde_json::from_str(r#"{"CommandArgs":null,"Environment":null,"OciProcess":null}"#)
                .unwrap();
        assert!(p.command_args.is_empty());
        assert!(p.environment.is_none());
        assert!(p.oci_process.is_none());
    }

    #[test]
    fn out_of_range_numbers_are_errors() {
        let r = serde_json::from_str::<ResizeConsoleRequest>(r#"{"Height":70000}"#);
        assert!(r.unwrap_err().is_data());
    }
}
