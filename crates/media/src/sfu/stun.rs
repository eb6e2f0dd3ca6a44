//! Plain STUN binding (RFC 5389) for reachability checks such as the operators'
//! `scripts/test-connection`: a Binding Request *without* USERNAME is answered with the
//! source address as seen by the server (XOR-MAPPED-ADDRESS), rate-limited per source IP
//! so the port cannot be used to amplify traffic. Requests with USERNAME are ICE
//! connectivity checks and belong to str0m.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const MAGIC_COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Answers allowed per source IP per [`RATE_WINDOW`].
const RATE_LIMIT: u32 = 10;
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Most source IPs remembered by the limiter; beyond that it forgets old windows.
const MAX_TRACKED_SOURCES: usize = 4096;

/// What a datagram is, from the point of view of the plain-STUN responder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunKind {
    /// Not STUN at all (DTLS, RTP, RTCP).
    NotStun,
    /// A binding request without USERNAME: ours to answer.
    PlainBinding,
    /// STUN with USERNAME (an ICE check) or any other STUN message: str0m's.
    Ice,
}

/// Classifies a datagram by its header and attributes. Never panics.
pub fn classify(buf: &[u8]) -> StunKind {
    if buf.len() < 20 || buf[0] & 0xC0 != 0 {
        return StunKind::NotStun;
    }
    if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
        return StunKind::NotStun;
    }
    let kind = u16::from_be_bytes([buf[0], buf[1]]);
    let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if kind != BINDING_REQUEST || 20 + length > buf.len() {
        return StunKind::Ice;
    }
    let mut at = 20;
    while at + 4 <= 20 + length {
        let attr = u16::from_be_bytes([buf[at], buf[at + 1]]);
        let len = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
        if attr == ATTR_USERNAME {
            return StunKind::Ice;
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    StunKind::PlainBinding
}

/// The Binding Success Response to `request` (a [`StunKind::PlainBinding`]) from `source`.
pub fn binding_success(request: &[u8], source: SocketAddr) -> Vec<u8> {
    let mut transaction = [0u8; 12];
    transaction.copy_from_slice(&request[8..20]);
    let mut value = Vec::with_capacity(20);
    value.push(0);
    let port = source.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match source.ip() {
        IpAddr::V4(ip) => {
            value.push(0x01);
            value.extend_from_slice(&port.to_be_bytes());
            let x = u32::from(ip) ^ MAGIC_COOKIE;
            value.extend_from_slice(&x.to_be_bytes());
        }
        IpAddr::V6(ip) => {
            value.push(0x02);
            value.extend_from_slice(&port.to_be_bytes());
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(&transaction);
            for (octet, k) in ip.octets().iter().zip(key) {
                value.push(octet ^ k);
            }
        }
    }
    let mut out = Vec::with_capacity(24 + value.len());
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(&transaction);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(&value);
    out
}

/// Fixed-window limiter of plain binding answers per source IP.
#[derive(Debug, Default)]
pub struct StunRateLimiter {
    windows: HashMap<IpAddr, (Instant, u32)>,
}

impl StunRateLimiter {
    /// Whether an answer to `ip` is allowed at `now` (and counts it).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.windows.len() >= MAX_TRACKED_SOURCES && !self.windows.contains_key(&ip) {
            self.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < RATE_WINDOW);
            if self.windows.len() >= MAX_TRACKED_SOURCES {
                return false;
            }
        }
        let entry = self.windows.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= RATE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= RATE_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(with_username: bool) -> Vec<u8> {
        let mut b = vec![0x00, 0x01, 0, 0];
        b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b.extend_from_slice(&[7u8; 12]);
        if with_username {
            b.extend_from_slice(&[0x00, 0x06, 0x00, 0x03, b'a', b':', b'b', 0]);
            b[3] = 8;
        }
        b
    }

    #[test]
    fn classifies_plain_and_ice_requests() {
        assert_eq!(classify(&request(false)), StunKind::PlainBinding);
        assert_eq!(classify(&request(true)), StunKind::Ice);
        assert_eq!(classify(&[0x16, 0xfe, 0xfd]), StunKind::NotStun);
        assert_eq!(classify(&[0x80; 40]), StunKind::NotStun);
    }

    #[test]
    fn xor_mapped_address_decodes_to_source() {
        let source: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let resp = binding_success(&request(false), source);
        assert_eq!(&resp[0..2], &[0x01, 0x01]);
        assert_eq!(&resp[8..20], &[7u8; 12]);
        assert_eq!(
            usize::from(u16::from_be_bytes([resp[2], resp[3]])),
            resp.len() - 20
        );
        let port = u16::from_be_bytes([resp[26], resp[27]]) ^ 0x2112;
        let ip = u32::from_be_bytes([resp[28], resp[29], resp[30], resp[31]]) ^ MAGIC_COOKIE;
        assert_eq!(port, 32853);
        assert_eq!(std::net::Ipv4Addr::from(ip).to_string(), "192.0.2.1");
    }

    #[test]
    fn rate_limit_per_source() {
        let mut limiter = StunRateLimiter::default();
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let allowed = (0..50).filter(|_| limiter.allow(ip, now)).count();
        assert_eq!(allowed, RATE_LIMIT as usize);
        assert!(limiter.allow("10.0.0.2".parse().unwrap(), now));
        assert!(limiter.allow(ip, now + RATE_WINDOW));
    }
}
