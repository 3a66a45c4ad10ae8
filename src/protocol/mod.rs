//! The HCS bridge wire protocol: frame header, message identifiers, HRESULTs and the JSON
//! message types of both directions.
//!
//! This module performs no I/O and depends on nothing guest-only: the guest's `bridge` and the
//! host-side `host` client compile the same types, so the two sides cannot drift apart.

pub mod header;
pub mod hresult;
pub mod ids;
pub mod json;
pub mod messages;
pub mod scrub;

pub use header::{FrameError, MessageHeader, HEADER_LEN, HOST_MAX_MESSAGE, MAX_FRAME};
pub use hresult::Hresult;
pub use ids::MessageType;

/// The container id that addresses the utility VM itself.
pub const NULL_CONTAINER_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The only protocol version that exists.
pub const PROTOCOL_V4: u32 = 4;

/// vsock port of the bridge (the host listens, the guest dials CID 2).
pub const BRIDGE_PORT: u32 = 0x4000_0000;
/// vsock port of the boot entropy stream.
pub const ENTROPY_PORT: u32 = 1;
/// vsock port of the agent's log stream.
pub const LOG_PORT: u32 = 109;
/// vsock port of the host's Plan9 server.
pub const PLAN9_PORT: u32 = 564;
/// First port the host hands out for stdio relays.
pub const FIRST_STDIO_PORT: u32 = 0x4000_0001;
/// `TimeoutInMs` value meaning "wait forever".
pub const INFINITE_WAIT: u32 = u32::MAX;

/// The capabilities of an unprivileged container: what the host's specs carry by default
/// (hcsshim's and Docker's default set, in hcsshim's order), and what a security policy assumes
/// for a container whose rule names none (security-policy.md §9.5).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Returns true when `s` is a GUID in its canonical 8-4-4-4-12 hex form, the only form the
/// host accepts in `ActivityId`.
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_recognition() {
        assert!(is_guid(NULL_CONTAINER_ID));
        assert!(is_guid("DF6D0690-79e5-55b6-a5ec-c1e2f77f580a"));
        assert!(!is_guid(""));
        assert!(!is_guid("not-a-guid"));
        assert!(!is_guid("00000000-0000-0000-0000-00000000000g"));
        assert!(!is_guid("00000000x0000-0000-0000-000000000000"));
    }
}
