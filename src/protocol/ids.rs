//! Message identifiers: `type(4) | category(8) | message id(12) | version(8)`.

use std::fmt;

/// A 32-bit message identifier as it appears in the frame header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType(pub u32);

const TYPE_MASK: u32 = 0xF000_0000;
const TYPE_REQUEST: u32 = 0x1000_0000;
const TYPE_RESPONSE: u32 = 0x2000_0000;
const TYPE_NOTIFY: u32 = 0x3000_0000;

/// The kind nibble of an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    None,
    Request,
    Response,
    Notify,
    Other(u32),
}

impl MessageType {
    pub const CREATE: Self = Self(0x1010_0101);
    pub const START: Self = Self(0x1010_0201);
    pub const SHUTDOWN_GRACEFUL: Self = Self(0x1010_0301);
    pub const SHUTDOWN_FORCED: Self = Self(0x1010_0401);
    pub const EXECUTE_PROCESS: Self = Self(0x1010_0501);
    pub const WAIT_FOR_PROCESS: Self = Self(0x1010_0601);
    pub const SIGNAL_PROCESS: Self = Self(0x1010_0701);
    pub const RESIZE_CONSOLE: Self = Self(0x1010_0801);
    pub const GET_PROPERTIES: Self = Self(0x1010_0901);
    pub const MODIFY_SETTINGS: Self = Self(0x1010_0a01);
    pub const NEGOTIATE_PROTOCOL: Self = Self(0x1010_0b01);
    pub const DUMP_STACKS: Self = Self(0x1010_0c01);
    pub const DELETE_CONTAINER_STATE: Self = Self(0x1010_0d01);
    /// Host-defined, not handled by a Linux guest.
    pub const UPDATE_CONTAINER: Self = Self(0x1010_0e01);
    /// Host-defined (WCOW sidecar), not handled by a Linux guest.
    pub const LIFECYCLE_NOTIFICATION: Self = Self(0x1010_0f01);
    /// Host-defined (WCOW, service category), not handled by a Linux guest.
    pub const MODIFY_SERVICE_SETTINGS: Self = Self(0x1020_0101);
    /// The container notification, the only notification the host accepts.
    pub const NOTIFICATION: Self = Self(0x3010_0101);

    pub fn kind(self) -> Kind {
        match self.0 & TYPE_MASK {
            0 => Kind::None,
            TYPE_REQUEST => Kind::Request,
            TYPE_RESPONSE => Kind::Response,
            TYPE_NOTIFY => Kind::Notify,
            other => Kind::Other(other),
        }
    }

    /// The response identifier the guest sends for this request identifier. It is computed the
    /// same way for every identifier, known or not.
    pub fn response(self) -> Self {
        Self(TYPE_RESPONSE | (self.0 & !TYPE_MASK))
    }

    /// The request identifier this response answers.
    pub fn request(self) -> Self {
        Self(TYPE_REQUEST | (self.0 & !TYPE_MASK))
    }

