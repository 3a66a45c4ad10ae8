//! The guest's side of the bridge: one reader, one writer and one task per request.
//!
//! The reader owns the read half and the connection's protocol version; NegotiateProtocol is
//! handled inline so that the version is set before the next frame is read. Every other request
//! runs in its own task, so responses leave in any order. The writer is the only owner of the
//! write half; responses reach it over a bounded channel and container notifications over the
//! UVM-wide queue, which outlives connections: what is queued while no host is connected is sent
//! on the next connection.
//!
//! # Bounds
//! What the host can make the agent hold is bounded by design (issue 15):
//! - at most [`REQUESTS_IN_FLIGHT`] requests read but not yet answered on the wire — the reader
//!   takes no further frame until one is (back-pressure: the host waits, the agent does not
//!   buffer);
//! - payloads above the host's own 64 KiB message size share [`LARGE_PAYLOAD_BYTES`], held until
//!   their handler ends (WaitForProcess, which may wait for ever, hands its share back once
//!   decoded); each takes [`DECODED_COPIES`] bytes of it per payload byte, because decoding
//!   copies what it keeps (a string-embedded document is unescaped through a buffer into a
//!   string of its own); a frame
//!   beyond [`MAX_FRAME`] is skipped without being stored;
//! - responses queued for a host that is not reading: [`RESPONSES_QUEUED`], each at most the
//!   host's 64 KiB.
//!
//! A handler that panics is answered with an error and the bridge goes on.

mod error;
pub mod fault;
pub mod handlers;
mod inflight;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
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
    /// Started by this binary's own init in a utility VM: the first NegotiateProtocol answered
    /// is marked in the kernel log, whose timestamps give the boot split (`make bench-uvm`).
    pub boot_marker: bool,
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
    responses: mpsc::Receiver<Outgoing>,
    unsent_response: Option<Outgoing>,
}

/// An encoded response and its request's slot, freed once the response is on the wire.
#[derive(Debug)]
struct Outgoing {
    frame: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

/// Responses waiting for a connection, at most; handlers wait beyond that (back-pressure, no
/// unbounded buffering while the host is away).
pub const RESPONSES_QUEUED: usize = 256;

/// Requests read and not yet answered on the wire, at most. The real host keeps a handful in
/// flight (one WaitForProcess per running process, plus the request at hand).
pub const REQUESTS_IN_FLIGHT: usize = 512;

/// How long the bridge stays without a request in flight before it trims the heap.
pub const IDLE_TRIM_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes of memory a large payload is counted for per byte of its own, as measured: the
/// payload, serde's buffer for a string with escapes (one escape is enough, and a
/// string-embedded document such as `ContainerConfig` or `ProcessParameters` has one for every
/// quote) and the string made from it, all
/// three at once while the string is decoded. A handler drops the payload before it decodes an
/// embedded document further, and a Create moves its spec rather than copying it
/// (`tests/robustness.rs`, `large_requests_are_counted_with_what_decoding_copies`).
pub const DECODED_COPIES: usize = 3;

/// Memory that payloads larger than the host's own message limit (64 KiB) and their decoded
/// copies share ([`DECODED_COPIES`] per payload byte); one frame of the largest size accepted
/// fits.
pub const LARGE_PAYLOAD_BYTES: usize = MAX_FRAME * DECODED_COPIES;

/// The bridge server. One instance serves every connection of the agent's life.
#[derive(Debug)]
pub struct Bridge {
    guest: Arc<Guest>,
    config: BridgeConfig,
    outbox: tokio::sync::Mutex<Outbox>,
    responses: mpsc::Sender<Outgoing>,
    inflight: Arc<InFlight>,
    /// An idle trim is scheduled ([`Bridge::trim_when_idle`]).
    idle_trim_pending: std::sync::atomic::AtomicBool,
    connections: AtomicU64,
    /// One permit per request in flight ([`REQUESTS_IN_FLIGHT`]).
    slots: Arc<Semaphore>,
    /// [`DECODED_COPIES`] permits per byte of large payload held ([`LARGE_PAYLOAD_BYTES`]).
    large: Arc<Semaphore>,
}

/// A frame as read: its header and either its payload or why it has none.
#[derive(Debug)]
struct Frame {
    header: MessageHeader,
    payload: Result<Payload, FrameError>,
}

/// A request's payload and its share of the large-payload budget.
#[derive(Debug)]
pub struct Payload {
    bytes: Option<Vec<u8>>,
    _share: Option<OwnedSemaphorePermit>,
}

impl Payload {
    /// The bytes, until [`Payload::take_bytes`] took them (then empty).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or_default()
    }

