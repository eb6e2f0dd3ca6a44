//! The real-time socket (`/ws`): chat, moderation, viewer counts, live events, and the
//! origin check, over real WebSockets.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{ORIGIN, TestApp, client, session_set_cookie, spawn_app, spawn_app_with};

/// How long to wait for an expected socket message.
const WAIT: Duration = Duration::from_secs(5);

struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// Opens `/ws` from this site's origin, with a session cookie if given.
    async fn open(app: &TestApp, cookie: Option<&str>) -> Socket {
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
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("socket opens");
        Socket { ws }
    }

    /// Opens a socket and joins `channel`, consuming the join replies.
    async fn joined(app: &TestApp, cookie: Option<&str>, channel: &str) -> Socket {
        let mut socket = Socket::open(app, cookie).await;
        socket
            .send(json!({"type": "live:join", "channel": channel}))
            .await;
        socket.expect("live:state").await;
        socket.expect("chat:history").await;
        socket
    }

    async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    /// The next message of type `kind`, skipping others.
    async fn expect(&mut self, kind: &str) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                let frame = self.ws.next().await.expect("socket open").expect("frame");
                if let Message::Text(text) = frame {
                    let message: Value = serde_json::from_str(text.as_str()).expect("json");
                    if message["type"] == kind {
                        return message;
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} message within {WAIT:?}"))
    }

    /// Waits for a `live:viewers` message with `count`.
    async fn expect_viewers(&mut self, count: u64) {
        tokio::time::timeout(WAIT, async {
            while self.expect("live:viewers").await["count"] != count {}
        })
        .await
        .unwrap_or_else(|_| panic!("viewer count never became {count}"));
    }
}

/// Signs `username` up and returns the `Cookie` header value of its session.
async fn session(app: &TestApp, username: &str) -> (reqwest::Client, String) {
    let client = client();
    let response = app.signup(&client, username).await;
    assert_eq!(response.status(), 201);
    let set_cookie = session_set_cookie(&response);
    let cookie = set_cookie.split(';').next().expect("cookie").to_owned();
    (client, cookie)
}

#[tokio::test]
async fn chat_reaches_everyone_as_plain_text_and_is_stored() {
    let app = spawn_app().await;
    let (alice, alice_cookie) = session(&app, "alice").await;
    let (_, bob_cookie) = session(&app, "bob").await;
    app.start_live(&alice, "Hello").await;

    let mut owner = Socket::joined(&app, Some(&alice_cookie), "alice").await;
    let mut bob = Socket::joined(&app, Some(&bob_cookie), "Alice").await;
    let mut anonymous = Socket::joined(&app, None, "alice").await;

    bob.send(json!({"type": "user:online"})).await;
    assert_eq!(bob.expect("user:online").await["username"], "bob");
    anonymous.send(json!({"type": "user:online"})).await;
    assert_eq!(
        anonymous.expect("user:online").await["username"],
        Value::Null
    );

    let hostile = "<img src=x onerror=alert(1)> hi";
    bob.send(json!({"type": "chat:send", "text": format!("  {hostile}  ")}))
        .await;
    for socket in [&mut owner, &mut bob, &mut anonymous] {
        let message = socket.expect("chat:message").await["message"].clone();
        assert_eq!(message["text"], hostile);
        assert_eq!(message["username"], "bob");
        assert_eq!(message["channel"], "alice");
    }
    assert_eq!(app.count("chat_messages"), 1);

    anonymous
        .send(json!({"type": "chat:send", "text": "me too"}))
        .await;
    assert_eq!(anonymous.expect("error").await["code"], "not_signed_in");
    bob.send(json!({"type": "chat:send", "text": "x".repeat(501)}))
        .await;
    assert_eq!(bob.expect("error").await["code"], "message_too_long");
    bob.send(json!({"type": "chat:send", "text": " \n "})).await;
    assert_eq!(bob.expect("error").await["code"], "empty_message");
    bob.send(json!({"type": "chat:shout", "text": "x"})).await;
    assert_eq!(bob.expect("error").await["code"], "malformed_message");
    assert_eq!(app.count("chat_messages"), 1);
}

#[tokio::test]
async fn viewer_count_is_pushed_listed_and_its_peak_kept() {
    let app = spawn_app().await;
    let (alice, alice_cookie) = session(&app, "alice").await;
    app.start_live(&alice, "Counting").await;
    let mut owner = Socket::joined(&app, Some(&alice_cookie), "alice").await;
    owner.expect_viewers(0).await;

    let first = Socket::joined(&app, None, "alice").await;
    owner.expect_viewers(1).await;
    let mut second = Socket::joined(&app, None, "alice").await;
    owner.expect_viewers(2).await;
    second.expect_viewers(2).await;
    let lives: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
    assert_eq!(lives[0]["viewers"], 2, "{lives}");

    drop(first);
    owner.expect_viewers(1).await;
    second.expect_viewers(1).await;

    let response = app.post(&alice, "/api/lives/stop", &json!({})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(second.expect("live:ended").await["channel"], "alice");
    let history: Value = app
        .get(&client(), "/api/users/alice/lives")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history[0]["peak_viewers"], 2, "{history}");

    app.start_live(&alice, "Again").await;
    let started = second.expect("live:started").await;
    assert_eq!(started["live"]["title"], "Again");
}

