//! A minimal QMP client: enough to hot-add and remove SCSI disks on a running VM.

use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::HostError;

/// A QMP session in command mode.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    /// Events read while waiting for a command's reply (QEMU may send an event before the
    /// reply of the command that caused it), for [`Qmp::wait_event`]; the newest 64.
    events: std::collections::VecDeque<Value>,
}

/// How long a device's removal may take (the guest must let go of it first).
const DEVICE_DELETED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Qmp {
    pub async fn connect(socket: &Path) -> Result<Self, HostError> {
        let (read, writer) = UnixStream::connect(socket).await?.into_split();
        let mut qmp = Self {
            reader: BufReader::new(read),
            writer,
            events: std::collections::VecDeque::new(),
        };
        qmp.read_message().await?; // greeting
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value, HostError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(HostError::Closed("QMP connection closed".into()));
        }
        serde_json::from_str(&line).map_err(HostError::Decode)
    }

    /// Runs a command and returns its `return` value; events in between are kept for
    /// [`Qmp::wait_event`].
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, HostError> {
        let mut text = json!({"execute": command, "arguments": arguments}).to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).await?;
        loop {
            let message = self.read_message().await?;
            if let Some(r) = message.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = message.get("error") {
                return Err(HostError::Closed(format!("QMP {command}: {e}")));
            }
            if message.get("event").is_some() {
                if self.events.len() == 64 {
                    self.events.pop_front();
                }
                self.events.push_back(message);
            }
        }
    }

    /// Waits for an event by name (for example `DEVICE_DELETED`) whose `data` has every field
    /// of `data` (`{}` for any), seen already or to come.
    pub async fn wait_event(&mut self, name: &str, data: &Value) -> Result<Value, HostError> {
        let matches = |message: &Value| {
            message.get("event").and_then(Value::as_str) == Some(name)
                && data.as_object().is_none_or(|want| {
                    want.iter()
                        .all(|(k, v)| message.pointer(&format!("/data/{k}")) == Some(v))
                })
        };
        if let Some(i) = self.events.iter().position(matches) {
            return self.events.remove(i).ok_or(HostError::Timeout);
        }
        loop {
            let message = self.read_message().await?;
            if matches(&message) {
                return Ok(message);
            }
        }
    }

    /// Attaches `image` (raw) as a SCSI disk at LUN `lun` of the controller `scsi0`.
    pub async fn add_scsi_disk(
        &mut self,
        image: &Path,
        lun: u8,
        read_only: bool,
    ) -> Result<(), HostError> {
        let node = format!("disk{lun}");
        self.execute(
            "blockdev-add",
            json!({"node-name": node, "driver": "raw", "read-only": read_only,
                   "file": {"driver": "file", "filename": image, "read-only": read_only}}),
        )
        .await?;
        self.execute(
            "device_add",
            json!({"driver": "scsi-hd", "id": format!("scsi-{node}"), "bus": "scsi0.0", "drive": node,
                   "channel": 0, "scsi-id": 0, "lun": lun}),
        )
        .await?;
        Ok(())
    }

    /// Detaches the disk at `lun` (after the guest unplugged it); its `DEVICE_DELETED` is
    /// waited for at most 30 s.
    pub async fn remove_scsi_disk(&mut self, lun: u8) -> Result<(), HostError> {
        let node = format!("disk{lun}");
        let id = format!("scsi-{node}");
        self.execute("device_del", json!({ "id": id })).await?;
        let which = json!({ "device": id });
        let deleted = self.wait_event("DEVICE_DELETED", &which);
        tokio::time::timeout(DEVICE_DELETED_TIMEOUT, deleted)
            .await
            .map_err(|_| HostError::Timeout)??;
        self.execute("blockdev-del", json!({"node-name": node}))
            .await?;
        Ok(())
    }
}
