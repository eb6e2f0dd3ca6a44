//! [`Origin`]: a web origin (`scheme://host[:port]`), used for the CSRF check and for
//! building the Content-Security-Policy.

use std::fmt;

/// A normalised `http`/`https` origin: lowercase scheme and host, default port
/// omitted, no path. Two origins are the same site for CSRF purposes iff equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: &'static str,
    /// Host plus `:port` when the port is not the scheme's default.
    authority: String,
}

/// Why a string is not a usable origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Scheme other than `http`/`https` (or `ws`/`wss` where allowed), or no `://`.
    #[error("expected a URL starting with http:// or https://")]
    Scheme,
    /// Empty host, user-info (`user@host`), or a port that is not a number.
    #[error("the URL's host or port is invalid")]
    Authority,
}

impl Origin {
    /// Parses an origin or a full URL (as in a `Referer` header); path, query and
    /// fragment are ignored.
    pub fn parse_url(raw: &str) -> Result<Origin, OriginError> {
        Self::parse_with(raw, false)
    }

    /// Like [`Origin::parse_url`] but also accepts `ws://` and `wss://` (mapped to
    /// `http`/`https`), for the media server's public URL.
    pub fn parse_url_or_websocket(raw: &str) -> Result<Origin, OriginError> {
        Self::parse_with(raw, true)
    }

    fn parse_with(raw: &str, allow_websocket: bool) -> Result<Origin, OriginError> {
        let (scheme, rest) = raw.trim().split_once("://").ok_or(OriginError::Scheme)?;
        let scheme: &'static str = match scheme.to_ascii_lowercase().as_str() {
            "http" => "http",
            "https" => "https",
            "ws" if allow_websocket => "http",
            "wss" if allow_websocket => "https",
            _ => return Err(OriginError::Scheme),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = rest[..end].to_ascii_lowercase();
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return Err(OriginError::Authority);
        }
        // Split a trailing `:port`, taking care of bracketed IPv6 hosts.
        let (host, port) = match authority.rfind(':') {
            Some(colon) if !authority[colon..].contains(']') => {
                let port: u16 = authority[colon + 1..]
                    .parse()
                    .map_err(|_| OriginError::Authority)?;
                (&authority[..colon], Some(port))
            }
            _ => (authority.as_str(), None),
        };
        if host.is_empty() {
            return Err(OriginError::Authority);
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = match port {
            Some(port) if port != default_port => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        Ok(Origin { scheme, authority })
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// The WebSocket origin with the same host (`ws://` or `wss://`), for CSP.
    pub fn websocket_origin(&self) -> String {
        let scheme = if self.is_https() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.authority)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(raw: &str) -> String {
        Origin::parse_url(raw).unwrap().to_string()
    }

    #[test]
    fn normalises() {
        assert_eq!(origin("http://localhost:3000"), "http://localhost:3000");
        assert_eq!(
            origin("HTTPS://Example.COM:443/path?q#f"),
            "https://example.com"
        );
        assert_eq!(origin("http://example.com:80/"), "http://example.com");
        assert_eq!(origin("http://[::1]:8080/x"), "http://[::1]:8080");
        assert_eq!(origin("http://[::1]"), "http://[::1]");
    }

    #[test]
    fn refuses_garbage() {
        for raw in [
            "",
            "null",
            "localhost:3000",
            "ftp://x",
            "http://",
            "http://u@h",
            "http://h:x",
            "http://h:99999",
        ] {
            assert!(Origin::parse_url(raw).is_err(), "{raw:?}");
        }
        assert!(Origin::parse_url("ws://h").is_err());
    }

    #[test]
    fn websocket_urls_map_to_http() {
        let media = Origin::parse_url_or_websocket("wss://sfu.example.com/ws").unwrap();
        assert_eq!(media.to_string(), "https://sfu.example.com");
        assert_eq!(media.websocket_origin(), "wss://sfu.example.com");
    }
}
