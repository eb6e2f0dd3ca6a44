//! Test helpers: an in-process server, tokens, a WebSocket client.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use privatehub_media::{MediaSettings, RunningServer};
use privatehub_protocol::{
    LiveId, MediaClientMessage, MediaRole, MediaServerMessage, MediaTokenClaims, issue_media_token,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-for-the-media-server-tests";

pub async fn spawn_server(rtc_min_port: u16, workers: usize) -> RunningServer {
    spawn_server_with(MediaSettings::for_tests(SECRET, rtc_min_port, workers)).await
}

pub async fn spawn_server_with(settings: MediaSettings) -> RunningServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    privatehub_media::start(settings)
        .await
        .expect("server starts")
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(live: i64, role: MediaRole) -> String {
    let claims = MediaTokenClaims::new(LiveId(live), "alice", "bob", role, now_unix(), 300);
    issue_media_token(&claims, SECRET.as_bytes()).unwrap()
}

pub fn token_with(
    live: i64,
    role: MediaRole,
    secret: &str,
    issued_secs_ago: u64,
    ttl: u64,
) -> String {
    let claims = MediaTokenClaims::new(
        LiveId(live),
        "alice",
        "bob",
        role,
        now_unix() - issued_secs_ago,
        ttl,
    );
    issue_media_token(&claims, secret.as_bytes()).unwrap()
}

/// Waits until the server's registered (rooms, peers) are both zero.
pub async fn wait_for_empty(server: &RunningServer, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = server.counts();
        if counts == (0, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server still holds (rooms, peers) = {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn get_text(http: SocketAddr, path: &str) -> String {
    reqwest::get(format!("http://{http}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled metric.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// What arrived on a test WebSocket.
#[derive(Debug)]
pub enum WsEvent {
    Message(MediaServerMessage),
    Closed,
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(http: SocketAddr, origin: Option<&str>) -> Ws {
        Self::connect_with(http, origin, None).await
    }

    /// Connects as if through a proxy that saw the client at `forwarded_for`.
    pub async fn connect_from(http: SocketAddr, forwarded_for: &str) -> Ws {
        Self::connect_with(http, None, Some(forwarded_for)).await
    }

    async fn connect_with(
        http: SocketAddr,
        origin: Option<&str>,
        forwarded_for: Option<&str>,
    ) -> Ws {
        let mut request = format!("ws://{http}/ws").into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        if let Some(ip) = forwarded_for {
            request
                .headers_mut()
                .insert("X-Forwarded-For", ip.parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Ws { stream }
    }

    pub async fn send(&mut self, message: &MediaClientMessage) {
        self.send_text(serde_json::to_string(message).unwrap())
            .await;
    }

    pub async fn send_text(&mut self, text: String) {
        let _ = self.stream.send(Message::text(text)).await;
    }

    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.stream.send(message).await;
    }

    /// The next server event, or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<WsEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    let message = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("server sent bad JSON {text}: {e}"));
                    return Some(WsEvent::Message(message));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Some(WsEvent::Closed),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next server message (panics on close).
    pub async fn recv(&mut self, timeout: Duration) -> Option<MediaServerMessage> {
        match self.next_event(timeout).await? {
            WsEvent::Message(m) => Some(m),
            WsEvent::Closed => None,
        }
    }

    /// Waits for a message matching `pred`, skipping others.
    pub async fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&MediaServerMessage) -> bool,
    ) -> MediaServerMessage {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(WsEvent::Message(m)) if pred(&m) => return m,
                Some(WsEvent::Message(_)) => continue,
                other => panic!("waiting for {what}, got {other:?}"),
            }
        }
    }

    /// True if the server closes the socket within `timeout` (skipping messages).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(WsEvent::Closed) => return true,
                Some(WsEvent::Message(_)) => continue,
                None => return false,
            }
        }
    }

    pub async fn close(&mut self) {
        let _ = self.stream.close(None).await;
    }
}
