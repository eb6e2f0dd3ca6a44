//! Time-limited TURN credentials in coturn's "REST API" scheme (`use-auth-secret`), the
//! same scheme as draft-uberti-behave-turn-rest: the username is `EXPIRY:LABEL` (expiry
//! in Unix seconds) and the password is `base64(HMAC-SHA1(secret, username))`. The TURN
//! server holds the same secret and checks both the MAC and the expiry, so nothing is
//! stored per user and a leaked credential stops working by itself.
//!
//! Both services mint them: the app for the media token it hands to browsers, the media
//! server for the `Link` headers of its WHIP and WHEP answers.

use aws_lc_rs::hmac;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The shortest TURN secret accepted (bytes): an HMAC key an outsider cannot guess.
pub const MIN_TURN_SECRET_BYTES: usize = 16;

/// What a browser passes to `RTCPeerConnection` as one entry of `iceServers`, and what a
/// WHIP/WHEP answer announces in a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A TURN deployment as both services are configured with it: the `turn:`/`turns:` (and
/// optionally `stun:`) URLs of one coturn, its shared secret and how long a minted
/// credential stays valid.
#[derive(Clone)]
pub struct TurnConfig {
    pub urls: Vec<String>,
    secret: Vec<u8>,
    pub credential_lifetime_seconds: u64,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field(
                "credential_lifetime_seconds",
                &self.credential_lifetime_seconds,
            )
            .finish()
    }
}

/// A TURN setting that stops start-up: the variable at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error in {variable}: {message}")]
pub struct TurnConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn refuse(variable: &'static str, message: impl Into<String>) -> TurnConfigError {
    TurnConfigError {
        variable,
        message: message.into(),
    }
}

/// Default of `TURN_CREDENTIAL_TTL_SECONDS`: coturn refuses an allocation's refresh once
/// its credential has expired, so this bounds how long one relayed session can last.
pub const DEFAULT_TURN_CREDENTIAL_TTL_SECONDS: u64 = 24 * 3600;