#[tokio::test]
async fn sending_too_fast_is_refused_with_a_retry_time() {
    let app = spawn_app().await;
    let (alice, _) = session(&app, "alice").await;
    let (_, bob_cookie) = session(&app, "bob").await;
    app.start_live(&alice, "Busy").await;
    let mut bob = Socket::joined(&app, Some(&bob_cookie), "alice").await;
    for i in 0..5 {
        bob.send(json!({"type": "chat:send", "text": format!("message {i}")}))
            .await;
        bob.expect("chat:message").await;
    }
    bob.send(json!({"type": "chat:send", "text": "one too many"}))
        .await;
    let error = bob.expect("error").await;
    assert_eq!(error["code"], "rate_limited");
    let retry = error["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(retry > 0 && retry <= 5000, "{error}");
    assert_eq!(app.count("chat_messages"), 5);
}

#[tokio::test]
async fn broadcaster_deletes_and_bans_and_the_history_follows() {
    let app = spawn_app().await;
    let (alice, alice_cookie) = session(&app, "alice").await;
    let (_, bob_cookie) = session(&app, "bob").await;
    let (_, carol_cookie) = session(&app, "carol").await;
    app.start_live(&alice, "Moderated").await;
    let mut owner = Socket::joined(&app, Some(&alice_cookie), "alice").await;
    let mut bob = Socket::joined(&app, Some(&bob_cookie), "alice").await;
    let mut carol = Socket::joined(&app, Some(&carol_cookie), "alice").await;

    let mut ids = Vec::new();
    for text in ["first", "second", "third"] {
        bob.send(json!({"type": "chat:send", "text": text})).await;
        ids.push(carol.expect("chat:message").await["message"]["id"].clone());
    }
    carol
        .send(json!({"type": "chat:send", "text": "carol here"}))
        .await;
    carol.expect("chat:message").await;

    // Only the broadcaster moderates.
    carol
        .send(json!({"type": "chat:delete", "message_id": ids[0]}))
        .await;
    assert_eq!(carol.expect("error").await["code"], "forbidden");

    owner
        .send(json!({"type": "chat:delete", "message_id": ids[0]}))
        .await;
    assert_eq!(
        carol.expect("chat:deleted").await["message_ids"],
        json!([ids[0]])
    );
    owner
        .send(json!({"type": "chat:delete", "message_id": ids[0]}))
        .await;
    assert_eq!(owner.expect("error").await["code"], "unknown_message");

    owner
        .send(json!({"type": "chat:ban", "username": "BOB"}))
        .await;
    assert_eq!(
        carol.expect("chat:deleted").await["message_ids"],
        json!([ids[1], ids[2]])
    );
    assert_eq!(carol.expect("chat:banned").await["username"], "bob");
    bob.send(json!({"type": "chat:send", "text": "let me in"}))
        .await;
    assert_eq!(bob.expect("error").await["code"], "banned");

    // A new visitor's history has only carol's message.
    let mut late = Socket::open(&app, None).await;
    late.send(json!({"type": "live:join", "channel": "alice"}))
        .await;
    let history = late.expect("chat:history").await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["carol here"]);
}

#[tokio::test]
async fn history_survives_a_restart() {
    let app = spawn_app().await;
    let (alice, _) = session(&app, "alice").await;
    let (_, bob_cookie) = session(&app, "bob").await;
    app.start_live(&alice, "Persistent").await;
    let mut bob = Socket::joined(&app, Some(&bob_cookie), "alice").await;
    bob.send(json!({"type": "chat:send", "text": "still here?"}))
        .await;
    bob.expect("chat:message").await;

    let db_path = app.db_path.clone();
    let restarted = spawn_app_with(|settings| settings.database_path = db_path).await;
    let mut visitor = Socket::open(&restarted, None).await;
    visitor
        .send(json!({"type": "live:join", "channel": "alice"}))
        .await;
    let state = visitor.expect("live:state").await;
    assert_eq!(state["live"]["title"], "Persistent");
    assert_eq!(state["is_owner"], false);
    let history = visitor.expect("chat:history").await;
    assert_eq!(history["messages"][0]["text"], "still here?");
}

#[tokio::test]
async fn sockets_from_other_origins_or_without_origin_are_refused() {
    let app = spawn_app().await;
    let url = format!("{}/ws", app.address.replace("http://", "ws://"));
    for origin in [Some("http://evil.test"), None] {
        let mut request = url.clone().into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        let error = tokio_tungstenite::connect_async(request)
            .await
            .expect_err("refused");
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), 403, "{origin:?}");
            }
            other => panic!("unexpected error for {origin:?}: {other}"),
        }
    }
}

#[tokio::test]
async fn unknown_channels_and_oversized_frames() {
    let app = spawn_app().await;
    let mut socket = Socket::open(&app, None).await;
    socket
        .send(json!({"type": "live:join", "channel": "nobody"}))
        .await;
    assert_eq!(socket.expect("error").await["code"], "unknown_channel");
    socket.send(json!({"type": "ping"})).await;
    socket.expect("pong").await;

    socket
        .ws
        .send(Message::text("x".repeat(64 * 1024)))
        .await
        .expect("send");
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match socket.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an oversized frame closes the socket");
}
