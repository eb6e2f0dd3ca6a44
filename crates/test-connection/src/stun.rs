//! STUN Binding (RFC 5389) without I/O: build a plain Binding Request (no USERNAME, no
//! MESSAGE-INTEGRITY) and parse the answer. The media server answers such a request on
//! every RTC port, so a successful exchange proves UDP gets through in both directions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed value in bytes 4..8 of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header; a Binding Request without attributes is exactly this.
pub const HEADER_LEN: usize = 20;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// The 96-bit transaction id that ties a response to its request.
pub type TransactionId = [u8; 12];

/// A Binding Request with the given transaction id and no attributes.
pub fn binding_request(transaction_id: &TransactionId) -> [u8; HEADER_LEN] {
    let mut message = [0u8; HEADER_LEN];
    message[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Bytes 2..4: message length 0 (no attributes).
    message[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    message[8..20].copy_from_slice(transaction_id);
    message
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
    /// Shorter than the 20-byte header.
    #[error("{0} bytes is too short for a STUN message")]
    TooShort(usize),
    /// The top two bits or the magic cookie are wrong: something else answered.
    #[error("not a STUN message (wrong leading bits or magic cookie)")]
    NotStun,
    /// The header's length field disagrees with the datagram.
    #[error("STUN length field says {declared} bytes of attributes but {actual} arrived")]
    BadLength { declared: usize, actual: usize },
    /// A STUN message for another transaction (e.g. a stray packet).
    #[error("transaction id does not match the request")]
    WrongTransaction,
    /// A message type other than Binding Success/Error Response.
    #[error("unexpected STUN message type 0x{0:04x}")]
    UnexpectedType(u16),
    /// An attribute runs past the end or has an impossible size.
    #[error("malformed STUN attribute 0x{0:04x}")]
    BadAttribute(u16),
    /// A success response that carries neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS.
    #[error("success response without XOR-MAPPED-ADDRESS")]
    NoMappedAddress,
}

/// Parses `datagram` as the answer to the Binding Request sent with `transaction_id`.
pub fn parse_binding_response(
    datagram: &[u8],
    transaction_id: &TransactionId,
) -> Result<BindingResponse, StunParseError> {
    if datagram.len() < HEADER_LEN {
        return Err(StunParseError::TooShort(datagram.len()));
    }
    let message_type = u16::from_be_bytes([datagram[0], datagram[1]]);
    let cookie = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    if message_type & 0xC000 != 0 || cookie != MAGIC_COOKIE {
        return Err(StunParseError::NotStun);
    }
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = &datagram[HEADER_LEN..];
    if declared != body.len() || declared % 4 != 0 {
        return Err(StunParseError::BadLength {
            declared,
            actual: body.len(),
        });
    }
    if &datagram[8..20] != transaction_id {
        return Err(StunParseError::WrongTransaction);
    }
    let attributes = attributes(body)?;
    match message_type {
        BINDING_SUCCESS => {
            let find = |wanted: u16| attributes.iter().find(|(kind, _)| *kind == wanted);
            if let Some((kind, value)) = find(ATTR_XOR_MAPPED_ADDRESS) {
                let mapped = decode_address(*kind, value, Some(transaction_id))?;
                return Ok(BindingResponse::Success {
                    mapped,
                    xor_mapped: true,
                });
            }
            if let Some((kind, value)) = find(ATTR_MAPPED_ADDRESS) {
                let mapped = decode_address(*kind, value, None)?;
                return Ok(BindingResponse::Success {
                    mapped,
                    xor_mapped: false,
                });
            }
            Err(StunParseError::NoMappedAddress)
        }
        BINDING_ERROR => {
            let (code, reason) = attributes
                .iter()
                .find(|(kind, _)| *kind == ATTR_ERROR_CODE)
                .map(|(_, value)| decode_error_code(value))
                .transpose()?
                .unwrap_or((0, String::from("no ERROR-CODE attribute")));
            Ok(BindingResponse::Error { code, reason })
        }
        other => Err(StunParseError::UnexpectedType(other)),
    }
}

/// Splits the attribute section into `(type, value)` pairs (values without padding).
fn attributes(mut body: &[u8]) -> Result<Vec<(u16, &[u8])>, StunParseError> {
    let mut found = Vec::new();
    while !body.is_empty() {
        if body.len() < 4 {
            return Err(StunParseError::BadAttribute(0));
        }
        let kind = u16::from_be_bytes([body[0], body[1]]);
        let length = usize::from(u16::from_be_bytes([body[2], body[3]]));
        let padded = length.div_ceil(4) * 4;
        if body.len() < 4 + padded {
            return Err(StunParseError::BadAttribute(kind));
        }
        found.push((kind, &body[4..4 + length]));
        body = &body[4 + padded..];
    }
    Ok(found)
}

/// Decodes (XOR-)MAPPED-ADDRESS; `xor_with` is the transaction id for the XOR variant.
fn decode_address(
    kind: u16,
    value: &[u8],
    xor_with: Option<&TransactionId>,
) -> Result<SocketAddr, StunParseError> {
    if value.len() < 4 {
        return Err(StunParseError::BadAttribute(kind));
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    if xor_with.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let address = &value[4..];
    let ip = match (value[1], address.len()) {
        (FAMILY_IPV4, 4) => {
            let mut octets = [0u8; 4];
            octets.copy_from_slice(address);
            if xor_with.is_some() {
                for (octet, mask) in octets.iter_mut().zip(cookie) {
                    *octet ^= mask;
                }
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (FAMILY_IPV6, 16) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(address);
            if let Some(transaction_id) = xor_with {
                let mask = cookie.iter().chain(transaction_id.iter());
                for (octet, mask) in octets.iter_mut().zip(mask) {
                    *octet ^= mask;
                }
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Err(StunParseError::BadAttribute(kind)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn decode_error_code(value: &[u8]) -> Result<(u16, String), StunParseError> {
    if value.len() < 4 {
        return Err(StunParseError::BadAttribute(ATTR_ERROR_CODE));
    }
    let code = u16::from(value[2] & 0x07) * 100 + u16::from(value[3]);
    let reason = String::from_utf8_lossy(&value[4..]).into_owned();
    Ok((code, reason))
}

#[cfg(test)]
mod tests;
