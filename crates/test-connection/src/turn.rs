//! A real TURN Allocate (RFC 5766) against the site's coturn with credentials minted
//! here from the shared secret, as the app mints them for browsers: the first request
//! draws the 401 with REALM and NONCE, the second carries USERNAME and
//! MESSAGE-INTEGRITY and must come back with a relayed address. The allocation is then
//! released (Refresh with LIFETIME 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use privatehub_protocol::stun::{
    Class, Message, MessageBuilder, TransactionId, attribute, long_term_key, message_length, method,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::report::{CheckResult, Status};

/// How a TURN URL is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnTransport {
    Udp,
    Tcp,
    Tls,
}

/// One parsed `turn:`/`turns:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl {
    pub host: String,
    pub port: u16,
    pub transport: TurnTransport,
}

impl TurnUrl {
    /// `turn:host[:port][?transport=udp|tcp]` or `turns:host[:port][?transport=tcp]`;
    /// `None` for `stun:` and anything else.
    pub fn parse(url: &str) -> Option<TurnUrl> {
        let (secure, rest) = if let Some(rest) = url.strip_prefix("turns:") {
            (true, rest)
        } else {
            (false, url.strip_prefix("turn:")?)
        };
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        let transport = match (secure, query) {
            (true, _) => TurnTransport::Tls,
            (false, "transport=tcp") => TurnTransport::Tcp,
            (false, "" | "transport=udp") => TurnTransport::Udp,
            _ => return None,
        };
        let default_port = if secure { 5349 } else { 3478 };
        let (host, port) = match address.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']')?;
                let port = match after.strip_prefix(':') {
                    Some(port) => port.parse().ok()?,
                    None => default_port,
                };
                (host.to_owned(), port)
            }
            None => match address.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port.parse().ok()?),
                None => (address.to_owned(), default_port),
            },
        };
        if host.is_empty() {
            return None;
        }
        Some(TurnUrl {
            host,
            port,
            transport,
        })
    }

    fn describe(&self) -> &'static str {
        match self.transport {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
            TurnTransport::Tls => "tls",
        }
    }
}

/// What the Allocate exchange ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocateOutcome {
    Relayed {
        relayed: SocketAddr,
        round_trip: Duration,
    },
    /// The server allocated without asking for credentials: an open relay.
    NoAuthentication,
    /// An error response to the authenticated request.
    Refused { code: u16, reason: String },
    /// No usable answer (timeout, connection failure, not TURN).
    Failed(String),
}

