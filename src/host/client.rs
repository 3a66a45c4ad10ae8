//! The bridge client: typed calls for every request and a stream of notifications.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::header::encode_frame;
use crate::protocol::ids::Kind;
use crate::protocol::messages::*;
use crate::protocol::{
    Hresult, MessageHeader, MessageType, HEADER_LEN, HOST_MAX_MESSAGE, PROTOCOL_V4,
};

/// A frame received from the guest.
#[derive(Debug, Clone)]
pub struct Frame {
    pub header: MessageHeader,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn json(&self) -> Result<serde_json::Value, HostError> {
        serde_json::from_slice(&self.payload).map_err(HostError::Decode)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("bridge i/o")]
    Io(#[from] io::Error),
    /// The bridge is gone; the text says why (as the real host reports it).
    #[error("bridge closed: {0}")]
    Closed(String),
    #[error("cannot decode guest message")]
    Decode(#[source] serde_json::Error),
    #[error("guest RPC failure: {message} ({hresult})")]
    Guest {
        hresult: Hresult,
        message: String,
        response: serde_json::Value,
    },
    #[error("timed out")]
    Timeout,
}

impl HostError {
    /// The HRESULT of a guest error response.
    pub fn hresult(&self) -> Option<Hresult> {
        match self {
            Self::Guest { hresult, .. } => Some(*hresult),
            _ => None,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>;

struct Shared {
    pending: Pending,
    /// Why the connection failed, once it has.
    failure: Mutex<Option<String>>,
    /// A migration is switching transports: the old one's end fails no outstanding call.
    migrating: std::sync::atomic::AtomicBool,
}

/// A connected host-side bridge.
pub struct BridgeClient {
    writer: tokio::sync::Mutex<WriteHalf<Box<dyn Stream>>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    notifications: tokio::sync::Mutex<mpsc::UnboundedReceiver<ContainerNotification>>,
    notify_tx: mpsc::UnboundedSender<ContainerNotification>,
    reader: Mutex<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for BridgeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeClient")
            .field("next_id", &self.next_id)
            .finish()
    }
}

/// Any stream the guest's bridge can arrive on.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Drop for BridgeClient {
    fn drop(&mut self) {
        lock(&self.reader).abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BridgeClient {
    /// Wraps a connected stream and starts reading from it.
    pub fn new<S: Stream>(stream: S) -> Self {
        let boxed: Box<dyn Stream> = Box::new(stream);
        let (reader, writer) = tokio::io::split(boxed);
        let shared = Arc::new(Shared {
            pending: Arc::default(),
            failure: Mutex::new(None),
            migrating: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(reader, Arc::clone(&shared), tx.clone()));
        Self {
            writer: tokio::sync::Mutex::new(writer),
            shared,
            next_id: AtomicU64::new(0),
            notifications: tokio::sync::Mutex::new(rx),
            notify_tx: tx,
            reader: Mutex::new(reader),
        }
    }

    /// The migrating host's side of a bridge reconnect (spec §10.3), step one: marks the client
    /// migrating and drops its transport (the guest then redials). Calls still waiting keep
    /// waiting for [`BridgeClient::resume`].
    pub async fn detach(&self) {
        self.shared.migrating.store(true, Ordering::SeqCst);
        let mut w = self.writer.lock().await;
        // Half-close first: the guest sees the end, writes out what it had queued and closes,
        // so no response already sent is lost with the socket (bounded: 5 s, then dropped).
        let _ = w.shutdown().await;
        let mut old = std::mem::replace(&mut *lock(&self.reader), tokio::spawn(async {}));
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut old)
            .await
            .is_err()
        {
            old.abort();
            let _ = old.await;
        }
        let (closed, _) = tokio::io::duplex(1);
        let boxed: Box<dyn Stream> = Box::new(closed);
        let (_, writer) = tokio::io::split(boxed);
        *w = writer;
    }

    /// Step two: continues on `stream` (the guest's redial) and renegotiates. Requests still
    /// waiting keep their ids: the guest answers them on the new connection, and their callers
    /// get those answers. Ids keep counting from where they were.
    pub async fn resume<S: Stream>(
        &self,
        stream: S,
    ) -> Result<NegotiateProtocolResponse, HostError> {
        self.shared.migrating.store(true, Ordering::SeqCst);
        let boxed: Box<dyn Stream> = Box::new(stream);
        let (reader, writer) = tokio::io::split(boxed);
        {
            let mut w = self.writer.lock().await;
            let old = std::mem::replace(&mut *lock(&self.reader), tokio::spawn(async {}));
            old.abort();
            let _ = old.await;
            *w = writer;
        }
        *lock(&self.shared.failure) = None;
        self.shared.migrating.store(false, Ordering::SeqCst);
        *lock(&self.reader) = tokio::spawn(read_loop(
            reader,
            Arc::clone(&self.shared),
            self.notify_tx.clone(),
        ));
        self.negotiate().await
    }

    /// [`BridgeClient::detach`] then [`BridgeClient::resume`] on a stream already connected.
    pub async fn migrate<S: Stream>(
        &self,
        stream: S,
    ) -> Result<NegotiateProtocolResponse, HostError> {
        self.detach().await;
        self.resume(stream).await
    }

    /// Why the connection failed, if it has (a protocol violation by the guest, or EOF).
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// The id the next request will get.
    pub fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers interest in the response with `id`, for requests sent as raw bytes.
    pub fn expect(&self, id: u64) -> oneshot::Receiver<Frame> {
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, tx);
        rx
    }

    /// Writes raw bytes to the bridge (for malformed frames in tests).
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<(), HostError> {
        let mut w = self.writer.lock().await;
        w.write_all(bytes).await?;
        w.flush().await?;
        Ok(())
    }

    /// Sends a request with the given type and payload and waits for its response frame.
    pub async fn request_raw(
        &self,
        message_type: MessageType,
        payload: &[u8],
    ) -> Result<Frame, HostError> {
        let id = self.allocate_id();
        let rx = self.expect(id);
        self.send_bytes(&encode_frame(message_type, id, payload))
            .await?;
        rx.await.map_err(|_| {
            HostError::Closed(self.failure().unwrap_or_else(|| "connection closed".into()))
        })
    }

    /// Sends a typed request (JSON with a trailing newline, as Go's encoder writes it) and
    /// decodes the response; a nonzero `Result` becomes [`HostError::Guest`].
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        message_type: MessageType,
        request: &Req,
    ) -> Result<Resp, HostError> {
        let mut payload = serde_json::to_vec(request).map_err(HostError::Decode)?;
        payload.push(b'\n');
        let frame = self.request_raw(message_type, &payload).await?;
        let value = frame.json()?;
        let base: ResponseBase =
            serde_json::from_value(value.clone()).map_err(HostError::Decode)?;
        if base.result != 0 {
            return Err(HostError::Guest {
                hresult: base.hresult(),
                message: base.error_message,
                response: value,
            });
        }
        serde_json::from_value(value).map_err(HostError::Decode)
    }

    /// NegotiateProtocol for version 4, checking what the real host checks.
    pub async fn negotiate(&self) -> Result<NegotiateProtocolResponse, HostError> {
        let req = NegotiateProtocolRequest {
            base: RequestBase::new(""),
            minimum_version: PROTOCOL_V4,
            maximum_version: PROTOCOL_V4,
        };
        let resp: NegotiateProtocolResponse =
            self.call(MessageType::NEGOTIATE_PROTOCOL, &req).await?;
        if resp.version != PROTOCOL_V4 {
            return Err(HostError::Closed(format!(
                "guest selected protocol version {}",
                resp.version
            )));
        }
        Ok(resp)
    }

    pub async fn dump_stacks(&self) -> Result<String, HostError> {
        let resp: DumpStacksResponse = self
            .call(
                MessageType::DUMP_STACKS,
                &RequestBase::new(crate::protocol::NULL_CONTAINER_ID),
            )
            .await?;
        Ok(resp.guest_stacks)
    }

    pub async fn create_container(
        &self,
        id: &str,
        settings: &ContainerSettings,
    ) -> Result<(), HostError> {
        let config = crate::protocol::json::to_go_string(settings).map_err(HostError::Decode)?;
        let req = CreateRequest {
            base: RequestBase::new(id),
            container_config: config,
        };
        let _: CreateResponse = self.call(MessageType::CREATE, &req).await?;
        Ok(())
    }

    pub async fn start_container(&self, id: &str) -> Result<(), HostError> {
        let _: ResponseBase = self.call(MessageType::START, &RequestBase::new(id)).await?;
        Ok(())
    }

    pub async fn shutdown_graceful(&self, id: &str) -> Result<(), HostError> {
        let _: ResponseBase = self
            .call(MessageType::SHUTDOWN_GRACEFUL, &RequestBase::new(id))
            .await?;
        Ok(())
    }

    pub async fn shutdown_forced(&self, id: &str) -> Result<(), HostError> {
        let _: ResponseBase = self
            .call(MessageType::SHUTDOWN_FORCED, &RequestBase::new(id))
            .await?;
        Ok(())
    }

    /// Runs a process; returns its pid in the UVM.
    pub async fn execute_process(
        &self,
        container_id: &str,
        params: &ProcessParameters,
        ports: VsockStdioRelaySettings,
    ) -> Result<u32, HostError> {
        let parameters = crate::protocol::json::to_go_string(params).map_err(HostError::Decode)?;
        let req = ExecuteProcessRequest {
            base: RequestBase::new(container_id),
            settings: ExecuteProcessSettings {
                process_parameters: parameters,
                vsock_stdio_relay_settings: ports,
            },
        };
        let resp: ExecuteProcessResponse = self.call(MessageType::EXECUTE_PROCESS, &req).await?;
        Ok(resp.process_id)
    }

    /// Waits for a process; returns its exit code.
    pub async fn wait_for_process(
        &self,
        container_id: &str,
        pid: u32,
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        let req = WaitForProcessRequest {
            base: RequestBase::new(container_id),
            process_id: pid,
            timeout_in_ms: timeout_ms,
        };
        let resp: WaitForProcessResponse = self.call(MessageType::WAIT_FOR_PROCESS, &req).await?;
        Ok(resp.exit_code)
    }

    /// Signals a process; `None` is "kill" (no Options).
    pub async fn signal_process(
        &self,
        container_id: &str,
        pid: u32,
        signal: Option<i32>,
    ) -> Result<(), HostError> {
        let req = SignalProcessRequest {
            base: RequestBase::new(container_id),
            process_id: pid,
            options: signal.map(|signal| SignalProcessOptions { signal }),
        };
        let _: ResponseBase = self.call(MessageType::SIGNAL_PROCESS, &req).await?;
        Ok(())
    }

    pub async fn resize_console(
        &self,
        container_id: &str,
        pid: u32,
        height: u16,
        width: u16,
    ) -> Result<(), HostError> {
        let req = ResizeConsoleRequest {
            base: RequestBase::new(container_id),
            process_id: pid,
            height,
            width,
        };
        let _: ResponseBase = self.call(MessageType::RESIZE_CONSOLE, &req).await?;
        Ok(())
    }

    pub async fn get_properties(
        &self,
        container_id: &str,
        types: &[&str],
    ) -> Result<Properties, HostError> {
        let query = PropertyQuery {
            property_types: types.iter().map(|s| s.to_string()).collect(),
        };
        let req = GetPropertiesRequest {
            base: RequestBase::new(container_id),
            query: serde_json::to_string(&query).map_err(HostError::Decode)?,
        };
        let resp: GetPropertiesResponse = self.call(MessageType::GET_PROPERTIES, &req).await?;
        if resp.properties.is_empty() {
            return Ok(Properties::default());
        }
        serde_json::from_str(&resp.properties).map_err(HostError::Decode)
    }

    pub async fn modify_settings(
        &self,
        container_id: &str,
        request: ModifySettingRequest,
    ) -> Result<(), HostError> {
        let req = ModifySettingsRequest {
            base: RequestBase::new(container_id),
            request,
        };
        let _: ResponseBase = self.call(MessageType::MODIFY_SETTINGS, &req).await?;
        Ok(())
    }

    pub async fn delete_container_state(&self, id: &str) -> Result<(), HostError> {
        let _: ResponseBase = self
            .call(MessageType::DELETE_CONTAINER_STATE, &RequestBase::new(id))
            .await?;
        Ok(())
    }

    /// The next container notification, waiting at most `timeout`.
    pub async fn next_notification(
        &self,
        timeout: Duration,
    ) -> Result<ContainerNotification, HostError> {
        let mut rx = self.notifications.lock().await;
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(HostError::Closed(
                self.failure().unwrap_or_else(|| "connection closed".into()),
            )),
            Err(_) => Err(HostError::Timeout),
        }
    }

    /// A notification if one is already queued.
    pub async fn try_notification(&self) -> Option<ContainerNotification> {
        self.notifications.lock().await.try_recv().ok()
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    shared: Arc<Shared>,
    notifications: mpsc::UnboundedSender<ContainerNotification>,
) {
    let failure = loop {
        let mut bytes = [0u8; HEADER_LEN];
        if let Err(e) = reader.read_exact(&mut bytes).await {
            break format!("read: {e}");
        }
        let header = MessageHeader::decode(&bytes);
        // The host's receive limit: anything else tears the bridge down.
        let len = match header.payload_len(HOST_MAX_MESSAGE) {
            Ok(len) => len,
            Err(e) => break format!("invalid message size: {e}"),
        };
        let mut payload = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut payload).await {
            break format!("read: {e}");
        }
        let frame = Frame { header, payload };
        match header.message_type.kind() {
            Kind::Response => {
                let waiter = lock(&shared.pending).remove(&header.id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(frame);
                    }
                    None => break format!("response with unknown id {}", header.id),
                }
            }
            Kind::Notify if header.message_type == MessageType::NOTIFICATION => {
                match serde_json::from_slice::<ContainerNotification>(&frame.payload) {
                    Ok(n) => {
                        let _ = notifications.send(n);
                    }
                    Err(e) => break format!("bad notification: {e}"),
                }
            }
            Kind::Notify => break format!("unknown notification type {}", header.message_type),
            _ => break format!("unexpected message type {}", header.message_type),
        }
    };
    if shared.migrating.load(Ordering::SeqCst) {
        // The calls wait for the next transport.
        return;
    }
    *lock(&shared.failure) = Some(failure);
    // Fail every outstanding call.
    lock(&shared.pending).clear();
}
