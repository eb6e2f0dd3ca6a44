//! The one STUN codec (RFC 5389, with the TURN attributes of RFC 5766) for the tools that
//! speak STUN as clients: build a request with optional MESSAGE-INTEGRITY, parse any
//! message into its attributes, and decode addresses and errors. No I/O.
//!
//! The media server's own fast-path classifier (`sfu/stun.rs`) stays apart: it looks at
//! a few bytes per datagram and never allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;
use md5::{Digest, Md5};

/// The fixed value in bytes 4..8 of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;

/// The 96-bit transaction id that ties a response to its request.
pub type TransactionId = [u8; 12];

/// Methods used here.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
}

/// Attribute types used here.
pub mod attribute {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const LIFETIME: u16 = 0x000D;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
}

/// The class bits of a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// The 16-bit message type of `method` and `class` (the class bits sit at 4 and 8).
pub fn message_type(method: u16, class: Class) -> u16 {
    let class_bits = match class {
        Class::Request => 0x0000,
        Class::Indication => 0x0010,
        Class::Success => 0x0100,
        Class::Error => 0x0110,
    };
    let method = method & 0x0FFF;
    ((method & 0x0F80) << 2) | ((method & 0x0070) << 1) | (method & 0x000F) | class_bits
}

fn split_type(message_type: u16) -> (u16, Class) {
    let class = match message_type & 0x0110 {
        0x0000 => Class::Request,
        0x0010 => Class::Indication,
        0x0100 => Class::Success,
        _ => Class::Error,
    };
    let method =
        (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2);
    (method, class)
}

/// Builds one message, attribute by attribute.
pub struct MessageBuilder {
    bytes: Vec<u8>,
}

impl MessageBuilder {
    pub fn new(method: u16, class: Class, transaction_id: &TransactionId) -> MessageBuilder {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&message_type(method, class).to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(transaction_id);
        MessageBuilder { bytes }
    }

    /// Appends one attribute, padded to four bytes. Values are at most 65535 bytes.
    pub fn attribute(mut self, kind: u16, value: &[u8]) -> MessageBuilder {
        let length = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&kind.to_be_bytes());
        self.bytes.extend_from_slice(&length.to_be_bytes());
        self.bytes.extend_from_slice(&value[..usize::from(length)]);
        let padding = (4 - usize::from(length) % 4) % 4;
        self.bytes.extend(std::iter::repeat_n(0, padding));
        self
    }

    /// The message as it stands.
    pub fn finish(mut self) -> Vec<u8> {
        self.set_length(0);
        self.bytes
    }

    /// The message with MESSAGE-INTEGRITY (HMAC-SHA1 under `key`) as its last attribute.
    pub fn finish_with_integrity(mut self, key: &[u8]) -> Vec<u8> {
        // The length counts the integrity attribute (24 bytes) before it is computed.
        self.set_length(24);
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let tag = hmac::sign(&key, &self.bytes);
        let with_integrity = self.attribute(attribute::MESSAGE_INTEGRITY, tag.as_ref());
        with_integrity.finish()
    }

    fn set_length(&mut self, extra: usize) {
        let length = u16::try_from(self.bytes.len() - HEADER_LEN + extra).unwrap_or(u16::MAX);
        self.bytes[2..4].copy_from_slice(&length.to_be_bytes());
    }
}

/// RFC 5389 long-term credential key: MD5 of `username:realm:password`.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut digest = Md5::new();
    digest.update(format!("{username}:{realm}:{password}").as_bytes());
    digest.finalize().into()
}

/// The address as XOR-MAPPED-ADDRESS (and its TURN siblings) carry it.
pub fn encode_xor_address(address: SocketAddr, transaction_id: &TransactionId) -> Vec<u8> {
    let port = address.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut mask = MAGIC_COOKIE.to_be_bytes().to_vec();
    mask.extend_from_slice(transaction_id);
    let (family, octets): (u8, Vec<u8>) = match address.ip() {
        IpAddr::V4(ip) => (FAMILY_IPV4, ip.octets().to_vec()),
        IpAddr::V6(ip) => (FAMILY_IPV6, ip.octets().to_vec()),
    };
    let mut value = vec![0, family];
    value.extend_from_slice(&port.to_be_bytes());
    value.extend(octets.iter().zip(mask).map(|(octet, mask)| octet ^ mask));
    value
}

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// Why bytes are not a usable STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunParseError {
    #[error("{0} bytes is too short for a STUN message")]
    TooShort(usize),
    #[error("not a STUN message (wrong leading bits or magic cookie)")]
    NotStun,
    #[error("STUN length field says {declared} bytes of attributes but {actual} arrived")]
    BadLength { declared: usize, actual: usize },
    #[error("malformed STUN attribute 0x{0:04x}")]
    BadAttribute(u16),
}

/// A parsed message, borrowing its attribute values.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub method: u16,
    pub class: Class,
    pub transaction_id: TransactionId,
    attributes: Vec<(u16, &'a [u8])>,
}

/// The whole length of the message whose header starts `bytes` (for TCP streams, where
/// STUN messages follow each other without framing); `None` if it is not STUN.
pub fn message_length(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 8 || bytes[0] & 0xC0 != 0 || bytes[4..8] != MAGIC_COOKIE.to_be_bytes() {
        return None;
    }
    Some(HEADER_LEN + usize::from(u16::from_be_bytes([bytes[2], bytes[3]])))
}

