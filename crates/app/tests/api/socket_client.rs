//! A test client of the app's `/ws` socket, opened from any loopback address.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{ORIGIN, TestApp, client, session_set_cookie};

/// How long to wait for an expected socket message.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct Socket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// Opens `/ws` from this site's origin, with a session cookie if given.
    pub async fn open(app: &TestApp, cookie: Option<&str>) -> Socket {
        Socket::open_from(app, cookie, Ipv4Addr::LOCALHOST).await
    }

    /// Like [`Socket::open`], from the loopback address `source` (127.x.y.z), so that
    /// per-address counts and limits see several clients.
    pub async fn open_from(app: &TestApp, cookie: Option<&str>, source: Ipv4Addr) -> Socket {
        Socket::try_open_from(app, cookie, source)
            .await
            .expect("socket opens")
    }

    pub async fn try_open_from(
        app: &TestApp,
        cookie: Option<&str>,
        source: Ipv4Addr,
    ) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        let url = format!("{}/ws", app.address.replace("http://", "ws://"));
        let mut request = url.into_client_request().expect("request");
        request
            .headers_mut()
            .insert("Origin", ORIGIN.parse().expect("header"));
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert("Cookie", cookie.parse().expect("header"));
        }
        let tcp = TcpSocket::new_v4().expect("tcp socket");
        tcp.bind(SocketAddr::from((source, 0)))
            .expect("bind source");
        let port = app
            .address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok());
        let stream = tcp
            .connect(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                port.expect("app port"),
            )))
            .await
            .expect("connect");
        let (ws, _) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
        Ok(Socket { ws })
    }

    /// Like [`Socket::joined`], from the loopback address `source`.
    pub async fn joined_from(
        app: &TestApp,
        cookie: Option<&str>,
        channel: &str,
        source: Ipv4Addr,
    ) -> Socket {
        let mut socket = Socket::open_from(app, cookie, source).await;
        socket
            .send(json!({"type": "live:join", "channel": channel}))
            .await;
        socket.expect("live:state").await;
        socket.expect("chat:history").await;
        socket
    }

    /// Opens a socket and joins `channel`, consuming the join replies.
    pub async fn joined(app: &TestApp, cookie: Option<&str>, channel: &str) -> Socket {
        Socket::joined_from(app, cookie, channel, Ipv4Addr::LOCALHOST).await
    }

    pub async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    /// The next message of type `kind`, skipping others.
    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_within(kind, WAIT).await
    }

    /// Like [`Socket::expect`], waiting up to `within`.
    pub async fn expect_within(&mut self, kind: &str, within: Duration) -> Value {
        self.next_matching(within, |message| message["type"] == kind)
            .await
            .unwrap_or_else(|| panic!("no {kind} message within {within:?}"))
    }

    /// The next text message for which `wanted` holds, skipping others; `None` after
    /// `within`.
    pub async fn next_matching(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        tokio::time::timeout(within, async {
            loop {
                let frame = self.ws.next().await.expect("socket open").expect("frame");
                let Message::Text(text) = frame else { continue };
                let message: Value = serde_json::from_str(text.as_str()).expect("json");
                if wanted(&message) {
                    return message;
                }
            }
        })
        .await
        .ok()
    }

    /// Waits for a `live:viewers` message with `count`.
    pub async fn expect_viewers(&mut self, count: u64) {
        self.expect_viewers_within(count, WAIT).await;
    }

    /// Waits (up to `within`) for the server to close the socket; false if it stays open.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// The type of the next message that is `first` or `second`.
    pub async fn expect_either(&mut self, first: &str, second: &str) -> Value {
        self.next_matching(WAIT, |m| m["type"] == first || m["type"] == second)
            .await
            .map(|message| message["type"].clone())
            .unwrap_or_else(|| panic!("neither {first} nor {second} within {WAIT:?}"))
    }

    /// Waits up to `within` for a `live:viewers` message with `count`.
    pub async fn expect_viewers_within(&mut self, count: u64, within: Duration) {
        let wanted =
            |message: &Value| message["type"] == "live:viewers" && message["count"] == count;
        if self.next_matching(within, wanted).await.is_none() {
            panic!("viewer count never became {count}");
        }
    }
}

/// Logs `username` in (a second session) and returns the client and its cookie.
pub async fn login_session(app: &TestApp, username: &str) -> (reqwest::Client, String) {
    let client = client();
    let response = app
        .post(
            &client,
            "/api/auth/login",
            &json!({"username": username, "password": crate::helpers::PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 200);
    (client, cookie_header(&response))
}

/// The `Cookie` header value that carries the session a response set.
fn cookie_header(response: &reqwest::Response) -> String {
    let set_cookie = session_set_cookie(response);
    set_cookie.split(';').next().expect("cookie").to_owned()
}

/// Signs `username` up and returns the `Cookie` header value of its session.
pub async fn session(app: &TestApp, username: &str) -> (reqwest::Client, String) {
    let client = client();
    let response = app.signup(&client, username).await;
    assert_eq!(response.status(), 201);
    (client, cookie_header(&response))
}
