//! Who is on the other end: the client's IP address and whether it reached us over
//! HTTPS. Proxy headers are believed only when `TRUST_PROXY_HEADERS` is on.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderMap;
use privatehub_edge::client_address::rightmost_forwarded;

/// The client as far as this request can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// `None` only when the peer address is unknown (never for TCP).
    pub ip: Option<IpAddr>,
    /// The browser's connection is HTTPS.
    pub https: bool,
}

pub use privatehub_edge::client_address::ClientNetwork;

impl ClientInfo {
    /// The network per-client limits count this client in.
    pub fn network(&self) -> Option<ClientNetwork> {
        self.ip.map(ClientNetwork::of)
    }

    pub fn from_request(request: &HttpRequest, trust_proxy_headers: bool) -> ClientInfo {
        resolve(
            request.headers(),
            request.peer_addr().map(|addr| addr.ip()),
            // Our own TLS listener (not `connection_info()`, which believes headers).
            request.app_config().secure(),
            trust_proxy_headers,
        )
    }

    pub fn from_service_request(request: &ServiceRequest, trust_proxy_headers: bool) -> ClientInfo {
        resolve(
            request.headers(),
            request.peer_addr().map(|addr| addr.ip()),
            false,
            trust_proxy_headers,
        )
    }
}

/// With trust on, the client address is the *rightmost* `X-Forwarded-For` entry:
/// the one our proxy appended (nginx `$proxy_add_x_forwarded_for`); entries further
/// left were supplied by the client and could be forged.
fn resolve(headers: &HeaderMap, peer: Option<IpAddr>, tls: bool, trust: bool) -> ClientInfo {
    if !trust {
        return ClientInfo {
            ip: peer,
            https: tls,
        };
    }
    let forwarded_ip = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(rightmost_forwarded);
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    ClientInfo {
        ip: forwarded_ip.or(peer),
        https,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn proxy_headers_are_ignored_unless_trusted() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            resolve(&h, Some(peer), false, false),
            ClientInfo {
                ip: Some(peer),
                https: false
            }
        );
        let trusted = resolve(&h, Some(peer), false, true);
        assert_eq!(trusted.ip, Some("1.2.3.4".parse().unwrap()));
        assert!(trusted.https);
    }

    #[test]
    fn rightmost_forwarded_entry_wins() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4")]);
        assert_eq!(
            resolve(&h, None, false, true).ip,
            Some("1.2.3.4".parse().unwrap())
        );
        let garbage = headers(&[("x-forwarded-for", "nonsense")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(resolve(&garbage, Some(peer), false, true).ip, Some(peer));
    }
}
