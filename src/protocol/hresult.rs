//! HRESULT values used on the wire (signed 32-bit).

use std::fmt;

/// A Windows HRESULT as the bridge carries it: a signed 32-bit integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hresult(pub i32);

const fn hr(bits: u32) -> Hresult {
    Hresult(i32::from_ne_bytes(bits.to_ne_bytes()))
}

impl Hresult {
    pub const OK: Self = Hresult(0);
    /// Unknown message type, request before negotiation, second negotiation.
    pub const NOT_IMPL: Self = hr(0x8000_4001);
    /// Any error without a more specific code.
    pub const FAIL: Self = hr(0x8000_4005);
    /// Process not found or already exited, namespace not found.
    pub const NOT_FOUND: Self = hr(0x8007_0490);
    pub const INVALID_ARG: Self = hr(0x8007_0057);
    /// WaitForProcess timed out.
    pub const TIMEOUT: Self = hr(0xC037_0109);
    pub const UNKNOWN_MESSAGE: Self = hr(0xC037_010B);
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = hr(0xC037_010C);
    /// Any JSON decode error, or a schema version below 2.1.
    pub const INVALID_JSON: Self = hr(0xC037_010D);
    /// Unknown container id.
    pub const SYSTEM_NOT_FOUND: Self = hr(0xC037_010E);
    pub const SYSTEM_ALREADY_EXISTS: Self = hr(0xC037_010F);
    pub const SYSTEM_ALREADY_STOPPED: Self = hr(0xC037_0110);
    pub const INVALID_STATE: Self = hr(0x8037_0105);

    /// The unsigned bit pattern, as printed in messages.
    pub fn bits(self) -> u32 {
        u32::from_ne_bytes(self.0.to_ne_bytes())
    }

    pub fn is_ok(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for Hresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.bits())
    }
}

impl fmt::Display for Hresult {
    /// Lower-case hex as the original prints it: `0xc037010e`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_match_spec_table() {
        assert_eq!(Hresult::NOT_IMPL.0, -2147467263);
        assert_eq!(Hresult::FAIL.0, -2147467259);
        assert_eq!(Hresult::NOT_FOUND.0, -2147023728);
        assert_eq!(Hresult::INVALID_ARG.0, -2147024809);
        assert_eq!(Hresult::TIMEOUT.0, -1070137079);
        assert_eq!(Hresult::UNKNOWN_MESSAGE.0, -1070137077);
        assert_eq!(Hresult::UNSUPPORTED_PROTOCOL_VERSION.0, -1070137076);
        assert_eq!(Hresult::INVALID_JSON.0, -1070137075);
        assert_eq!(Hresult::SYSTEM_NOT_FOUND.0, -1070137074);
        assert_eq!(Hresult::SYSTEM_ALREADY_EXISTS.0, -1070137073);
        assert_eq!(Hresult::SYSTEM_ALREADY_STOPPED.0, -1070137072);
        assert_eq!(Hresult::INVALID_STATE.0, -2143878907);
    }

    #[test]
    fn display_is_lower_hex() {
        assert_eq!(Hresult::SYSTEM_NOT_FOUND.to_string(), "0xc037010e");
        assert_eq!(Hresult::NOT_IMPL.to_string(), "0x80004001");
    }
}
