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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Entries of IPs with no open socket whose bucket is full again are forgotten this often.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Why a new socket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The IP already holds `MEDIA_MAX_SOCKETS_PER_IP` sockets.
    TooManyOpen,
    /// The IP opened more than `MEDIA_NEW_SOCKETS_PER_IP_PER_SEC` sockets in the last second.
    TooFast,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::TooManyOpen => "too many open connections from your address",
            Refused::TooFast => "too many new connections from your address",
        }
    }
}

pub use privatehub_edge::client_address::ClientAddress;

/// Only a loopback TCP peer with proxy headers not trusted skips the limits.
fn exempt(client: ClientAddress) -> bool {
    matches!(client, ClientAddress::Peer(ip) if ip.to_canonical().is_loopback())
}

#[derive(Debug)]
struct IpState {
    open: usize,
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// Keyed by the client's network (`ClientAddress::network`).
    ips: HashMap<IpAddr, IpState>,
    last_prune: Option<Instant>,
}

/// Counts open sockets and recent connections per client network (IPv4 address or IPv6 /64).
#[derive(Debug)]
pub struct SocketLimiter {
    max_open: usize,
    per_second: u32,
    inner: Mutex<Inner>,
}

/// One admitted socket; dropping it frees the IP's place.
#[derive(Debug)]
pub struct SocketSlot {
    limiter: Option<(Arc<SocketLimiter>, IpAddr)>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if let Some((limiter, ip)) = self.limiter.take()
            && let Some(state) = limiter.lock().ips.get_mut(&ip)
        {
            state.open = state.open.saturating_sub(1);
        }
    }
}

impl SocketLimiter {
    /// `max_open` / `per_second` of 0 disable that limit.
    pub fn new(max_open: usize, per_second: u32) -> Arc<Self> {
        Arc::new(SocketLimiter {
            max_open,
            per_second,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new socket from `client` (`None`: unknown address, not limited) at `now`.
    pub fn try_open(
        self: &Arc<Self>,
        client: Option<ClientAddress>,
        now: Instant,
    ) -> Result<SocketSlot, Refused> {
        let Some(ip) = client
            .filter(|client| !exempt(*client))
            .map(|client| client.network().address())
        else {
            return Ok(SocketSlot { limiter: None });
        };
        if self.max_open == 0 && self.per_second == 0 {
            return Ok(SocketSlot { limiter: None });
        }
        let capacity = f64::from(self.per_second);
        let mut inner = self.lock();
        if inner
            .last_prune
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY)
        {
            inner.last_prune = Some(now);
            let full_after = Duration::from_secs(1);
            inner
                .ips
                .retain(|_, s| s.open > 0 || now.saturating_duration_since(s.at) < full_after);
        }
        let state = inner.ips.entry(ip).or_insert(IpState {
            open: 0,
            tokens: capacity,
            at: now,
        });
        if self.per_second > 0 {
            let elapsed = now.saturating_duration_since(state.at).as_secs_f64();
            state.tokens = (state.tokens + elapsed * capacity).min(capacity);
            state.at = now;
            if state.tokens < 1.0 {
                return Err(Refused::TooFast);
            }
        }
        if self.max_open > 0 && state.open >= self.max_open {
            return Err(Refused::TooManyOpen);
        }
        if self.per_second > 0 {
            state.tokens -= 1.0;
        }
        state.open += 1;
        Ok(SocketSlot {
            limiter: Some((self.clone(), ip)),
        })
    }

    /// IPs currently tracked (for tests).
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.lock().ips.len()
    }
}

/// The client address of a request: the peer address, or with `trust_proxy_headers` the
/// right-most parseable `X-Forwarded-For` entry (falling back to the peer address).
pub fn client_ip(
    peer: Option<SocketAddr>,
    forwarded_for: Option<&str>,
    trust_proxy_headers: bool,
) -> Option<ClientAddress> {
    ClientAddress::of_request(
        peer.map(|peer| peer.ip()),
        forwarded_for,
        trust_proxy_headers,
    )
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

    #[test]
    fn caps_open_sockets_per_ip_and_frees_on_drop() {
        let limiter = SocketLimiter::new(2, 0);
        let now = Instant::now();
        let a = limiter.try_open(ip("192.0.2.1"), now).unwrap();
        let _b = limiter.try_open(ip("192.0.2.1"), now).unwrap();
        assert_eq!(
            limiter.try_open(ip("192.0.2.1"), now).unwrap_err(),
            Refused::TooManyOpen
        );
        // Another IP is not affected.
        let _c = limiter.try_open(ip("192.0.2.2"), now).unwrap();
        drop(a);
        assert!(limiter.try_open(ip("192.0.2.1"), now).is_ok());
    }

    #[test]
    fn limits_new_sockets_per_second() {
        let limiter = SocketLimiter::new(0, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(limiter.try_open(ip("192.0.2.1"), t0).unwrap());
        }
        assert_eq!(
            limiter.try_open(ip("192.0.2.1"), t0).unwrap_err(),
            Refused::TooFast
        );
        // Refusals do not use tokens: 200 ms later there is exactly one more.
        let t1 = t0 + Duration::from_millis(200);
        assert!(limiter.try_open(ip("192.0.2.1"), t1).is_ok());
        assert!(limiter.try_open(ip("192.0.2.1"), t1).is_err());
        assert!(limiter.try_open(ip("192.0.2.9"), t1).is_ok());
        // Quiet IPs are forgotten.
        let later = t0 + Duration::from_secs(30);
        assert!(limiter.try_open(ip("192.0.2.3"), later).is_ok());
        assert_eq!(limiter.tracked(), 1);
    }

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

    #[test]
    fn client_ip_trusts_forwarded_for_only_when_told() {
        let peer: Option<SocketAddr> = Some("127.0.0.1:5555".parse().unwrap());
        let local = "127.0.0.1".parse().unwrap();
        let xff = Some("6.6.6.6, 203.0.113.7");
        assert_eq!(client_ip(peer, xff, false), ip("127.0.0.1"));
        assert_eq!(client_ip(peer, xff, true), forwarded("203.0.113.7"));
        assert_eq!(
            client_ip(peer, Some("2001:db8::1"), true),
            forwarded("2001:db8::1")
        );
        assert_eq!(
            client_ip(peer, Some("198.51.100.4:1234"), true),
            forwarded("198.51.100.4")
        );
        assert_eq!(client_ip(peer, Some("::1"), true), forwarded("::1"));
        assert_eq!(
            client_ip(peer, Some("garbage"), true),
            Some(ClientAddress::UnforwardedPeer(local))
        );
        assert_eq!(
            client_ip(peer, None, true),
            Some(ClientAddress::UnforwardedPeer(local))
        );
        assert_eq!(client_ip(None, None, false), None);
    }
}
