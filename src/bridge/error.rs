//! Errors of the bridge layer and the one mapping from any error to its wire HRESULT.

use crate::guest::GuestError;
use crate::protocol::{FrameError, Hresult, MessageType};
use crate::runtime::RuntimeErrorKind;

/// Why a request got an error response.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// No handler for this (message type, protocol version), as the original's `UnknownMessage`.
    #[error("bridge: function not supported, header type: {}", .0.go_name())]
    NotSupported(MessageType),
    #[error("invalid message frame")]
    Frame(#[source] FrameError),
    #[error("failed to unmarshal JSON for {what}")]
    InvalidJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported protocol version range [{min}, {max}]")]
    UnsupportedProtocolVersion { min: u32, max: u32 },
    #[error("invalid schema version: {major}.{minor}")]
    InvalidSchemaVersion { major: u32, minor: u32 },
    #[error("invalid ResourceType '{0}'")]
    InvalidResourceType(String),
    #[error("the RequestType \"{0}\" is not supported")]
    UnsupportedRequestType(String),
    #[error("the ResourceType \"{0}\" is not supported for containers")]
    ResourceNotForContainers(String),
    #[error("getPropertiesV2 is not supported against the UVM")]
    PropertiesOfUvm,
    #[error("{0}")]
    InvalidRequest(String),
    /// The handler panicked (a bug): the request is answered, the agent goes on.
    #[error("internal error: the request's handler panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// Every error's HRESULT and `ErrorMessage`, in one place. Messages follow the original's
/// forms: `HRESULT 0x<hex>: <message>` when the error carries a specific HRESULT, the bare
/// message when it is a plain failure (`0x80004005`).
pub fn to_wire(err: &BridgeError) -> (Hresult, String) {
    let hresult = match err {
        BridgeError::NotSupported(_) => Hresult::NOT_IMPL,
        BridgeError::Frame(_) => Hresult::FAIL,
        BridgeError::InvalidJson { .. } => Hresult::INVALID_JSON,
        BridgeError::UnsupportedProtocolVersion { .. } => Hresult::UNSUPPORTED_PROTOCOL_VERSION,
        BridgeError::InvalidSchemaVersion { .. } => Hresult::INVALID_JSON,
        BridgeError::InvalidResourceType(_)
        | BridgeError::UnsupportedRequestType(_)
        | BridgeError::ResourceNotForContainers(_)
        | BridgeError::PropertiesOfUvm
        | BridgeError::InvalidRequest(_)
        | BridgeError::Panicked(_) => Hresult::FAIL,
        BridgeError::Guest(g) => match g {
            GuestError::ContainerNotFound(_) => Hresult::SYSTEM_NOT_FOUND,
            GuestError::InvalidId(_) => Hresult::INVALID_ARG,
            GuestError::ProcessNotFound { .. } => Hresult::NOT_FOUND,
            GuestError::WaitTimeout { .. } => Hresult::TIMEOUT,
            GuestError::InvalidRequest(_)
            | GuestError::StartProcess(_)
            | GuestError::StdioDial { .. }
            | GuestError::Io { .. } => Hresult::FAIL,
            GuestError::NotImplemented { .. } => Hresult::NOT_IMPL,
            GuestError::Policy { .. }
            | GuestError::PolicyRefused(_)
            | GuestError::Inconsistent(_) => Hresult::FAIL,
            GuestError::ContainerExists(_) => Hresult::SYSTEM_ALREADY_EXISTS,
            GuestError::StillCreating(_)
            | GuestError::Storage(_)
            | GuestError::Network(_)
            | GuestError::Cgroups(_)
            | GuestError::Device(_) => Hresult::FAIL,
            GuestError::NotRunning(_) => Hresult::SYSTEM_ALREADY_STOPPED,
            GuestError::InvalidState(_) => Hresult::INVALID_STATE,
            GuestError::NamespaceNotFound(_) => Hresult::NOT_FOUND,
            GuestError::Runtime(r) => match r.kind() {
                RuntimeErrorKind::NotExist => Hresult::SYSTEM_NOT_FOUND,
                RuntimeErrorKind::AlreadyExists => Hresult::SYSTEM_ALREADY_EXISTS,
                RuntimeErrorKind::InvalidId => Hresult::INVALID_ARG,
                RuntimeErrorKind::NotRunning => Hresult::SYSTEM_ALREADY_STOPPED,
                RuntimeErrorKind::StillRunning => Hresult::INVALID_STATE,
                RuntimeErrorKind::Other => Hresult::FAIL,
            },
        },
    };
    let text = printable(&chain(err));
    let message = if hresult == Hresult::FAIL {
        text
    } else {
        format!("HRESULT {hresult}: {text}")
    };
    (hresult, message)
}

/// An error text fit for the host's logs: control characters (a NUL, a newline from an echoed
/// host string or a runtime's report) are shown escaped, as `\u{0}`, never sent raw.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Longest error text formatted: the response keeps 16 KiB of it, and a hostile request's
/// error (a 10 MiB string echoed by a decoder) is never formatted whole.
const MAX_FORMATTED: usize = 16 * 1024 + 4;

/// A `fmt::Write` that keeps the first [`MAX_FORMATTED`] bytes and then stops the formatting
/// (a `fmt::Error` ends any `Display` early).
struct Bounded(String);

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = MAX_FORMATTED.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.0.push_str(&s[..cut]);
        Err(std::fmt::Error)
    }
}

