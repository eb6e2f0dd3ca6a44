//! Per-client-IP limits on the signaling socket: how many `/ws` sockets one IP may hold
//! open at once (`MEDIA_MAX_SOCKETS_PER_IP`) and how many it may open per second
//! (`MEDIA_NEW_SOCKETS_PER_IP_PER_SEC`, a token bucket whose burst is one second's worth).
//!
//! The client IP is the connection's peer address, or, with `MEDIA_TRUST_PROXY_HEADERS`,
//! the right-most `X-Forwarded-For` entry (the address the proxy in front of us saw; the
//! entries left of it are whatever the client sent). Limits count an IPv4 address or an
//! IPv6 /64 (one subscriber usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
//!
//! A loopback TCP peer is not limited while proxy headers are not trusted: with nginx on
//! the same host every client would share 127.0.0.1, and local tools (load generator,
//! `test-connection`) open many sockets. An address from a header is never exempt: a
//! client could write `X-Forwarded-For: ::1` itself.
//!
//! [`SocketLimiter`] takes time as an argument; the signaling route passes the clock.

use std::sync::Arc;
use std::time::Instant;

pub use privatehub_edge::client_address::ClientAddress;
pub use privatehub_edge::limits::{Refused, SocketSlot};

/// Only a loopback TCP peer with proxy headers not trusted skips the limits.
fn exempt(client: ClientAddress) -> bool {
    matches!(client, ClientAddress::Peer(ip) if ip.to_canonical().is_loopback())
}

/// The edge crate's per-network limiter, with the media server's exemption rule.
#[derive(Debug)]
pub struct SocketLimiter(Arc<privatehub_edge::limits::SocketLimiter>);

impl SocketLimiter {
    /// `max_open` / `per_second` of 0 disable that limit.
    pub fn new(max_open: usize, per_second: u32) -> Arc<Self> {
        Arc::new(SocketLimiter(privatehub_edge::limits::SocketLimiter::new(
            max_open, per_second,
        )))
    }

    /// Admits a new socket from `client` (`None`: unknown address, not limited) at `now`.
    pub fn try_open(
        &self,
        client: Option<ClientAddress>,
        now: Instant,
    ) -> Result<SocketSlot, Refused> {
        let network = client
            .filter(|client| !exempt(*client))
            .map(ClientAddress::network);
        self.0.try_open(network, now)
    }

    /// Networks currently tracked (for tests).
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.0.tracked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<ClientAddress> {
        Some(ClientAddress::Peer(s.parse().unwrap()))
    }

    fn forwarded(s: &str) -> Option<ClientAddress> {
        Some(ClientAddress::Forwarded(s.parse().unwrap()))
    }

    // The limiter's own counting (caps, the per-second bucket, forgetting quiet
    // networks) is tested in `privatehub_edge::limits`; here, the media server's rule of
    // who is exempt and how addresses are read.

    #[test]
    fn loopback_and_unknown_clients_are_not_limited() {
        let limiter = SocketLimiter::new(1, 1);
        let now = Instant::now();
        let mut slots = Vec::new();
        for addr in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            for _ in 0..5 {
                slots.push(limiter.try_open(ip(addr), now).unwrap());
            }
        }
        slots.push(limiter.try_open(None, now).unwrap());
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn addresses_from_headers_or_behind_a_proxy_are_never_exempt() {
        let limiter = SocketLimiter::new(1, 0);
        let now = Instant::now();
        let local = "127.0.0.1".parse().unwrap();
        for client in [
            forwarded("::1"),
            forwarded("127.0.0.1"),
            forwarded("::ffff:127.0.0.1"),
            Some(ClientAddress::UnforwardedPeer(local)),
        ] {
            let _slot = limiter.try_open(client, now).unwrap();
            assert_eq!(
                limiter.try_open(client, now).unwrap_err(),
                Refused::TooManyOpen,
                "{client:?}"
            );
        }
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let limiter = SocketLimiter::new(2, 0);
        let now = Instant::now();
        let _a = limiter.try_open(forwarded("2001:db8:1:2::1"), now).unwrap();
        let _b = limiter
            .try_open(forwarded("2001:db8:1:2:ffff::9"), now)
            .unwrap();
        assert_eq!(
            limiter
                .try_open(forwarded("2001:db8:1:2::3"), now)
                .unwrap_err(),
            Refused::TooManyOpen,
            "same /64"
        );
        // The next /64 is another client.
        let _c = limiter.try_open(forwarded("2001:db8:1:3::1"), now).unwrap();
        let _d = limiter.try_open(ip("192.0.2.1"), now).unwrap();
        let _e = limiter
            .try_open(forwarded("::ffff:192.0.2.1"), now)
            .unwrap();
        assert_eq!(
            limiter.try_open(ip("192.0.2.1"), now).unwrap_err(),
            Refused::TooManyOpen,
            "IPv4-mapped IPv6 is the same IPv4 client"
        );
        assert_eq!(limiter.tracked(), 3);
    }
}
