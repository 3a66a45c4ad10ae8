//! The guest's side of the bridge: one reader, one writer and one task per request.
//!
//! The reader owns the read half and the connection's protocol version; NegotiateProtocol is
//! handled inline so that the version is set before the next frame is read. Every other request
//! runs in its own task, so responses leave in any order. The writer is the only owner of the
//! write half; responses reach it over a bounded channel and container notifications over the
//! UVM-wide queue, which outlives connections: what is queued while no host is connected is sent
//! on the next connection.

mod error;
pub mod handlers;
mod inflight;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

pub use error::{to_wire, BridgeError};
pub use handlers::Reply;
pub use inflight::InFlight;

use crate::guest::{Guest, NotificationQueue};
use crate::protocol::header::encode_frame;
use crate::protocol::json::to_go_json;
use crate::protocol::messages::{ContainerNotification, RequestBase, ResponseBase};
use crate::protocol::{
    FrameError, MessageHeader, MessageType, HEADER_LEN, HOST_MAX_MESSAGE, MAX_FRAME, PROTOCOL_V4,
};

/// How the bridge was configured on the command line.
#[derive(Debug, Clone, Copy)]
pub struct BridgeConfig {
    /// `-v4`: without it only NegotiateProtocol has a handler.
    pub v4: bool,
    /// `-scrub-logs`: environment values never reach the log.
    pub scrub_logs: bool,
    /// Confidential (SEV-SNP) hardware: requests are served strictly one at a time, as the
    /// original does there (spec §10.1).
    pub sequential: bool,
}

/// How a connection ended.
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The host closed the connection.
    Closed,
    /// Reading failed.
    Failed(io::Error),
    /// The host asked the UVM to shut down.
    Shutdown,
}

/// Responses and notifications not yet written, carried from one connection to the next: a
/// handler that finishes after its connection dropped has its response sent on the next one,
/// old id and all, in the order produced (as the original, whose migration-aware host
/// pre-registers those ids; spec §10.3).
#[derive(Debug)]
struct Outbox {
    queue: NotificationQueue,
    unsent: Option<ContainerNotification>,
    responses: mpsc::Receiver<Vec<u8>>,
    unsent_response: Option<Vec<u8>>,
}

/// Responses waiting for a connection, at most; handlers wait beyond that (back-pressure, no
/// unbounded buffering while the host is away).
const RESPONSES_QUEUED: usize = 256;

/// The bridge server. One instance serves every connection of the agent's life.
#[derive(Debug)]
pub struct Bridge {
    guest: Arc<Guest>,
    config: BridgeConfig,
    outbox: tokio::sync::Mutex<Outbox>,
    responses: mpsc::Sender<Vec<u8>>,
    inflight: Arc<InFlight>,
    connections: AtomicU64,
}

/// A frame as read: its header and either its payload or why it has none.
#[derive(Debug)]
struct Frame {
    header: MessageHeader,
    payload: Result<Vec<u8>, FrameError>,
}

impl Bridge {
    pub fn new(
        guest: Arc<Guest>,
        notifications: NotificationQueue,
        config: BridgeConfig,
    ) -> Arc<Self> {
        let (responses, responses_rx) = mpsc::channel(RESPONSES_QUEUED);
        Arc::new(Self {
            guest,
            config,
            outbox: tokio::sync::Mutex::new(Outbox {
                queue: notifications,
                unsent: None,
                responses: responses_rx,
                unsent_response: None,
            }),
            responses,
            inflight: Arc::new(InFlight::default()),
            connections: AtomicU64::new(0),
        })
    }

    pub fn guest(&self) -> &Arc<Guest> {
        &self.guest
    }

    pub fn inflight(&self) -> &InFlight {
        &self.inflight
    }

