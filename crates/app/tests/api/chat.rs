//! The real-time socket (`/ws`): chat, moderation, viewer counts, live events, and the
//! origin check, over real WebSockets.

use std::net::Ipv4Addr;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{client, spawn_app, spawn_app_with};
use crate::socket_client::{Socket, WAIT, session};

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
    // Shown first, then stored; the sender is told when it is.
    let stored = bob.expect("chat:stored").await;
    assert!(stored["message_id"].is_i64(), "{stored}");
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

/// The count as `docs/protocol.md` defines it: the owner never counts, the tabs of one
/// signed-in session count once, anonymous sockets once per address.
#[tokio::test]
async fn viewer_count_counts_people_not_tabs_and_its_peak_is_kept() {
    let app = spawn_app().await;
    let (alice, alice_cookie) = session(&app, "alice").await;
    let (_, bob_cookie) = session(&app, "bob").await;
    let (_, carol_cookie) = session(&app, "carol").await;
    app.start_live(&alice, "Counting").await;
    let from = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let mut owner = Socket::joined_from(&app, Some(&alice_cookie), "alice", from(1)).await;
    owner.expect_viewers(0).await;

    // Two anonymous tabs on one address count once; another address counts again.
    let first = Socket::joined_from(&app, None, "alice", from(2)).await;
    owner.expect_viewers(1).await;
    let same_address = Socket::joined_from(&app, None, "alice", from(2)).await;
    let mut elsewhere = Socket::joined_from(&app, None, "alice", from(3)).await;
    owner.expect_viewers(2).await;
    // Two tabs of bob's session count once; carol, on bob's address, counts too.
    let _bob_tab = Socket::joined_from(&app, Some(&bob_cookie), "alice", from(4)).await;
    let _bob_other_tab = Socket::joined_from(&app, Some(&bob_cookie), "alice", from(4)).await;
    let _carol = Socket::joined_from(&app, Some(&carol_cookie), "alice", from(4)).await;
    owner.expect_viewers(4).await;
    elsewhere.expect_viewers(4).await;
    let lives: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
    assert_eq!(lives[0]["viewers"], 4, "{lives}");
    // The peak reaches the database while the live goes on (so a crash keeps it), in one
    // write per second rather than one per arriving viewer.
    let alice_name = privatehub_app::domain::Username::parse("alice").unwrap();
    let stored_peak = || {
        let mut connection = app.state.pool.get().unwrap();
        privatehub_app::db::lives::find_current_by_username(&mut connection, &alice_name)
            .unwrap()
            .map_or(0, |live| live.peak_viewers)
    };
    let deadline = std::time::Instant::now() + WAIT;
    while stored_peak() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the peak was not stored while live"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The address stays counted while one of its tabs is open.
    drop(first);
    drop(elsewhere);
    owner.expect_viewers(3).await;
    drop(same_address);
    owner.expect_viewers(2).await;

    let response = app.post(&alice, "/api/lives/stop", &json!({})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(owner.expect("live:ended").await["channel"], "alice");
    let history: Value = app
        .get(&client(), "/api/users/alice/lives")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history[0]["peak_viewers"], 4, "{history}");

    app.start_live(&alice, "Again").await;
    let started = owner.expect("live:started").await;
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
    app.wait_count("chat_messages", 5).await;
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

    let database = app.database.clone();
    let restarted = spawn_app_with(|settings| settings.database = database).await;
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
    assert!(
        socket.closed_within(WAIT).await,
        "an oversized frame closes the socket"
    );
}

/// A message cannot reorder or hide text, nor fake a line of its own.
#[tokio::test]
async fn chat_lines_and_titles_lose_reordering_characters_and_line_breaks() {
    let app = spawn_app().await;
    let (alice, _) = session(&app, "alice").await;
    let (_, bob_cookie) = session(&app, "bob").await;
    let live = app
        .start_live(&alice, "Cooking\u{202E}\n night\u{200B}")
        .await;
    assert_eq!(live["title"], "Cooking  night");
    let mut bob = Socket::joined(&app, Some(&bob_cookie), "alice").await;
    bob.send(json!({"type": "chat:send", "text": "hi\nalice: I am the admin \u{2066}gpj.exe\u{2069}\u{FEFF}"}))
        .await;
    let message = bob.expect("chat:message").await["message"].clone();
    assert_eq!(message["text"], "hi alice: I am the admin gpj.exe");
}
