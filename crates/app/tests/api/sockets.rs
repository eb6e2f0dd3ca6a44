//! What one client can make the `/ws` socket hold: sockets per address, a client that
//! stops reading, and sockets of a session that logged out.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use privatehub_app::db::{chat, users};
use privatehub_app::domain::Username;
use privatehub_protocol::LiveId;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{ORIGIN, TestApp, spawn_app, spawn_app_with};
use crate::socket_client::{Socket, WAIT, login_session, session};

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

#[tokio::test]
async fn sockets_per_address_are_capped_and_loopback_is_not_exempt() {
    let app = spawn_app_with(|settings| settings.max_sockets_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Socket::open_from(&app, None, loopback(1)).await);
    }
    // The fourth from 127.0.0.1 is told why and closed.
    let mut refused = Socket::open_from(&app, None, loopback(1)).await;
    let error = refused.expect("error").await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert!(refused.closed_within(WAIT).await);
    assert_eq!(app.state.metrics.refused_socket_cap.load(Relaxed), 1);
    // Another address is not affected, and a closed socket frees its place.
    let mut other = Socket::open_from(&app, None, loopback(2)).await;
    other.send(json!({"type": "ping"})).await;
    other.expect("pong").await;
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = Socket::open_from(&app, None, loopback(1)).await;
        again.send(json!({"type": "ping"})).await;
        match again.expect_either("pong", "error").await.as_str() {
            Some("pong") => break,
            _ => assert!(Instant::now() < deadline, "the freed place never came back"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn logging_out_ends_that_sessions_sockets() {
    let app = spawn_app().await;
    let (alice, _) = session(&app, "alice").await;
    app.start_live(&alice, "Chat").await;
    let (bob, bob_cookie) = session(&app, "bob").await;
    let (_, bob_phone_cookie) = login_session(&app, "bob").await;
    let mut laptop = Socket::joined(&app, Some(&bob_cookie), "alice").await;
    let mut phone = Socket::joined(&app, Some(&bob_phone_cookie), "alice").await;

    let response = app.post(&bob, "/api/auth/logout", &json!({})).await;
    assert_eq!(response.status(), 204);
    assert!(
        laptop.closed_within(WAIT).await,
        "the logged-out session's socket stays open"
    );
    // Bob's other session is not affected and can still post.
    phone
        .send(json!({"type": "chat:send", "text": "still here"}))
        .await;
    assert_eq!(
        phone.expect("chat:message").await["message"]["text"],
        "still here"
    );
    phone.expect("chat:stored").await;
    assert_eq!(app.count("chat_messages"), 1);
    assert_eq!(app.state.metrics.sockets_ended_by_logout.load(Relaxed), 1);
}

/// Fills the live's history with 50 long messages (4-byte characters), so that every
/// join sends the joiner about 100 KB.
fn fill_history(app: &TestApp, live: LiveId, author: &str) {
    let mut connection = app.state.pool.get().expect("connection");
    let author = users::find_by_username(&mut connection, &Username::parse(author).unwrap())
        .unwrap()
        .expect("author exists");
    let body = "😀".repeat(500);
    for n in 0..50 {
        chat::insert_message(&mut connection, live, author.id, &body, n).unwrap();
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_no_longer_counted() {
    let app = spawn_app().await;
    let (alice, alice_cookie) = session(&app, "alice").await;
    let live = app.start_live(&alice, "Big history").await;
    fill_history(&app, LiveId(live["id"].as_i64().unwrap()), "alice");
    let mut owner = Socket::joined(&app, Some(&alice_cookie), "alice").await;
    owner.expect_viewers(0).await;

    // A client with a tiny receive window joins over and over and never reads: every
    // join queues ~100 KB for it (well under the 256 messages its outbox holds).
    let tcp = TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    tcp.bind((loopback(9), 0).into()).unwrap();
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let stream = tcp
        .connect((Ipv4Addr::LOCALHOST, port).into())
        .await
        .unwrap();
    let url = format!("{}/ws", app.address.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", ORIGIN.parse().unwrap());
    let (mut stalled, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    for _ in 0..40 {
        let join = json!({"type": "live:join", "channel": "alice"}).to_string();
        stalled.send(Message::text(join)).await.unwrap();
        // Under the 20 frames per second the socket allows.
        tokio::time::sleep(Duration::from_millis(70)).await;
    }
    owner.expect_viewers(1).await;

    // Without reading anything, it is dropped: out of the count, its socket closed.
    let started = Instant::now();
    owner
        .expect_viewers_within(0, Duration::from_secs(30))
        .await;
    println!("stalled socket dropped after {:?}", started.elapsed());
    let metrics = &app.state.metrics;
    let dropped =
        metrics.sockets_send_timeouts.load(Relaxed) + metrics.sockets_dropped_slow.load(Relaxed);
    assert!(dropped >= 1, "dropped {dropped}");
    assert_eq!(
        metrics.sockets_open.load(Relaxed),
        1,
        "only the owner's socket is left"
    );
    drop(stalled);
}