    /// Serves one connection until the host closes it, reading fails, or the UVM is shut down.
    /// Handlers still running afterwards finish, and their responses go out on the next
    /// connection (see [`Outbox`]).
    pub async fn serve<S>(self: &Arc<Self>, stream: S) -> ConnectionEnd
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let connection = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let (mut reader, writer) = tokio::io::split(stream);
        let responses = self.responses.clone();
        let (stop, stopped) = oneshot::channel();
        let writer_task = tokio::spawn(Arc::clone(self).write_loop(writer, stopped));
        let mut version = 0u32;
        let mut shutdown = self.guest.shutdown_requested();
        info!(connection, "bridge connected");
        let end = loop {
            let frame = tokio::select! {
                frame = read_frame(&mut reader) => frame,
                _ = shutdown.wait_for(|s| *s) => break ConnectionEnd::Shutdown,
            };
            match frame {
                Ok(Some(frame)) => {
                    self.dispatch(connection, frame, &mut version, &responses)
                        .await
                }
                Ok(None) => break ConnectionEnd::Closed,
                Err(e) => break ConnectionEnd::Failed(e),
            }
        };
        let _ = stop.send(());
        // A host that stopped reading cannot hold the writer (and a UVM shutdown) forever: what
        // it has not taken in 5 s stays queued for the next connection.
        let mut writer_task = writer_task;
        match tokio::time::timeout(std::time::Duration::from_secs(5), &mut writer_task).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => warn!(connection, "bridge writer task panicked"),
            Err(_) => {
                warn!(
                    connection,
                    "the host stopped reading; bridge writer abandoned"
                );
                writer_task.abort();
            }
        }
        end
    }

    async fn dispatch(
        self: &Arc<Self>,
        connection: u64,
        frame: Frame,
        version: &mut u32,
        responses: &mpsc::Sender<Vec<u8>>,
    ) {
        let header = frame.header;
        let payload = match frame.payload {
            Ok(p) => p,
            Err(e) => {
                warn!(msg_id = header.id, msg_type = %header.message_type, error = %e, "malformed frame");
                let bytes = encode_response(header, "", Err(BridgeError::Frame(e)));
                let _ = responses.send(bytes).await;
                return;
            }
        };
        // Like the original, the base is pre-parsed with errors ignored; handlers decode the
        // whole payload again and report their own decode errors.
        let base: RequestBase = serde_json::from_slice(&payload).unwrap_or_default();
        let span = tracing::debug_span!(
            "request",
            msg_id = header.id,
            msg_type = header.message_type.short_name(),
            container_id = %base.container_id,
        );
        if tracing::enabled!(tracing::Level::TRACE) {
            let message = if self.config.scrub_logs {
                crate::protocol::scrub::scrub_payload(&payload)
            } else {
                String::from_utf8_lossy(&payload).into_owned()
            };
            let _enter = span.enter();
            tracing::trace!(payload = %message, "request read message");
        }
        if header.message_type == MessageType::NEGOTIATE_PROTOCOL && *version == 0 {
            let _enter = span.enter();
            // Without -v4 the original registers no NegotiateProtocol handler: the host
            // learns at once that this guest serves it nothing.
            let result = if self.config.v4 {
                handlers::negotiate::handle(&payload)
            } else {
                Err(BridgeError::NotSupported(header.message_type))
            };
            if result.is_ok() {
                *version = PROTOCOL_V4;
            }
            let bytes = encode_response(header, &base.activity_id, result);
            let _ = responses.send(bytes).await;
            return;
        }
        let version = *version;
        let bridge = Arc::clone(self);
        let responses = responses.clone();
        let guard = self.inflight.enter(
            connection,
            header.id,
            header.message_type,
            &base.container_id,
        );
        let work = async move {
            if tracing::enabled!(tracing::Level::DEBUG) {
                // The payload is logged as the original does; its secrets only when asked.
                let message = if bridge.config.scrub_logs {
                    crate::protocol::scrub::scrub_payload(&payload)
                } else {
                    String::from_utf8_lossy(&payload).into_owned()
                };
                debug!(request = %message, "request received");
            }
            let result = if version != PROTOCOL_V4 || !bridge.config.v4 {
                Err(BridgeError::NotSupported(header.message_type))
            } else {
                let request = handlers::Request {
                    header,
                    base: &base,
                    payload: &payload,
                    bridge: &bridge,
                };
                handlers::handle(request).await
            };
            let shutdown_after = matches!(&result, Ok(r) if r.shutdown_after);
            let bytes = encode_response(header, &base.activity_id, result);
            if tracing::enabled!(tracing::Level::TRACE) {
                let body = bytes
                    .get(crate::protocol::header::HEADER_LEN..)
                    .unwrap_or_default();
                tracing::trace!(payload = %String::from_utf8_lossy(body), "request write response");
            }
            if responses.send(bytes).await.is_err() {
                warn!("the bridge is gone; response dropped");
            }
            drop(guard);
            if shutdown_after {
                bridge.guest.request_shutdown();
            }
        }
        .instrument(span);
        // On confidential hardware the reader waits: the next request is read only once this
        // one is answered. WaitForProcess always runs on its own, as in the original (spec
        // §10.1): the host's infinite wait on an init must not hold every later request.
        if self.config.sequential && header.message_type != MessageType::WAIT_FOR_PROCESS {
            work.await;
        } else {
            tokio::spawn(work);
        }
    }

    async fn write_loop<W: AsyncWrite>(
        self: Arc<Self>,
        writer: W,
        mut stop: oneshot::Receiver<()>,
    ) {
        tokio::pin!(writer);
        // Only one connection's writer at a time owns the queues.
        let mut outbox = self.outbox.lock().await;
        if let Some(frame) = outbox.unsent_response.take() {
            if let Err(e) = writer.write_all(&frame).await {
                warn!(error = %e, "bridge write failed; response kept for the next connection");
                outbox.unsent_response = Some(frame);
                return;
            }
        }
        if let Some(n) = outbox.unsent.take() {
            if let Err(n) = write_notification(&mut writer, n).await {
                outbox.unsent = Some(n);
                return;
            }
        }
        let Outbox {
            queue,
            unsent,
            responses,
            unsent_response,
        } = &mut *outbox;
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(frame) = responses.recv() => {
                    if let Err(e) = writer.write_all(&frame).await {
                        warn!(error = %e, "bridge write failed; response kept for the next connection");
                        *unsent_response = Some(frame);
                        return;
                    }
                }
                Some(n) = queue.recv() => {
                    if let Err(n) = write_notification(&mut writer, n).await {
                        *unsent = Some(n);
                        return;
                    }
                }
            }
        }
        // The reader stopped: flush what was already answered (a UVM shutdown's own response).
        while let Ok(frame) = responses.try_recv() {
            if writer.write_all(&frame).await.is_err() {
                *unsent_response = Some(frame);
                return;
            }
        }
        let _ = writer.flush().await;
    }
}