    /// The bytes, once; the share of the budget stays with the payload.
    pub fn take_bytes(&mut self) -> Option<Vec<u8>> {
        self.bytes.take()
    }
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
            idle_trim_pending: std::sync::atomic::AtomicBool::new(false),
            connections: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT)),
            large: Arc::new(Semaphore::new(LARGE_PAYLOAD_BYTES)),
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
        let mut writer_task = writer_task;
        let end = loop {
            // A slot first: with every slot taken the next frame stays in the socket.
            let slot = tokio::select! {
                slot = Arc::clone(&self.slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break ConnectionEnd::Shutdown,
                },
                _ = shutdown.wait_for(|s| *s) => break ConnectionEnd::Shutdown,
                _ = &mut writer_task => break writer_gone(connection),
            };
            let frame = tokio::select! {
                frame = read_frame(&mut reader, &self.large) => frame,
                _ = shutdown.wait_for(|s| *s) => break ConnectionEnd::Shutdown,
                _ = &mut writer_task => break writer_gone(connection),
            };
            match frame {
                Ok(Some(frame)) => {
                    // Whatever the frame holds, a panic in reading it is answered, not fatal.
                    let header = frame.header;
                    let dispatched = std::panic::AssertUnwindSafe(self.dispatch(
                        connection,
                        frame,
                        slot,
                        &mut version,
                        &responses,
                    ))
                    .catch_unwind()
                    .await;
                    if let Err(panic) = dispatched {
                        let message = crate::crash::panic_message(&*panic);
                        tracing::error!(msg_id = header.id, panic = %message, "request dispatch panicked");
                        // The slot went with the unwound dispatch; the answer takes a fresh one.
                        if let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await {
                            let frame =
                                encode_response(header, "", Err(BridgeError::Panicked(message)));
                            let _ = responses.send(Outgoing { frame, _slot: slot }).await;
                        }
                    }
                }
                Ok(None) => break ConnectionEnd::Closed,
                Err(e) => break ConnectionEnd::Failed(e),
            }
        };
        let _ = stop.send(());
        // A host that stopped reading cannot hold the writer (and a UVM shutdown) forever: what
        // it has not taken in 5 s stays queued for the next connection.
        if writer_task.is_finished() {
            return end;
        }
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
        slot: OwnedSemaphorePermit,
        version: &mut u32,
        responses: &mpsc::Sender<Outgoing>,
    ) {
        let header = frame.header;
        let payload = match frame.payload {
            Ok(p) => p,
            Err(e) => {
                warn!(msg_id = header.id, msg_type = %header.message_type, error = %e, "malformed frame");
                let frame = encode_response(header, "", Err(BridgeError::Frame(e)));
                let _ = responses.send(Outgoing { frame, _slot: slot }).await;
                return;
            }
        };
        // Like the original, the base is pre-parsed with errors ignored; handlers decode the
        // whole payload again and report their own decode errors.
        fault::at_dispatch(payload.bytes());
        let mut base: RequestBase = serde_json::from_slice(payload.bytes()).unwrap_or_default();
        // The pre-parse lives as long as the request; it keeps no more of a hostile id than
        // could matter (a longer container id is invalid anyway; a non-GUID activity id is not
        // echoed).
        shrink(&mut base.container_id, 1025);
        if !crate::protocol::is_guid(&base.activity_id) {
            shrink(&mut base.activity_id, 64);
        }
        let span = tracing::debug_span!(
            "request",
            msg_id = header.id,
            msg_type = header.message_type.short_name(),
            container_id = %base.container_id,
        );
        if tracing::enabled!(tracing::Level::TRACE) {
            let message = loggable(payload.bytes(), self.config.scrub_logs);
            let _enter = span.enter();
            tracing::trace!(payload = %message, "request read message");
        }
        if header.message_type == MessageType::NEGOTIATE_PROTOCOL && *version == 0 {
            let _enter = span.enter();
            // Without -v4 the original registers no NegotiateProtocol handler: the host
            // learns at once that this guest serves it nothing.
            let result = if self.config.v4 {
                handlers::negotiate::handle(payload.bytes())
            } else {
                Err(BridgeError::NotSupported(header.message_type))
            };
            let negotiated = result.is_ok();
            if negotiated {
                *version = PROTOCOL_V4;
            }
            let frame = encode_response(header, &base.activity_id, result);
            let _ = responses.send(Outgoing { frame, _slot: slot }).await;
            if negotiated && self.config.boot_marker {
                mark_first_negotiation();
            }
            return;
        }
        // During the boot, requests wait for init's modules here, in the reader, so that they
        // keep their order (crate::boot).
        if crate::boot::modules_loading() {
            crate::boot::modules_loaded().await;
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
        let large = payload.bytes().len() > HOST_MAX_MESSAGE;
        let work = async move {
            if tracing::enabled!(tracing::Level::DEBUG) {
                // The payload is logged as the original does; its secrets only when asked.
                let message = loggable(payload.bytes(), bridge.config.scrub_logs);
                debug!(request = %message, "request received");
            }
            // Timed from here: the request's own work, not the logging above.
            let started = std::time::Instant::now();
            let result = if version != PROTOCOL_V4 || !bridge.config.v4 {
                Err(BridgeError::NotSupported(header.message_type))
            } else {
                let payload = std::sync::Mutex::new(Some(payload));
                let request = handlers::Request {
                    header,
                    base: &base,
                    payload: &payload,
                    bridge: &bridge,
                };
                // A handler that panics is answered like any failed request; the panic hook
                // has already logged it with its backtrace.
                match std::panic::AssertUnwindSafe(handlers::handle(request))
                    .catch_unwind()
                    .await
                {
                    Ok(result) => result,
                    Err(panic) => Err(BridgeError::Panicked(crate::crash::panic_message(&*panic))),
                }
            };
            // The guest's own time for the request, decoding to encoded response (debug level).
            debug!(
                micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                ok = result.is_ok(),
                "request handled"
            );
            let shutdown_after = matches!(&result, Ok(r) if r.shutdown_after);
            let frame = encode_response(header, &base.activity_id, result);
            if tracing::enabled!(tracing::Level::TRACE) {
                let body = frame
                    .get(crate::protocol::header::HEADER_LEN..)
                    .unwrap_or_default();
                tracing::trace!(payload = %String::from_utf8_lossy(body), "request write response");
            }
            if responses
                .send(Outgoing { frame, _slot: slot })
                .await
                .is_err()
            {
                warn!("the bridge is gone; response dropped");
            }
            drop(guard);
            if large {
                // What a large request's decoding spread over the heap goes back now, not at
                // some later allocation (issue 15: idle memory returns to where it was).
                crate::sys::trim_allocator();
            } else if bridge.inflight.is_empty() {
                bridge.trim_when_idle();
            }
            if shutdown_after {
                bridge.guest.request_shutdown();
            }
        }
        .instrument(span);
        // On confidential hardware, or once a policy made the guest confidential (SP §3.8), the
        // reader waits: the next request is read only once this one is answered.
        // WaitForProcess always runs on its own, as in the original (spec §10.1): the host's
        // infinite wait on an init must not hold every later request.
        let sequential = self.config.sequential || self.guest.policy().is_confidential();
        if sequential && header.message_type != MessageType::WAIT_FOR_PROCESS {
            work.await;
            // The writer was woken onto this worker; let it send the response before the
            // next request is read and handled here.
            tokio::task::yield_now().await;
        } else {
            tokio::spawn(work);
        }
    }

    /// Once no request has been in flight for [`IDLE_TRIM_DELAY`], gives the heap's free
    /// memory back to the kernel: memory at rest returns to where it was whatever the requests
    /// before left free in the allocator's arenas. At most one trim is pending at a time.
    fn trim_when_idle(self: &Arc<Self>) {
        if self.idle_trim_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let bridge = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_TRIM_DELAY).await;
            bridge.idle_trim_pending.store(false, Ordering::Release);
            if bridge.inflight.is_empty() {
                crate::sys::trim_allocator();
            }
        });
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
            if let Err(e) = writer.write_all(&frame.frame).await {
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
                    if cfg!(debug_assertions) && fault::writer_should_panic(frame_id(&frame.frame)) {
                        *unsent_response = Some(frame);
                        panic!("injected panic in the bridge writer");
                    }
                    if let Err(e) = writer.write_all(&frame.frame).await {
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
            if writer.write_all(&frame.frame).await.is_err() {
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

/// The message id in an encoded frame's header (0 for a frame too short to have one).
fn frame_id(frame: &[u8]) -> u64 {
    frame
        .get(..HEADER_LEN)
        .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
        .map_or(0, |h| MessageHeader::decode(h).id)
}

/// The writer ended before the reader: it failed (the connection is broken) or panicked. Either
/// way the connection ends, so that the host reconnects rather than waits on answers that
/// cannot leave.
fn writer_gone(connection: u64) -> ConnectionEnd {
    warn!(connection, "bridge writer ended; closing the connection");
    ConnectionEnd::Failed(io::Error::other("the bridge writer ended"))
}

/// Cuts `text` to at most `max` bytes (at a character boundary).
fn shrink(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.shrink_to_fit();
    }
}

/// Logged payloads are cut at this many bytes: a 16 MiB request is not copied into the log.
const LOGGED_PAYLOAD: usize = 64 * 1024;

/// A payload as the log shows it: scrubbed when asked, cut at [`LOGGED_PAYLOAD`] bytes.
fn loggable(payload: &[u8], scrub: bool) -> String {
    let cut = payload.len().min(LOGGED_PAYLOAD);
    let head = payload.get(..cut).unwrap_or_default();
    let mut text = if scrub {
        crate::protocol::scrub::scrub_payload(head)
    } else {
        String::from_utf8_lossy(head).into_owned()
    };
    if cut < payload.len() {
        text.push_str(&format!("... ({} bytes in all)", payload.len()));
    }
    text
}

/// [`read_frame`] for the fuzz harnesses: each frame's header and its payload's length, or why
/// it has none.
pub async fn read_frame_len<R: AsyncRead + Unpin>(
    reader: &mut R,
    large: &Arc<Semaphore>,
) -> io::Result<Option<(MessageHeader, Result<usize, FrameError>)>> {
    Ok(read_frame(reader, large)
        .await?
        .map(|f| (f.header, f.payload.map(|p| p.bytes().len()))))
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames. A header whose size is
/// out of bounds yields a frame without payload: below 16 it is taken as a bare header; above
/// the limit its payload is read and discarded without being stored, so the stream stays in
/// step and the host still gets an answer. A payload above the host's 64 KiB takes its share of
/// `large` ([`DECODED_COPIES`] permits per byte) before it is read (the reader waits for it).
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    large: &Arc<Semaphore>,
) -> io::Result<Option<Frame>> {
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
            let share = if len > HOST_MAX_MESSAGE {
                let bytes = u32::try_from(len * DECODED_COPIES).map_err(io::Error::other)?;
                Some(
                    Arc::clone(large)
                        .acquire_many_owned(bytes)
                        .await
                        .map_err(io::Error::other)?,
                )
            } else {
                None
            };
            let mut bytes = vec![0u8; len];
            reader.read_exact(&mut bytes).await?;
            Ok(Payload {
                bytes: Some(bytes),
                _share: share,
            })
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
        shrink(&mut message, 16 * 1024);
        message.push_str("...");
    }
    let base = ResponseBase::error(activity_id, hresult, message);
    to_go_json(&base).unwrap_or_else(|_| format!("{{\"Result\":{}}}", hresult.0).into_bytes())
}

/// Writes `gcs: NegotiateProtocol answered` to the kernel log, once per agent: the kernel's
/// timestamp on it ends the agent's share of the boot (issue 17; read by `benches/uvm_boot.rs`).
fn mark_first_negotiation() {
    use std::io::Write;
    static MARKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if MARKED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(b"<6>gcs: NegotiateProtocol answered\n");
    }
}
