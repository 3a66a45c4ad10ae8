//! NegotiateProtocol: the only request served before negotiation, and only once.

use super::{decode, Reply};
use crate::bridge::BridgeError;
use crate::protocol::messages::{
    GcsCapabilities, NegotiateProtocolRequest, NegotiateProtocolResponse, ResponseBase,
};
use crate::protocol::PROTOCOL_V4;

pub fn handle(payload: &[u8]) -> Result<Reply, BridgeError> {
    let req: NegotiateProtocolRequest = decode(payload, "NegotiateProtocol")?;
    if req.maximum_version < PROTOCOL_V4 || req.minimum_version > PROTOCOL_V4 {
        return Err(BridgeError::UnsupportedProtocolVersion {
            min: req.minimum_version,
            max: req.maximum_version,
        });
    }
    Reply::new(&NegotiateProtocolResponse {
        base: ResponseBase::ok(&req.base.activity_id),
        version: PROTOCOL_V4.min(req.maximum_version),
        capabilities: GcsCapabilities::linux_guest(),
    })
}