async fn write_notification<W: AsyncWrite + Unpin>(
    writer: &mut W,
    n: ContainerNotification,
) -> Result<(), ContainerNotification> {
    let payload = match to_go_json(&n) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, container_id = %n.container_id, "cannot encode notification; dropped");
            return Ok(());
        }
    };
    let frame = encode_frame(MessageType::NOTIFICATION, 0, &payload);
    match writer.write_all(&frame).await {
        Ok(()) => {
            debug!(container_id = %n.container_id, kind = ?n.notification_type, "notification sent");
            Ok(())
        }
        Err(e) => {
            warn!(error = %e, "bridge write failed; notification kept for the next connection");
            Err(n)
        }
    }
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames. A header whose size is
/// out of bounds yields a frame without payload: below 16 it is taken as a bare header; above
/// the limit its payload is read and discarded without being stored, so the stream stays in
/// step and the host still gets an answer.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Frame>> {
    let mut bytes = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut bytes[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a header",
                ))
            };
        }
        filled += n;
    }
    let header = MessageHeader::decode(&bytes);
    let payload = match header.payload_len(MAX_FRAME) {
        Ok(len) => {
            let mut payload = vec![0u8; len];
            reader.read_exact(&mut payload).await?;
            Ok(payload)
        }
        Err(FrameError::TooLarge { size, limit }) => {
            let discard = u64::from(size) - HEADER_LEN as u64;
            let copied = tokio::io::copy(&mut reader.take(discard), &mut tokio::io::sink()).await?;
            if copied < discard {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a payload",
                ));
            }
            Err(FrameError::TooLarge { size, limit })
        }
        Err(e) => Err(e),
    };
    Ok(Some(Frame { header, payload }))
}

/// Encodes the response frame for `header`, enforcing the host's 64 KiB limit: a response that
/// would exceed it is replaced by an error response saying so.
pub fn encode_response(
    header: MessageHeader,
    activity_id: &str,
    result: Result<Reply, BridgeError>,
) -> Vec<u8> {
    let response_type = header.message_type.response();
    let body = match result {
        Ok(reply) => reply.body,
        Err(err) => {
            let (hresult, message) = to_wire(&err);
            debug!(result = %hresult, error = %message, "request failed");
            error_body(activity_id, hresult, message)
        }
    };
    if HEADER_LEN + body.len() > HOST_MAX_MESSAGE {
        let message = format!(
            "response of {} bytes exceeds the host's {HOST_MAX_MESSAGE}-byte message limit",
            HEADER_LEN + body.len()
        );
        warn!(msg_id = header.id, "{message}");
        let body = error_body(activity_id, crate::protocol::Hresult::FAIL, message);
        return encode_frame(response_type, header.id, &body);
    }
    encode_frame(response_type, header.id, &body)
}

fn error_body(
    activity_id: &str,
    hresult: crate::protocol::Hresult,
    mut message: String,
) -> Vec<u8> {
    // Error text can embed request data; keep the error response itself well under the limit.
    if message.len() > 16 * 1024 {
        let mut cut = 16 * 1024;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    let base = ResponseBase::error(activity_id, hresult, message);
    to_go_json(&base).unwrap_or_else(|_| format!("{{\"Result\":{}}}", hresult.0).into_bytes())
}
