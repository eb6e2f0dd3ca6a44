//! Who is on the other end of a connection: the client address both services limit by.
//! Behind a trusted proxy it is the right-most `X-Forwarded-For` entry (the one the
//! proxy appended: nginx's `$proxy_add_x_forwarded_for`); entries further left come
//! from the client and could be forged.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A client's address and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    /// The TCP peer, proxy headers not trusted.
    Peer(IpAddr),
    /// The TCP peer while proxy headers are trusted but none was usable: the proxy
    /// itself, or a client that reached us past it.
    UnforwardedPeer(IpAddr),
    /// The right-most `X-Forwarded-For` entry (proxy headers trusted).
    Forwarded(IpAddr),
    /// A client connected straight to a service port (ICE-TCP), never through a proxy.
    Direct(IpAddr),
}

impl ClientAddress {
    /// The client address of a request: the peer, or with `trust_proxy_headers` the
    /// right-most parseable `X-Forwarded-For` entry (falling back to the peer).
    pub fn of_request(
        peer: Option<IpAddr>,
        forwarded_for: Option<&str>,
        trust_proxy_headers: bool,
    ) -> Option<ClientAddress> {
        if !trust_proxy_headers {
            return peer.map(ClientAddress::Peer);
        }
        match forwarded_for.and_then(rightmost_forwarded) {
            Some(ip) => Some(ClientAddress::Forwarded(ip)),
            None => peer.map(ClientAddress::UnforwardedPeer),
        }
    }

    /// [`ClientAddress::of_request`] for an actix request (its peer and its
    /// `X-Forwarded-For`).
    pub fn of_http_request(
        request: &actix_web::HttpRequest,
        trust_proxy_headers: bool,
    ) -> Option<ClientAddress> {
        let forwarded_for = request
            .headers()
            .get(actix_web::http::header::X_FORWARDED_FOR)
            .and_then(|value| value.to_str().ok());
        ClientAddress::of_request(
            request.peer_addr().map(|peer| peer.ip()),
            forwarded_for,
            trust_proxy_headers,
        )
    }

    pub fn ip(self) -> IpAddr {
        match self {
            ClientAddress::Peer(ip)
            | ClientAddress::UnforwardedPeer(ip)
            | ClientAddress::Forwarded(ip)
            | ClientAddress::Direct(ip) => ip,
        }
    }

    pub fn network(self) -> ClientNetwork {
        ClientNetwork::of(self.ip())
    }
}

/// The right-most entry of an `X-Forwarded-For` value, as an address (`ip` or
/// `ip:port`).
pub fn rightmost_forwarded(forwarded_for: &str) -> Option<IpAddr> {
    let last = forwarded_for.rsplit(',').next()?.trim();
    last.parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|address| address.ip()))
}

/// What per-client limits count: an IPv4 address, or the /64 network of an IPv6 address
/// (one subscriber usually holds a whole /64, so counting single IPv6 addresses would let
/// one client look like billions). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNetwork(IpAddr);

impl ClientNetwork {
    pub fn of(ip: IpAddr) -> ClientNetwork {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientNetwork(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                ClientNetwork(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
        }
    }

    /// The network's first address (the IPv4 address itself).
    pub fn address(self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for ClientNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn proxy_headers_count_only_when_trusted_and_the_rightmost_entry_wins() {
        let peer = Some(ip("127.0.0.1"));
        let forged = Some("6.6.6.6, 203.0.113.9");
        assert_eq!(
            ClientAddress::of_request(peer, forged, false),
            Some(ClientAddress::Peer(ip("127.0.0.1")))
        );
        assert_eq!(
            ClientAddress::of_request(peer, forged, true),
            Some(ClientAddress::Forwarded(ip("203.0.113.9")))
        );
        assert_eq!(
            ClientAddress::of_request(peer, Some("203.0.113.9:4711"), true),
            Some(ClientAddress::Forwarded(ip("203.0.113.9")))
        );
        assert_eq!(
            ClientAddress::of_request(peer, Some("2001:db8::1"), true),
            Some(ClientAddress::Forwarded(ip("2001:db8::1")))
        );
        assert_eq!(
            ClientAddress::of_request(peer, Some("::1"), true),
            Some(ClientAddress::Forwarded(ip("::1"))),
            "a forwarded loopback is still a forwarded address"
        );
        for unusable in [Some("garbage"), None] {
            assert_eq!(
                ClientAddress::of_request(peer, unusable, true),
                Some(ClientAddress::UnforwardedPeer(ip("127.0.0.1")))
            );
        }
        assert_eq!(ClientAddress::of_request(None, None, false), None);
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            ClientNetwork::of(ip("2001:db8:1:2:aaaa::1")),
            ClientNetwork::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            ClientNetwork::of(ip("2001:db8:1:2::1")),
            ClientNetwork::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientNetwork::of(ip("::ffff:198.51.100.7")),
            ClientNetwork::of(ip("198.51.100.7"))
        );
        assert_eq!(
            ClientNetwork::of(ip("2001:db8::1")).to_string(),
            "2001:db8::/64"
        );
    }
}