impl<'a> Message<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, StunParseError> {
        if bytes.len() < HEADER_LEN {
            return Err(StunParseError::TooShort(bytes.len()));
        }
        let message_type = u16::from_be_bytes([bytes[0], bytes[1]]);
        if message_type & 0xC000 != 0 || bytes[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(StunParseError::NotStun);
        }
        let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let mut body = &bytes[HEADER_LEN..];
        if declared != body.len() || declared % 4 != 0 {
            return Err(StunParseError::BadLength {
                declared,
                actual: body.len(),
            });
        }
        let mut attributes = Vec::new();
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
            attributes.push((kind, &body[4..4 + length]));
            body = &body[4 + padded..];
        }
        let (method, class) = split_type(message_type);
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&bytes[8..20]);
        Ok(Message {
            method,
            class,
            transaction_id,
            attributes,
        })
    }

    /// Every attribute in order, values without padding.
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + '_ {
        self.attributes.iter().copied()
    }

    /// The first attribute of type `kind`.
    pub fn attribute(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes
            .iter()
            .find(|(found, _)| *found == kind)
            .map(|(_, value)| *value)
    }

    /// An attribute holding text (REALM, NONCE, ...), lossily decoded.
    pub fn text(&self, kind: u16) -> Option<String> {
        self.attribute(kind)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }

    /// An XOR-encoded address attribute (XOR-MAPPED-ADDRESS, XOR-RELAYED-ADDRESS, ...).
    pub fn xor_address(&self, kind: u16) -> Result<Option<SocketAddr>, StunParseError> {
        self.attribute(kind)
            .map(|value| decode_address(kind, value, Some(&self.transaction_id)))
            .transpose()
    }

    /// A plain MAPPED-ADDRESS (older servers).
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, StunParseError> {
        self.attribute(attribute::MAPPED_ADDRESS)
            .map(|value| decode_address(attribute::MAPPED_ADDRESS, value, None))
            .transpose()
    }

    /// ERROR-CODE as (code, reason phrase).
    pub fn error_code(&self) -> Result<Option<(u16, String)>, StunParseError> {
        let Some(value) = self.attribute(attribute::ERROR_CODE) else {
            return Ok(None);
        };
        if value.len() < 4 {
            return Err(StunParseError::BadAttribute(attribute::ERROR_CODE));
        }
        let code = u16::from(value[2] & 0x07) * 100 + u16::from(value[3]);
        Ok(Some((
            code,
            String::from_utf8_lossy(&value[4..]).into_owned(),
        )))
    }
}

/// Decodes (XOR-)MAPPED-ADDRESS; `xor_with` is the transaction id for the XOR variants.
fn decode_address(
    kind: u16,
    value: &[u8],
    xor_with: Option<&TransactionId>,
) -> Result<SocketAddr, StunParseError> {
    if value.len() < 4 {
        return Err(StunParseError::BadAttribute(kind));
    }
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    let mut mask = MAGIC_COOKIE.to_be_bytes().to_vec();
    if let Some(transaction_id) = xor_with {
        port ^= (MAGIC_COOKIE >> 16) as u16;
        mask.extend_from_slice(transaction_id);
    } else {
        mask = vec![0; 16];
    }
    let address: Vec<u8> = value[4..]
        .iter()
        .zip(mask)
        .map(|(octet, mask)| octet ^ mask)
        .collect();
    let ip = match (value[1], address.len()) {
        (FAMILY_IPV4, 4) => IpAddr::V4(Ipv4Addr::new(
            address[0], address[1], address[2], address[3],
        )),
        (FAMILY_IPV6, 16) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&address);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Err(StunParseError::BadAttribute(kind)),
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_follow_the_rfc_bit_layout() {
        assert_eq!(message_type(method::BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(method::BINDING, Class::Error), 0x0111);
        assert_eq!(message_type(method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::REFRESH, Class::Success), 0x0104);
        for method in [method::BINDING, method::ALLOCATE, method::REFRESH, 0x0FFF] {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(message_type(method, class)), (method, class));
            }
        }
    }

    #[test]
    fn a_built_message_parses_back() {
        let id = [7u8; 12];
        let relayed: SocketAddr = "[2001:db8::5]:49200".parse().unwrap();
        let bytes = MessageBuilder::new(method::ALLOCATE, Class::Success, &id)
            .attribute(attribute::REALM, b"abc")
            .attribute(
                attribute::XOR_RELAYED_ADDRESS,
                &encode_xor_address(relayed, &id),
            )
            .finish();
        assert_eq!(message_length(&bytes), Some(bytes.len()));
        let message = Message::parse(&bytes).unwrap();
        assert_eq!(
            (message.method, message.class),
            (method::ALLOCATE, Class::Success)
        );
        assert_eq!(message.text(attribute::REALM).as_deref(), Some("abc"));
        assert_eq!(
            message.xor_address(attribute::XOR_RELAYED_ADDRESS).unwrap(),
            Some(relayed)
        );
        assert!(Message::parse(&bytes[..bytes.len() - 4]).is_err());
    }

    #[test]
    fn integrity_matches_the_rfc5769_long_term_sample() {
        // RFC 5769 section 2.4: a request with long-term credentials (user
        // "マトリックス", realm "example.org", password "TheMatrIX").
        let id = [
            0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
        ];
        let username = "\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}";
        let key = long_term_key(username, "example.org", "TheMatrIX");
        let bytes = MessageBuilder::new(method::BINDING, Class::Request, &id)
            .attribute(attribute::USERNAME, username.as_bytes())
            .attribute(attribute::NONCE, b"f//499k954d6OL34oL9FSTvy64sA")
            .attribute(attribute::REALM, b"example.org")
            .finish_with_integrity(&key);
        let message = Message::parse(&bytes).unwrap();
        assert_eq!(
            message.attribute(attribute::MESSAGE_INTEGRITY).unwrap(),
            &[
                0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e, 0x02, 0xb8, 0xe0, 0x71, 0x2e, 0x85,
                0xc9, 0xa2, 0x8c, 0xa8, 0x96, 0x66
            ]
        );
    }
}