impl TurnConfig {
    /// Reads `TURN_URLS` (comma-separated), `TURN_SECRET` or the file named by
    /// `TURN_SECRET_FILE`, and `TURN_CREDENTIAL_TTL_SECONDS` through `get` (which returns
    /// `None` for unset or empty). `None` when `TURN_URLS` is unset: no TURN.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TurnConfig>, TurnConfigError> {
        let Some(urls) = get("TURN_URLS") else {
            return Ok(None);
        };
        let secret = match (get("TURN_SECRET"), get("TURN_SECRET_FILE")) {
            (Some(secret), _) => Some(secret.trim().as_bytes().to_vec()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path.trim()).map_err(|error| {
                    refuse(
                        "TURN_SECRET_FILE",
                        format!("cannot read {}: {error}", path.trim()),
                    )
                })?;
                Some(text.trim().as_bytes().to_vec())
            }
            (None, None) => None,
        };
        let lifetime = match get("TURN_CREDENTIAL_TTL_SECONDS") {
            None => DEFAULT_TURN_CREDENTIAL_TTL_SECONDS,
            Some(raw) => raw.trim().parse().map_err(|_| {
                refuse(
                    "TURN_CREDENTIAL_TTL_SECONDS",
                    "expected a number of seconds",
                )
            })?,
        };
        let urls = urls.split(',').map(str::to_owned).collect();
        TurnConfig::new(urls, secret, lifetime).map(Some)
    }

    /// Checks and builds a configuration: `urls` as listed in `TURN_URLS` (empty entries
    /// skipped), `secret` from `TURN_SECRET`.
    pub fn new(
        urls: Vec<String>,
        secret: Option<Vec<u8>>,
        credential_lifetime_seconds: u64,
    ) -> Result<TurnConfig, TurnConfigError> {
        let urls: Vec<String> = urls
            .into_iter()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(refuse("TURN_URLS", "lists no URL"));
        }
        for url in &urls {
            if !is_ice_server_url(url) {
                return Err(refuse(
                    "TURN_URLS",
                    format!(
                        "{url:?} is not a TURN or STUN URL (turn:host:3478?transport=udp, \
                         turn:host:3478?transport=tcp, turns:host:443?transport=tcp or stun:host:3478)"
                    ),
                ));
            }
        }
        let needs_secret = urls.iter().any(|url| is_turn_url(url));
        let secret = match secret {
            Some(secret) if secret.len() < MIN_TURN_SECRET_BYTES => {
                return Err(refuse(
                    "TURN_SECRET",
                    format!(
                        "must be at least {MIN_TURN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), \
                         the same as coturn's static-auth-secret"
                    ),
                ));
            }
            Some(secret) if secret.starts_with(b"change-me") => {
                return Err(refuse(
                    "TURN_SECRET",
                    "is the placeholder from the example file: set it to coturn's \
                     static-auth-secret (e.g. `openssl rand -hex 32`)",
                ));
            }
            Some(secret) => secret,
            None if needs_secret => {
                return Err(refuse(
                    "TURN_SECRET",
                    "TURN_URLS lists a turn: or turns: URL: set TURN_SECRET or TURN_SECRET_FILE \
                     to coturn's static-auth-secret",
                ));
            }
            None => Vec::new(),
        };
        if !(60..=7 * 24 * 3600).contains(&credential_lifetime_seconds) {
            return Err(refuse(
                "TURN_CREDENTIAL_TTL_SECONDS",
                "must be between 60 seconds and 7 days",
            ));
        }
        Ok(TurnConfig {
            urls,
            secret,
            credential_lifetime_seconds,
        })
    }

    /// The `iceServers` for one client, minted at `now_unix_seconds`: one entry with the
    /// TURN URLs and a fresh credential, one with the STUN URLs (which take none).
    /// `label` ends up in coturn's logs (`EXPIRY:label`): never put a secret in it.
    pub fn ice_servers(&self, label: &str, now_unix_seconds: u64) -> Vec<IceServer> {
        let (turn, stun): (Vec<String>, Vec<String>) =
            self.urls.iter().cloned().partition(|url| is_turn_url(url));
        let mut servers = Vec::new();
        if !turn.is_empty() {
            let expiry = now_unix_seconds.saturating_add(self.credential_lifetime_seconds);
            let (username, credential) = turn_rest_credential(&self.secret, expiry, label);
            servers.push(IceServer {
                urls: turn,
                username: Some(username),
                credential: Some(credential),
            });
        }
        if !stun.is_empty() {
            servers.push(IceServer {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        servers
    }
}

/// `(username, password)` of the REST scheme for a credential valid until `expiry_unix`.
/// The label is cut at its first `:` and to 64 bytes so it cannot reshape the username.
pub fn turn_rest_credential(secret: &[u8], expiry_unix: u64, label: &str) -> (String, String) {
    let label: String = label
        .chars()
        .take_while(|character| *character != ':')
        .filter(|character| character.is_ascii_graphic())
        .take(64)
        .collect();
    let username = if label.is_empty() {
        expiry_unix.to_string()
    } else {
        format!("{expiry_unix}:{label}")
    };
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

fn is_turn_url(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

/// `turn:`, `turns:` or `stun:` followed by a host, with no whitespace or characters that
/// would break a `Link` header or a JSON consumer.
fn is_ice_server_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("turns:")
        .or_else(|| url.strip_prefix("turn:"))
        .or_else(|| url.strip_prefix("stun:"));
    match rest {
        Some(rest) => {
            !rest.is_empty()
                && !rest.starts_with('/')
                && rest.chars().all(|character| {
                    character.is_ascii_graphic()
                        && !matches!(character, '<' | '>' | '"' | ',' | ';' | '\\')
                })
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_matches_the_rest_scheme() {
        // Worked by hand: `printf %s '1700000000:viewer' | openssl dgst -sha1 -hmac
        // 'sixteen-byte-key' -binary | base64`.
        let (username, password) =
            turn_rest_credential(b"sixteen-byte-key", 1_700_000_000, "viewer");
        assert_eq!(username, "1700000000:viewer");
        assert_eq!(password, "uYGHEMm2E4qCdf15ONRa9EFE0tA=");
        let again = turn_rest_credential(b"sixteen-byte-key", 1_700_000_000, "viewer");
        assert_eq!(again.1, password);
        let other = turn_rest_credential(b"another-16-b-key", 1_700_000_000, "viewer");
        assert_ne!(other.1, password);
    }

    #[test]
    fn a_label_cannot_reshape_the_username() {
        let (username, _) = turn_rest_credential(b"sixteen-byte-key", 5, "a:999999999");
        assert_eq!(username, "5:a");
        let (username, _) = turn_rest_credential(b"sixteen-byte-key", 5, "");
        assert_eq!(username, "5");
    }

    #[test]
    fn configuration_is_checked() {
        let urls = |list: &[&str]| list.iter().map(|url| url.to_string()).collect::<Vec<_>>();
        let secret = Some(b"0123456789abcdef".to_vec());
        let variable = |result: Result<TurnConfig, TurnConfigError>| result.unwrap_err().variable;
        assert_eq!(
            variable(TurnConfig::new(urls(&["turn:t.example:3478"]), None, 3600)),
            "TURN_SECRET"
        );
        assert_eq!(
            variable(TurnConfig::new(
                urls(&["turn:t.example"]),
                Some(b"short".to_vec()),
                3600
            )),
            "TURN_SECRET"
        );
        assert_eq!(
            variable(TurnConfig::new(
                urls(&["https://t.example"]),
                secret.clone(),
                3600
            )),
            "TURN_URLS"
        );
        assert_eq!(
            variable(TurnConfig::new(urls(&["turn:a>b"]), secret.clone(), 3600)),
            "TURN_URLS"
        );
        assert_eq!(
            variable(TurnConfig::new(urls(&[" "]), secret.clone(), 3600)),
            "TURN_URLS"
        );
        assert_eq!(
            variable(TurnConfig::new(
                urls(&["turn:t.example"]),
                secret.clone(),
                5
            )),
            "TURN_CREDENTIAL_TTL_SECONDS"
        );
        let stun_only = TurnConfig::new(urls(&["stun:s.example:3478"]), None, 3600).unwrap();
        assert_eq!(stun_only.ice_servers("x", 0)[0].username, None);
        let config = TurnConfig::new(
            urls(&[
                "turn:t.example:3478?transport=udp",
                " ",
                "turns:t.example:443?transport=tcp",
                "stun:t.example:3478",
            ]),
            secret,
            3600,
        )
        .unwrap();
        let servers = config.ice_servers("viewer", 1000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls.len(), 2);
        assert_eq!(servers[0].username.as_deref(), Some("4600:viewer"));
        assert_eq!(servers[1].urls, vec!["stun:t.example:3478".to_string()]);
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn settings_are_read_from_the_environment() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        assert!(TurnConfig::from_lookup(lookup(&[])).unwrap().is_none());
        let config = TurnConfig::from_lookup(lookup(&[
            (
                "TURN_URLS",
                "turn:t.example:3478?transport=udp,turn:t.example:3478?transport=tcp",
            ),
            ("TURN_SECRET", "0123456789abcdef0123"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(config.urls.len(), 2);
        assert_eq!(
            config.credential_lifetime_seconds,
            DEFAULT_TURN_CREDENTIAL_TTL_SECONDS
        );
        let error = TurnConfig::from_lookup(lookup(&[
            ("TURN_URLS", "turn:t.example"),
            ("TURN_SECRET_FILE", "/nonexistent/turn-secret"),
        ]))
        .unwrap_err();
        assert_eq!(error.variable, "TURN_SECRET_FILE");
    }
}