    /// The name the original guest prints for an identifier (its `String()`), used in the text
    /// of "function not supported" errors. Identifiers without a name print in decimal.
    pub fn go_name(self) -> String {
        let name = match self.0 {
            0 => "None",
            0x1010_0101 => "ComputeSystemCreateV1",
            0x1010_0201 => "ComputeSystemStartV1",
            0x1010_0301 => "ComputeSystemShutdownGracefulV1",
            0x1010_0401 => "ComputeSystemShutdownForcedV1",
            0x1010_0501 => "ComputeSystemExecuteProcessV1",
            0x1010_0601 => "ComputeSystemWaitForProcessV1",
            0x1010_0701 => "ComputeSystemSignalProcessV1",
            0x1010_0801 => "ComputeSystemResizeConsoleV1",
            0x1010_0901 => "ComputeSystemGetPropertiesV1",
            0x1010_0a01 => "ComputeSystemModifySettingsV1",
            0x1010_0b01 => "ComputeSystemNegotiateProtocolV1",
            0x1010_0c01 => "ComputeSystemDumpStacksV1",
            0x1010_0d01 => "ComputeSystemDeleteContainerStateV1",
            0x2010_0101 => "ComputeSystemResponseCreateV1",
            0x2010_0201 => "ComputeSystemResponseStartV1",
            0x2010_0301 => "ComputeSystemResponseShutdownGracefulV1",
            0x2010_0401 => "ComputeSystemResponseShutdownForcedV1",
            0x2010_0501 => "ComputeSystemResponseExecuteProcessV1",
            0x2010_0601 => "ComputeSystemResponseWaitForProcessV1",
            0x2010_0701 => "ComputeSystemResponseSignalProcessV1",
            0x2010_0801 => "ComputeSystemResponseResizeConsoleV1",
            0x2010_0901 => "ComputeSystemResponseGetPropertiesV1",
            0x2010_0a01 => "ComputeSystemResponseModifySettingsV1",
            0x2010_0b01 => "ComputeSystemResponseNegotiateProtocolV1",
            0x2010_0c01 => "ComputeSystemResponseDumpStacksV1",
            0x3010_0101 => "ComputeSystemNotificationV1",
            other => return other.to_string(),
        };
        name.to_string()
    }

    /// A short name for logs and stack dumps.
    pub fn short_name(self) -> &'static str {
        match self.request().0 {
            0x1010_0101 => "Create",
            0x1010_0201 => "Start",
            0x1010_0301 => "ShutdownGraceful",
            0x1010_0401 => "ShutdownForced",
            0x1010_0501 => "ExecuteProcess",
            0x1010_0601 => "WaitForProcess",
            0x1010_0701 => "SignalProcess",
            0x1010_0801 => "ResizeConsole",
            0x1010_0901 => "GetProperties",
            0x1010_0a01 => "ModifySettings",
            0x1010_0b01 => "NegotiateProtocol",
            0x1010_0c01 => "DumpStacks",
            0x1010_0d01 => "DeleteContainerState",
            0x1010_0e01 => "UpdateContainer",
            0x1010_0f01 => "LifecycleNotification",
            0x1020_0101 => "ModifyServiceSettings",
            _ => "Unknown",
        }
    }
}

impl fmt::Debug for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_match_spec_table() {
        let table = [
            (0x1010_0101, 0x2010_0101),
            (0x1010_0b01, 0x2010_0b01),
            (0x1010_0d01, 0x2010_0d01),
            (0x1010_0e01, 0x2010_0e01),
            (0x1020_0101, 0x2020_0101),
            // The guest does not check the kind nibble: a notification id still maps.
            (0x3010_0101, 0x2010_0101),
            (0x1010_0001, 0x2010_0001),
        ];
        for (req, resp) in table {
            assert_eq!(MessageType(req).response(), MessageType(resp));
        }
        assert_eq!(
            MessageType(0x2010_0601).request(),
            MessageType::WAIT_FOR_PROCESS
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(MessageType::CREATE.kind(), Kind::Request);
        assert_eq!(MessageType::CREATE.response().kind(), Kind::Response);
        assert_eq!(MessageType::NOTIFICATION.kind(), Kind::Notify);
        assert_eq!(MessageType(0x0010_0101).kind(), Kind::None);
        assert_eq!(MessageType(0x5010_0101).kind(), Kind::Other(0x5000_0000));
    }

    #[test]
    fn go_names_as_seen_in_traces() {
        assert_eq!(
            MessageType::DUMP_STACKS.go_name(),
            "ComputeSystemDumpStacksV1"
        );
        assert_eq!(
            MessageType::NEGOTIATE_PROTOCOL.go_name(),
            "ComputeSystemNegotiateProtocolV1"
        );
        assert_eq!(MessageType::UPDATE_CONTAINER.go_name(), "269487617");
        assert_eq!(MessageType::LIFECYCLE_NOTIFICATION.go_name(), "269487873");
        assert_eq!(MessageType::MODIFY_SERVICE_SETTINGS.go_name(), "270532865");
        assert_eq!(MessageType(0x1010_0001).go_name(), "269484033");
    }
}