/// Allocates a relay on `url` as `username`/`password`, then releases it.
pub async fn allocate(
    url: &TurnUrl,
    username: &str,
    password: &str,
    insecure: bool,
    timeout: Duration,
) -> AllocateOutcome {
    let started = Instant::now();
    let attempt = async {
        let mut connection = Connection::open(url, insecure, timeout).await?;
        let request_transport = [17u8, 0, 0, 0];
        let first_id: TransactionId = rand::random();
        let first = MessageBuilder::new(method::ALLOCATE, Class::Request, &first_id)
            .attribute(attribute::REQUESTED_TRANSPORT, &request_transport)
            .finish();
        let answer = connection.exchange(&first, &first_id, timeout).await?;
        let message = Message::parse(&answer).map_err(|error| error.to_string())?;
        if message.class == Class::Success {
            return Ok(AllocateOutcome::NoAuthentication);
        }
        let (realm, mut nonce) = match (
            message.text(attribute::REALM),
            message.text(attribute::NONCE),
        ) {
            (Some(realm), Some(nonce)) => (realm, nonce),
            _ => {
                let (code, reason) = message
                    .error_code()
                    .ok()
                    .flatten()
                    .unwrap_or((0, "no ERROR-CODE".into()));
                return Ok(AllocateOutcome::Refused { code, reason });
            }
        };
        let key = long_term_key(username, &realm, password);
        // One retry for a stale nonce (438), as RFC 5389 section 10.2.3 asks.
        for _ in 0..2 {
            let id: TransactionId = rand::random();
            let request = MessageBuilder::new(method::ALLOCATE, Class::Request, &id)
                .attribute(attribute::REQUESTED_TRANSPORT, &request_transport)
                .attribute(attribute::USERNAME, username.as_bytes())
                .attribute(attribute::REALM, realm.as_bytes())
                .attribute(attribute::NONCE, nonce.as_bytes())
                .finish_with_integrity(&key);
            let answer = connection.exchange(&request, &id, timeout).await?;
            let message = Message::parse(&answer).map_err(|error| error.to_string())?;
            if message.class == Class::Success {
                let relayed = message
                    .xor_address(attribute::XOR_RELAYED_ADDRESS)
                    .map_err(|error| error.to_string())?
                    .ok_or("success without XOR-RELAYED-ADDRESS")?;
                let round_trip = started.elapsed();
                let release_id: TransactionId = rand::random();
                let release = MessageBuilder::new(method::REFRESH, Class::Request, &release_id)
                    .attribute(attribute::LIFETIME, &0u32.to_be_bytes())
                    .attribute(attribute::USERNAME, username.as_bytes())
                    .attribute(attribute::REALM, realm.as_bytes())
                    .attribute(attribute::NONCE, nonce.as_bytes())
                    .finish_with_integrity(&key);
                let _ = connection.exchange(&release, &release_id, timeout).await;
                return Ok(AllocateOutcome::Relayed {
                    relayed,
                    round_trip,
                });
            }
            let (code, reason) = message
                .error_code()
                .map_err(|error| error.to_string())?
                .unwrap_or((0, "no ERROR-CODE".into()));
            match (code, message.text(attribute::NONCE)) {
                (438, Some(fresh)) => nonce = fresh,
                _ => return Ok(AllocateOutcome::Refused { code, reason }),
            }
        }
        Ok(AllocateOutcome::Refused {
            code: 438,
            reason: "stale nonce twice".into(),
        })
    };
    match tokio::time::timeout(timeout * 4, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => AllocateOutcome::Failed(error),
        Err(_) => {
            AllocateOutcome::Failed(format!("no answer within {} s", (timeout * 4).as_secs()))
        }
    }
}

