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
    /// What was read of a message not yet whole.
    partial: Vec<u8>,
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
            partial: Vec::new(),
        };
        qmp.read_message().await?; // greeting
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    /// The next message. Cancel-safe: a line cut off by a timeout stays in `partial` and is
    /// completed by the next read, so the session never reads a reply as another's.
    async fn read_message(&mut self) -> Result<Value, HostError> {
        if self.reader.read_until(b'\n', &mut self.partial).await? == 0 {
            return Err(HostError::Closed("QMP connection closed".into()));
        }
        let line = std::mem::take(&mut self.partial);
        serde_json::from_slice(&line).map_err(HostError::Decode)
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
        let added = self
            .execute(
                "device_add",
                json!({"driver": "scsi-hd", "id": format!("scsi-{node}"), "bus": "scsi0.0", "drive": node,
                       "channel": 0, "scsi-id": 0, "lun": lun}),
            )
            .await;
        if let Err(e) = added {
            // The node alone would make the next attach at this LUN fail.
            let _ = self
                .execute("blockdev-del", json!({"node-name": node}))
                .await;
            return Err(e);
        }
        Ok(())
    }

    /// Detaches the disk at `lun` (after the guest unplugged it); its `DEVICE_DELETED` is
    /// waited for at most 30 s.
    pub async fn remove_scsi_disk(&mut self, lun: u8) -> Result<(), HostError> {
        let node = format!("disk{lun}");
        let id = format!("scsi-{node}");
        // An event of an earlier life of this id (a removal that timed out) is not this one's.
        self.events
            .retain(|e| e.pointer("/data/device").and_then(Value::as_str) != Some(&id));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A session in command mode with QEMU's end of the socket.
    fn session() -> (Qmp, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (read, writer) = ours.into_split();
        let qmp = Qmp {
            reader: BufReader::new(read),
            writer,
            events: std::collections::VecDeque::new(),
            partial: Vec::new(),
        };
        (qmp, theirs)
    }

    #[tokio::test]
    async fn a_message_cut_by_a_timeout_is_finished_by_the_next_read() {
        let (mut qmp, mut theirs) = session();
        theirs.write_all(br#"{"return": {"a""#).await.unwrap();
        let cut =
            tokio::time::timeout(std::time::Duration::from_millis(50), qmp.read_message()).await;
        assert!(cut.is_err(), "the message is not whole yet");
        theirs
            .write_all(b": 1}}\n{\"return\": {}}\n")
            .await
            .unwrap();
        assert_eq!(
            qmp.read_message().await.unwrap(),
            json!({"return": {"a": 1}})
        );
        assert_eq!(qmp.read_message().await.unwrap(), json!({"return": {}}));
    }

    #[tokio::test]
    async fn an_event_seen_during_a_command_is_kept_and_matched_by_device() {
        let (mut qmp, mut theirs) = session();
        // QEMU sends the unplug's event before the command's reply.
        theirs
            .write_all(
                b"{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"scsi-disk2\"}}\n\
                  {\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"scsi-disk1\"}}\n\
                  {\"return\": {}}\n",
            )
            .await
            .unwrap();
        qmp.execute("device_del", json!({"id": "scsi-disk1"}))
            .await
            .unwrap();
        let event = qmp
            .wait_event("DEVICE_DELETED", &json!({"device": "scsi-disk1"}))
            .await
            .unwrap();
        assert_eq!(event["data"]["device"], "scsi-disk1");
        assert_eq!(qmp.events.len(), 1, "the other device's event stays");
    }
}
