//! The media signaling WebSocket: upgrade `/ws` through whatever fronts the media server
//! (with the app's `Origin`, as a browser would), send `ping`, expect `pong`.

use std::net::SocketAddr;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::health::{body_note, error_chain, join, snippet};
use crate::options::Options;
use crate::report::CheckResult;
use crate::tls::client_config;

const NAME: &str = "media signaling";

/// Runs the check; one result line.
pub async fn check(options: &Options) -> CheckResult {
    match tokio::time::timeout(options.timeout, exchange(options)).await {
        Ok(Ok(result)) | Ok(Err(result)) => result,
        Err(_) => CheckResult::fail(
            NAME,
            format!(
                "no pong within {} s on {}",
                options.timeout.as_secs(),
                ws_url(&options.media_url)
            ),
            "nginx may buffer or time out the upgrade: check the /ws location of the media site",
        ),
    }
}

/// `http(s)://host/prefix` → `ws(s)://host/prefix/ws`.
pub fn ws_url(media_url: &Url) -> Url {
    let mut url = join(media_url, "/ws");
    let scheme = if media_url.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    url.set_scheme(scheme)
        .expect("ws and wss are valid schemes");
    url
}

async fn exchange(options: &Options) -> Result<CheckResult, CheckResult> {
    let url = ws_url(&options.media_url);
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = connect(&host, port).await?;
    let peer = tcp.peer_addr().ok();
    if url.scheme() == "wss" {
        let server_name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
            CheckResult::fail(NAME, format!("{host:?} is not a valid TLS name"), "")
        })?;
        let tls = TlsConnector::from(client_config(options.insecure))
            .connect(server_name, tcp)
            .await
            .map_err(|error| {
                CheckResult::fail(
                    NAME,
                    format!("TLS to {host}:{port} failed: {}", error_chain(&error)),
                    "check the media site's certificate; --insecure for a self-signed test certificate",
                )
            })?;
        handshake_and_ping(options, &url, tls, peer).await
    } else {
        handshake_and_ping(options, &url, tcp, peer).await
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, CheckResult> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| {
            CheckResult::fail(
                NAME,
                format!("cannot resolve {host}: {error}"),
                format!("check the DNS record of {host}"),
            )
        })?
        .collect();
    let mut last_error = String::from("no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = format!("{address}: {error}"),
        }
    }
    Err(CheckResult::fail(
        NAME,
        format!("cannot connect to {host}:{port} ({last_error})"),
        "is nginx running and TCP open in the firewall?",
    ))
}

async fn handshake_and_ping<S>(
    options: &Options,
    url: &Url,
    stream: S,
    peer: Option<SocketAddr>,
) -> Result<CheckResult, CheckResult>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|error| CheckResult::fail(NAME, format!("bad URL {url}: {error}"), ""))?;
    if let Ok(origin) = HeaderValue::from_str(&options.origin) {
        request.headers_mut().insert("Origin", origin);
    }
    let started = Instant::now();
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|error| handshake_failure(options, url, error))?;
    let upgraded_in = started.elapsed();
    socket
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .map_err(|error| CheckResult::fail(NAME, format!("sending ping failed: {error}"), ""))?;
    loop {
        let Some(message) = socket.next().await else {
            return Err(CheckResult::fail(
                NAME,
                "the server closed the socket instead of answering ping",
                "journalctl -u privatehub-media for the reason",
            ));
        };
        let message = message.map_err(|error| {
            CheckResult::fail(NAME, format!("socket error after upgrade: {error}"), "")
        })?;
        match message {
            Message::Text(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
                if field("type") == "pong" {
                    let _ = socket.close(None).await;
                    let via = peer.map(|peer| format!(" via {peer}")).unwrap_or_default();
                    return Ok(CheckResult::pass(
                        NAME,
                        format!(
                            "{url} upgraded in {} ms{via}, ping answered with pong",
                            upgraded_in.as_millis()
                        ),
                    ));
                }
                if field("type") == "error" {
                    let (code, message) = (field("code"), field("message"));
                    let hint = if code == "forbidden" || message.contains("origin") {
                        format!(
                            "the media server refused Origin {}: add it to CORS_ORIGIN in media.env",
                            options.origin
                        )
                    } else {
                        "journalctl -u privatehub-media -n 50".to_owned()
                    };
                    return Err(CheckResult::fail(
                        NAME,
                        format!("the media server answered ping with error {code}: {message}"),
                        hint,
                    ));
                }
                return Err(CheckResult::fail(
                    NAME,
                    format!("expected pong, got {}", snippet(&text)),
                    "media server and this tool disagree on the protocol: same version?",
                ));
            }
            Message::Close(frame) => {
                return Err(CheckResult::fail(
                    NAME,
                    format!("server closed the socket: {frame:?}"),
                    "journalctl -u privatehub-media for the reason",
                ));
            }
            _ => continue,
        }
    }
}

fn handshake_failure(options: &Options, url: &Url, error: tungstenite::Error) -> CheckResult {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|bytes| body_note(&String::from_utf8_lossy(bytes)))
                .unwrap_or_default();
            let hint = match status.as_u16() {
                403 => format!(
                    "the media server refused Origin {}: add it to CORS_ORIGIN in media.env",
                    options.origin
                ),
                400 | 426 => "the upgrade did not reach the media server: the nginx media site \
                              must pass Upgrade and Connection headers on /ws (HTTP/1.1)"
                    .to_owned(),
                502 | 504 => "nginx is up but the media server is not answering: \
                            systemctl status privatehub-media"
                    .to_owned(),
                404 => "no /ws at this URL: is the media URL right?".to_owned(),
                _ => "journalctl -u privatehub-media -n 50".to_owned(),
            };
            CheckResult::fail(
                NAME,
                format!("WebSocket upgrade of {url} refused with {status}{body}"),
                hint,
            )
        }
        other => CheckResult::fail(
            NAME,
            format!("WebSocket upgrade of {url} failed: {}", error_chain(&other)),
            "check the /ws location of the media site in nginx",
        ),
    }
}