/// The result line for one TURN URL.
pub fn describe(url_text: &str, url: &TurnUrl, outcome: &AllocateOutcome) -> CheckResult {
    let name = format!("turn {}/{}", url.describe(), url.port);
    match outcome {
        AllocateOutcome::Relayed {
            relayed,
            round_trip,
        } => CheckResult::pass(
            name,
            format!(
                "{url_text}: allocated relay {relayed} with a fresh credential in {} ms",
                round_trip.as_millis()
            ),
        ),
        AllocateOutcome::NoAuthentication => CheckResult::new(
            name,
            Status::Fail,
            format!("{url_text} allocated a relay without asking for credentials: an open relay"),
            "set use-auth-secret and static-auth-secret in /etc/turnserver.conf (deploy/coturn/turnserver.conf)",
        ),
        AllocateOutcome::Refused { code: 401, reason } => CheckResult::fail(
            name,
            format!("{url_text} refused the credential (401 {reason})"),
            "TURN_SECRET must equal static-auth-secret in /etc/turnserver.conf, with \
             use-auth-secret set; credentials carry an expiry, so also check the clocks (NTP)",
        ),
        AllocateOutcome::Refused { code: 486, reason } => CheckResult::fail(
            name,
            format!("{url_text} refused the allocation (486 {reason})"),
            "the allocation quota is reached: raise total-quota/user-quota in /etc/turnserver.conf",
        ),
        AllocateOutcome::Refused { code, reason } => CheckResult::fail(
            name,
            format!("{url_text} refused the allocation ({code} {reason})"),
            "journalctl -u coturn for the cause",
        ),
        AllocateOutcome::Failed(error) => CheckResult::fail(
            name,
            format!("{url_text}: {error}"),
            format!(
                "is coturn running, and is {} {} open in the firewall?",
                match url.transport {
                    TurnTransport::Udp => "UDP",
                    _ => "TCP",
                },
                url.port
            ),
        ),
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Connection {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>),
}

impl Connection {
    async fn open(url: &TurnUrl, insecure: bool, timeout: Duration) -> Result<Connection, String> {
        let target = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|error| format!("resolve {}: {error}", url.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", url.host))?;
        match url.transport {
            TurnTransport::Udp => {
                let local: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse().expect("valid")
                } else {
                    "[::]:0".parse().expect("valid")
                };
                let socket = UdpSocket::bind(local)
                    .await
                    .map_err(|error| error.to_string())?;
                socket
                    .connect(target)
                    .await
                    .map_err(|error| error.to_string())?;
                Ok(Connection::Udp(socket))
            }
            TurnTransport::Tcp | TurnTransport::Tls => {
                let tcp = tokio::time::timeout(timeout, TcpStream::connect(target))
                    .await
                    .map_err(|_| {
                        format!("TCP {target}: no connection within {} s", timeout.as_secs())
                    })?
                    .map_err(|error| format!("TCP {target}: {error}"))?;
                if url.transport == TurnTransport::Tcp {
                    return Ok(Connection::Stream(Box::new(tcp)));
                }
                let mut config = (*crate::tls::client_config(insecure)).clone();
                config.alpn_protocols.clear();
                let server_name = rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|error| format!("{}: {error}", url.host))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(server_name, tcp)
                    .await
                    .map_err(|error| format!("TLS with {target}: {error}"))?;
                Ok(Connection::Stream(Box::new(tls)))
            }
        }
    }

    /// Sends `request` and returns the message answering `id` (UDP: retransmitted with
    /// doubling waits; TCP/TLS: messages read off the stream by their length).
    async fn exchange(
        &mut self,
        request: &[u8],
        id: &TransactionId,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        match self {
            Connection::Udp(socket) => {
                let mut wait = Duration::from_millis(500).min(timeout);
                let mut buffer = vec![0u8; 2048];
                for _ in 0..3 {
                    socket
                        .send(request)
                        .await
                        .map_err(|error| error.to_string())?;
                    let deadline = tokio::time::Instant::now() + wait;
                    while let Ok(received) =
                        tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await
                    {
                        let length = received.map_err(|error| error.to_string())?;
                        if length >= 20 && buffer[8..20] == id[..] {
                            return Ok(buffer[..length].to_vec());
                        }
                    }
                    wait *= 2;
                }
                Err("no answer over UDP after 3 attempts".into())
            }
            Connection::Stream(stream) => {
                stream
                    .write_all(request)
                    .await
                    .map_err(|error| error.to_string())?;
                loop {
                    let mut header = [0u8; 20];
                    stream
                        .read_exact(&mut header)
                        .await
                        .map_err(|error| format!("reading the answer: {error}"))?;
                    let length = message_length(&header)
                        .ok_or("the server answered something other than STUN")?;
                    let mut message = header.to_vec();
                    message.resize(length, 0);
                    stream
                        .read_exact(&mut message[20..])
                        .await
                        .map_err(|error| format!("reading the answer: {error}"))?;
                    if message[8..20] == id[..] {
                        return Ok(message);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls_parse() {
        let url = |text| TurnUrl::parse(text);
        assert_eq!(
            url("turn:t.example"),
            Some(TurnUrl {
                host: "t.example".into(),
                port: 3478,
                transport: TurnTransport::Udp
            })
        );
        assert_eq!(
            url("turn:t.example:3479?transport=tcp").unwrap().transport,
            TurnTransport::Tcp
        );
        assert_eq!(url("turns:t.example:443?transport=tcp").unwrap().port, 443);
        assert_eq!(url("turns:t.example").unwrap().port, 5349);
        assert_eq!(url("turn:[2001:db8::1]:3478").unwrap().host, "2001:db8::1");
        assert_eq!(url("stun:t.example"), None);
        assert_eq!(url("turn:t.example?transport=sctp"), None);
        assert_eq!(url("turn::3478"), None);
    }
}
