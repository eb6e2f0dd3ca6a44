//! STUN Binding (RFC 5389) without I/O, on the shared codec of the protocol crate: build a
//! plain Binding Request (no USERNAME, no MESSAGE-INTEGRITY) and parse the answer. The media server answers such a request on
//! every RTC port, so a successful exchange proves UDP gets through in both directions.

use std::net::SocketAddr;

pub use privatehub_protocol::stun::StunParseError as CodecError;
use privatehub_protocol::stun::{Class, Message, MessageBuilder, attribute, method};
pub use privatehub_protocol::stun::{HEADER_LEN, MAGIC_COOKIE, TransactionId};

/// A Binding Request with the given transaction id and no attributes.
pub fn binding_request(transaction_id: &TransactionId) -> Vec<u8> {
    MessageBuilder::new(method::BINDING, Class::Request, transaction_id).finish()
}

/// What came back for a Binding Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingResponse {
    /// Binding Success Response: the address the server saw the request come from.
    Success {
        mapped: SocketAddr,
        /// `false` when only the legacy MAPPED-ADDRESS attribute was present.
        xor_mapped: bool,
    },
    /// Binding Error Response with its ERROR-CODE.
    Error { code: u16, reason: String },
}

/// Why a datagram is not a valid answer to our request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunParseError {
    /// Not a well-formed STUN message at all.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A STUN message for another transaction (e.g. a stray packet).
    #[error("transaction id does not match the request")]
    WrongTransaction,
    /// A message type other than Binding Success/Error Response.
    #[error("unexpected STUN message type 0x{0:04x}")]
    UnexpectedType(u16),
    /// A success response that carries neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS.
    #[error("success response without XOR-MAPPED-ADDRESS")]
    NoMappedAddress,
}

/// Parses `datagram` as the answer to the Binding Request sent with `transaction_id`.
pub fn parse_binding_response(
    datagram: &[u8],
    transaction_id: &TransactionId,
) -> Result<BindingResponse, StunParseError> {
    let message = Message::parse(datagram)?;
    if &message.transaction_id != transaction_id {
        return Err(StunParseError::WrongTransaction);
    }
    match (message.method, message.class) {
        (method::BINDING, Class::Success) => {
            if let Some(mapped) = message.xor_address(attribute::XOR_MAPPED_ADDRESS)? {
                return Ok(BindingResponse::Success {
                    mapped,
                    xor_mapped: true,
                });
            }
            if let Some(mapped) = message.mapped_address()? {
                return Ok(BindingResponse::Success {
                    mapped,
                    xor_mapped: false,
                });
            }
            Err(StunParseError::NoMappedAddress)
        }
        (method::BINDING, Class::Error) => {
            let (code, reason) = message
                .error_code()?
                .unwrap_or((0, String::from("no ERROR-CODE attribute")));
            Ok(BindingResponse::Error { code, reason })
        }
        _ => Err(StunParseError::UnexpectedType(u16::from_be_bytes([
            datagram[0],
            datagram[1],
        ]))),
    }
}

#[cfg(test)]
mod tests;
