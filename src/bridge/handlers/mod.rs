//! One handler per request type. Each decodes its own request (decode errors become
//! `0xC037010D`) and returns the encoded success body, or a typed error that `to_wire` maps.

pub mod create;
pub mod delete_state;
pub mod dump_stacks;
pub mod execute_process;
pub mod get_properties;
pub mod modify_settings;
pub mod negotiate;
pub mod resize_console;
pub mod shutdown;
pub mod signal_process;
pub mod start;
pub mod wait_for_process;

use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Bridge, BridgeError, Payload};
use crate::protocol::json::to_go_json;
use crate::protocol::messages::RequestBase;
use crate::protocol::{MessageHeader, MessageType};

/// A request as a handler sees it.
#[derive(Debug)]
pub struct Request<'a> {
    pub header: MessageHeader,
    pub base: &'a RequestBase,
    /// The payload until the handler lets it go ([`Request::release_payload`]).
    pub payload: &'a Mutex<Option<Payload>>,
    pub bridge: &'a Arc<Bridge>,
}

impl Request<'_> {
    /// Decodes the whole payload as `T`, once: the bytes are freed as soon as they are decoded
    /// (the payload's share of the large-payload budget stays until the handler ends, or
    /// [`Request::release_payload`]). Errors: `InvalidJson`, or `InvalidRequest` for a second
    /// decode.
    pub fn decode<T: DeserializeOwned>(&self, what: &'static str) -> Result<T, BridgeError> {
        let mut payload = self.payload.lock().unwrap_or_else(|p| p.into_inner());
        match payload.as_mut().and_then(Payload::take_bytes) {
            Some(bytes) => decode(&bytes, what),
            None => Err(BridgeError::InvalidRequest(format!(
                "{what}: the payload was already decoded"
            ))),
        }
    }

    /// Frees the payload and its share of the bridge's large-payload budget: for handlers that
    /// may wait long after decoding.
    pub fn release_payload(&self) {
        drop(
            self.payload
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

pub fn decode<T: DeserializeOwned>(payload: &[u8], what: &'static str) -> Result<T, BridgeError> {
    serde_json::from_slice(payload).map_err(|source| BridgeError::InvalidJson { what, source })
}

/// A success response body, already encoded.
#[derive(Debug)]
pub struct Reply {
    pub body: Vec<u8>,
    /// Power the UVM off once this response is on its way.
    pub shutdown_after: bool,
}

impl Reply {
    pub fn new<T: Serialize>(body: &T) -> Result<Self, BridgeError> {
        let body = to_go_json(body)
            .map_err(|e| BridgeError::InvalidRequest(format!("cannot encode response: {e}")))?;
        Ok(Self {
            body,
            shutdown_after: false,
        })
    }
}

/// Routes a negotiated v4 request to its handler.
pub async fn handle(req: Request<'_>) -> Result<Reply, BridgeError> {
    match req.header.message_type {
        MessageType::CREATE => create::handle(&req).await,
        MessageType::START => start::handle(&req),
        MessageType::SHUTDOWN_GRACEFUL => shutdown::handle(&req, shutdown::Mode::Graceful).await,
        MessageType::SHUTDOWN_FORCED => shutdown::handle(&req, shutdown::Mode::Forced).await,
        MessageType::EXECUTE_PROCESS => execute_process::handle(&req).await,
        MessageType::WAIT_FOR_PROCESS => wait_for_process::handle(&req).await,
        MessageType::SIGNAL_PROCESS => signal_process::handle(&req).await,
        MessageType::RESIZE_CONSOLE => resize_console::handle(&req).await,
        MessageType::GET_PROPERTIES => get_properties::handle(&req).await,
        MessageType::MODIFY_SETTINGS => modify_settings::handle(&req).await,
        MessageType::DUMP_STACKS => dump_stacks::handle(&req),
        MessageType::DELETE_CONTAINER_STATE => delete_state::handle(&req).await,
        other => Err(BridgeError::NotSupported(other)),
    }
}