/// The error and its sources joined with `: `, at most [`MAX_FORMATTED`] bytes of it.
fn chain(err: &dyn std::error::Error) -> String {
    use std::fmt::Write as _;
    let mut text = Bounded(String::new());
    let mut next = Some(err);
    let mut first = true;
    while let Some(e) = next {
        let written = if first {
            write!(text, "{e}")
        } else {
            write!(text, ": {e}")
        };
        if written.is_err() {
            break;
        }
        first = false;
        next = e.source();
    }
    text.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_err() -> serde_json::Error {
        serde_json::from_str::<serde_json::Value>("{not json").unwrap_err()
    }

    #[test]
    fn each_error_maps_to_its_hresult() {
        let cases: Vec<(BridgeError, Hresult)> = vec![
            (
                BridgeError::NotSupported(MessageType::UPDATE_CONTAINER),
                Hresult::NOT_IMPL,
            ),
            (BridgeError::Frame(FrameError::TooSmall(3)), Hresult::FAIL),
            (
                BridgeError::InvalidJson {
                    what: "x",
                    source: json_err(),
                },
                Hresult::INVALID_JSON,
            ),
            (
                BridgeError::UnsupportedProtocolVersion { min: 1, max: 3 },
                Hresult::UNSUPPORTED_PROTOCOL_VERSION,
            ),
            (
                BridgeError::InvalidSchemaVersion { major: 1, minor: 0 },
                Hresult::INVALID_JSON,
            ),
            (BridgeError::InvalidResourceType("X".into()), Hresult::FAIL),
            (
                BridgeError::UnsupportedRequestType("Update".into()),
                Hresult::FAIL,
            ),
            (
                BridgeError::ResourceNotForContainers("X".into()),
                Hresult::FAIL,
            ),
            (BridgeError::PropertiesOfUvm, Hresult::FAIL),
            (BridgeError::InvalidRequest("bad".into()), Hresult::FAIL),
            (
                GuestError::ContainerNotFound("c".into()).into(),
                Hresult::SYSTEM_NOT_FOUND,
            ),
            (
                GuestError::ProcessNotFound { pid: 3 }.into(),
                Hresult::NOT_FOUND,
            ),
            (
                GuestError::NotImplemented { what: "x".into() }.into(),
                Hresult::NOT_IMPL,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(to_wire(&err).0, want, "{err:?}");
        }
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let (_, m) = to_wire(&BridgeError::InvalidRequest("bad\0host\nname".into()));
        assert_eq!(m, "bad\\u{0}host\\nname");
    }

    #[test]
    fn messages_follow_original_forms() {
        let (_, m) = to_wire(&BridgeError::NotSupported(MessageType::DUMP_STACKS));
        assert_eq!(m, "HRESULT 0x80004001: bridge: function not supported, header type: ComputeSystemDumpStacksV1");
        let (_, m) = to_wire(&BridgeError::UnsupportedRequestType("Update".into()));
        assert_eq!(m, "the RequestType \"Update\" is not supported");
        let (_, m) = to_wire(&BridgeError::InvalidJson {
            what: "ProcessParameters",
            source: json_err(),
        });
        assert!(
            m.starts_with("HRESULT 0xc037010d: failed to unmarshal JSON for ProcessParameters: "),
            "{m}"
        );
        let (_, m) = to_wire(&GuestError::ContainerNotFound("c1".into()).into());
        assert_eq!(m, "HRESULT 0xc037010e: container \"c1\" does not exist");
    }
}
