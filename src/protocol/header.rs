//! The 16-byte little-endian frame header and the size limits around it.

use super::MessageType;

/// Length of the header that starts every frame.
pub const HEADER_LEN: usize = 16;
/// The host tears the bridge down on any message larger than this (header included), so every
/// response and notification the guest sends must fit.
pub const HOST_MAX_MESSAGE: usize = 0x10000;
/// Largest request the guest accepts. The host never sends more than a few hundred KiB; a
/// bigger size is a corrupt or hostile header and is refused before anything is allocated.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// `{u32 type, u32 size, u64 id}`, little-endian, no padding. `size` counts the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    pub message_type: MessageType,
    pub size: u32,
    pub id: u64,
}

/// Why a header cannot be followed by a payload as-is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message size {0} is smaller than the 16-byte header")]
    TooSmall(u32),
    #[error("message size {size} exceeds the limit of {limit} bytes")]
    TooLarge { size: u32, limit: usize },
}

impl MessageHeader {
    /// Header for a message with `payload_len` bytes of JSON.
    pub fn for_payload(message_type: MessageType, id: u64, payload_len: usize) -> Self {
        let size = u32::try_from(HEADER_LEN + payload_len).unwrap_or(u32::MAX);
        Self {
            message_type,
            size,
            id,
        }
    }

    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let [t0, t1, t2, t3, s0, s1, s2, s3, i0, i1, i2, i3, i4, i5, i6, i7] = *bytes;
        Self {
            message_type: MessageType(u32::from_le_bytes([t0, t1, t2, t3])),
            size: u32::from_le_bytes([s0, s1, s2, s3]),
            id: u64::from_le_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.message_type.0.to_le_bytes());
        out[4..8].copy_from_slice(&self.size.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out
    }

    /// Number of payload bytes that follow, once the size is known to be sane.
    pub fn payload_len(&self, limit: usize) -> Result<usize, FrameError> {
        let size = self.size as usize;
        if size < HEADER_LEN {
            return Err(FrameError::TooSmall(self.size));
        }
        if size > limit {
            return Err(FrameError::TooLarge {
                size: self.size,
                limit,
            });
        }
        Ok(size - HEADER_LEN)
    }
}

/// Encodes a whole frame: header followed by the payload.
pub fn encode_frame(message_type: MessageType, id: u64, payload: &[u8]) -> Vec<u8> {
    let header = MessageHeader::for_payload(message_type, id, payload.len());
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_3_6_negotiate_header_bytes() {
        let bytes = [
            0x01, 0x0b, 0x10, 0x10, 0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let h = MessageHeader::decode(&bytes);
        assert_eq!(h.message_type, MessageType::NEGOTIATE_PROTOCOL);
        assert_eq!(h.size, 161);
        assert_eq!(h.id, 0);
        assert_eq!(h.encode(), bytes);
        assert_eq!(h.payload_len(MAX_FRAME), Ok(145));
    }

    #[test]
    fn spec_3_6_response_header_bytes() {
        let h = MessageHeader::for_payload(MessageType(0x20100b01), 0, 342 - 16);
        assert_eq!(
            h.encode(),
            [0x01, 0x0b, 0x10, 0x20, 0x56, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn id_is_little_endian_u64() {
        let h = MessageHeader {
            message_type: MessageType(1),
            size: 16,
            id: 0x0102_0304_0506_0708,
        };
        assert_eq!(&h.encode()[8..], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn sizes_are_bounded() {
        let mut h = MessageHeader {
            message_type: MessageType(1),
            size: 15,
            id: 0,
        };
        assert_eq!(h.payload_len(MAX_FRAME), Err(FrameError::TooSmall(15)));
        h.size = 0;
        assert_eq!(h.payload_len(MAX_FRAME), Err(FrameError::TooSmall(0)));
        h.size = 16;
        assert_eq!(h.payload_len(MAX_FRAME), Ok(0));
        h.size = u32::MAX;
        assert_eq!(
            h.payload_len(MAX_FRAME),
            Err(FrameError::TooLarge {
                size: u32::MAX,
                limit: MAX_FRAME
            })
        );
        h.size = 0x10001;
        assert!(matches!(
            h.payload_len(HOST_MAX_MESSAGE),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
