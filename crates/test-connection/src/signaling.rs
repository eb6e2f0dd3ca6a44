//! The two WebSockets browsers open, each on `/ws` through whatever fronts the service and
//! with the app's `Origin`, as a browser would send it: the media signaling socket (send
//! `ping`, expect `pong`) and the app's real-time socket (the upgrade must succeed).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::health::{Service, body_note, error_chain, join, snippet};
use crate::options::Options;
use crate::report::CheckResult;
use crate::tls::client_config;

const MEDIA: &str = "media signaling";
const APP: &str = "app socket";

/// The media signaling check: upgrade, `ping`, `pong`.
pub async fn check(options: &Options) -> CheckResult {
    let url = ws_url(&options.media_url);
    let exchange = async {
        let opened = open(options, MEDIA, Service::Media, &url).await?;
        ping(options, &url, opened).await
    };
    bounded(options, MEDIA, &url, exchange).await
}

/// The app's real-time socket: the upgrade through nginx succeeds with the app's origin.
pub async fn check_app(options: &Options) -> CheckResult {
    let url = ws_url(&options.app_url);
    let exchange = async {
        let mut opened = open(options, APP, Service::App, &url).await?;
        let _ = opened.socket.close(None).await;
        Ok(CheckResult::pass(APP, upgraded(&url, &opened)))
    };
    bounded(options, APP, &url, exchange).await
}

/// `http(s)://host/prefix` → `ws(s)://host/prefix/ws`.
pub fn ws_url(base: &Url) -> Url {
    let mut url = join(base, "/ws");
    let scheme = if base.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    url.set_scheme(scheme)
        .expect("ws and wss are valid schemes");
    url
}

async fn bounded(
    options: &Options,
    name: &str,
    url: &Url,
    exchange: impl Future<Output = Result<CheckResult, CheckResult>>,
) -> CheckResult {
    match tokio::time::timeout(options.timeout, exchange).await {
        Ok(Ok(result)) | Ok(Err(result)) => result,
        Err(_) => CheckResult::fail(
            name,
            format!("no answer within {} s on {url}", options.timeout.as_secs()),
            "nginx may buffer or time out the upgrade: check the /ws location of the site",
        ),
    }
}

/// Any byte stream a WebSocket can run over (TCP, or TLS over TCP).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Opened {
    socket: WebSocketStream<Box<dyn Io>>,
    peer: Option<SocketAddr>,
    took: Duration,
}

fn upgraded(url: &Url, opened: &Opened) -> String {
    let via = opened
        .peer
        .map(|peer| format!(" via {peer}"))
        .unwrap_or_default();
    format!("{url} upgraded in {} ms{via}", opened.took.as_millis())
}

/// TCP (+ TLS for `wss`) and the WebSocket handshake with the configured `Origin`.
async fn open(
    options: &Options,
    name: &str,
    service: Service,
    url: &Url,
) -> Result<Opened, CheckResult> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = connect(name, &host, port).await?;
    let peer = tcp.peer_addr().ok();
    let stream: Box<dyn Io> = if url.scheme() == "wss" {
        let server_name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
            CheckResult::fail(name, format!("{host:?} is not a valid TLS name"), "")
        })?;
        let tls = TlsConnector::from(client_config(options.insecure))
            .connect(server_name, tcp)
            .await
            .map_err(|error| {
                CheckResult::fail(
                    name,
                    format!("TLS to {host}:{port} failed: {}", error_chain(&error)),
                    "check the site's certificate; --insecure for a self-signed test certificate",
                )
            })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|error| CheckResult::fail(name, format!("bad URL {url}: {error}"), ""))?;
    if let Ok(origin) = HeaderValue::from_str(&options.origin) {
        request.headers_mut().insert("Origin", origin);
    }
    let started = Instant::now();
    let (socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|error| handshake_failure(options, name, service, url, error))?;
    Ok(Opened {
        socket,
        peer,
        took: started.elapsed(),
    })
}

async fn connect(name: &str, host: &str, port: u16) -> Result<TcpStream, CheckResult> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| {
            CheckResult::fail(
                name,
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
        name,
        format!("cannot connect to {host}:{port} ({last_error})"),
        "is nginx running and TCP open in the firewall?",
    ))
}

/// `{"type":"ping"}` on the media socket; the first text answer must be `pong`.
async fn ping(
    options: &Options,
    url: &Url,
    mut opened: Opened,
) -> Result<CheckResult, CheckResult> {
    let journal = "journalctl -u privatehub-media -n 50 for the reason";
    opened
        .socket
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .map_err(|error| CheckResult::fail(MEDIA, format!("sending ping failed: {error}"), ""))?;
    loop {
        let Some(message) = opened.socket.next().await else {
            return Err(CheckResult::fail(
                MEDIA,
                "the server closed the socket instead of answering ping",
                journal,
            ));
        };
        let message = message.map_err(|error| {
            CheckResult::fail(MEDIA, format!("socket error after upgrade: {error}"), "")
        })?;
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Err(CheckResult::fail(
                    MEDIA,
                    format!("server closed the socket: {frame:?}"),
                    journal,
                ));
            }
            _ => continue,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
        return match field("type") {
            "pong" => {
                let _ = opened.socket.close(None).await;
                Ok(CheckResult::pass(
                    MEDIA,
                    format!("{}, ping answered with pong", upgraded(url, &opened)),
                ))
            }
            "error" => {
                let (code, message) = (field("code"), field("message"));
                let hint = if code == "forbidden" || message.contains("origin") {
                    origin_hint(options, Service::Media)
                } else {
                    journal.to_owned()
                };
                Err(CheckResult::fail(
                    MEDIA,
                    format!("the media server answered ping with error {code}: {message}"),
                    hint,
                ))
            }
            _ => Err(CheckResult::fail(
                MEDIA,
                format!("expected pong, got {}", snippet(&text)),
                "media server and this tool disagree on the protocol: same version?",
            )),
        };
    }
}

fn origin_hint(options: &Options, service: Service) -> String {
    match service {
        Service::Media => format!(
            "the media server refused Origin {}: add it to CORS_ORIGIN in media.env",
            options.origin
        ),
        Service::App => format!(
            "the app refused Origin {}: APP_PUBLIC_URL in app.env must be exactly this origin",
            options.origin
        ),
    }
}

fn handshake_failure(
    options: &Options,
    name: &str,
    service: Service,
    url: &Url,
    error: tungstenite::Error,
) -> CheckResult {
    let unit = service.unit();
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|bytes| body_note(&String::from_utf8_lossy(bytes)))
                .unwrap_or_default();
            let hint = match status.as_u16() {
                403 => origin_hint(options, service),
                400 | 426 => format!(
                    "the upgrade did not reach {unit}: its nginx site must pass Upgrade and \
                     Connection headers on /ws (HTTP/1.1)"
                ),
                502 | 504 => {
                    format!("nginx is up but {unit} is not answering: systemctl status {unit}")
                }
                404 => "no /ws at this URL: is the URL right?".to_owned(),
                _ => format!("journalctl -u {unit} -n 50"),
            };
            CheckResult::fail(
                name,
                format!("WebSocket upgrade of {url} refused with {status}{body}"),
                hint,
            )
        }
        other => CheckResult::fail(
            name,
            format!("WebSocket upgrade of {url} failed: {}", error_chain(&other)),
            "check the /ws location of the site in nginx",
        ),
    }
}
