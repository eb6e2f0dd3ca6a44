//! A client that keeps sending allowed messages but never reads (its TCP receive window
//! stays full) is closed within a bounded time, and what it held is released: its place
//! in `media_signaling_sockets` and its peer when its session is cut, its per-IP slot
//! once the kernel has closed the connection too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use privatehub_media::MediaSettings;
use privatehub_protocol::{MediaClientMessage, MediaRole, MediaServerMessage, SessionDescription};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::bot::{BotRole, make_offer};
use crate::helpers::{SECRET, Ws, get_text, metric, spawn_server_with, token};

const LIVE: i64 = 41;
const CLIENT: &str = "203.0.113.41";
/// Generous, for each of the two closes: the session gives up on a send after 10 s once
/// the buffers are full, the kernel on the connection 20 s after the window closed.
const BOUND: Duration = Duration::from_secs(60);

/// A WebSocket client on a raw TCP stream with a tiny receive buffer: it writes frames
/// and, after the handshake, never reads.
async fn connect_non_reader(http: SocketAddr, forwarded_for: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(http).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         X-Forwarded-For: {forwarded_for}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read the response head only, byte by byte, so no frame is read with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("handshake response")
            .unwrap();
        assert_eq!(n, 1, "closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// A masked client text frame.
fn text_frame(payload: &str) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let payload = payload.as_bytes();
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend((n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend((n as u64).to_be_bytes());
        }
    }
    frame.extend(mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

async fn open_sockets(http: SocketAddr) -> f64 {
    metric(&get_text(http, "/metrics").await, "media_signaling_sockets")
}

/// An offer without candidates: the peer then waits in ICE checking until the connect
/// timeout instead of being dropped by ICE, so only the socket's close removes it.
fn offer_without_candidates() -> SessionDescription {
    let mut offer = make_offer(BotRole::Viewer, crate::bot::BotTransport::Udp).2;
    offer.sdp = offer
        .sdp
        .split("\r\n")
        .filter(|line| !line.starts_with("a=candidate"))
        .collect::<Vec<_>>()
        .join("\r\n");
    offer
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_released() {
    let _heap = crate::alloc::shared().await;
    let mut settings = MediaSettings::for_tests(SECRET, 42090, 1);
    settings.trust_proxy_headers = true;
    settings.max_sockets_per_ip = 1;
    settings.new_sockets_per_ip_per_sec = 0;
    settings.connect_timeout_secs = 600;
    let server = spawn_server_with(settings).await;
    let http = server.http_addr;
    let before = open_sockets(http).await;

    let started = Instant::now();
    let mut stream = connect_non_reader(http, CLIENT).await;
    let watch = MediaClientMessage::Watch {
        token: token(LIVE, MediaRole::Watch),
        offer: offer_without_candidates(),
    };
    stream
        .write_all(&text_frame(&serde_json::to_string(&watch).unwrap()))
        .await
        .unwrap();
    wait_for("the watch registers", Duration::from_secs(10), async || {
        server.counts() == (1, 1)
    })
    .await;
    assert_eq!(open_sockets(http).await, before + 1.0);

    // Allowed messages, within the rate limit, whose replies are large (an unknown type
    // is named in the error): the buffers toward the client (on loopback the kernel
    // grows the server's send buffer to a few MB) fill within seconds.
    let large = text_frame(&format!(r#"{{"type":"{}"}}"#, "x".repeat(60 * 1024)));
    let writer = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(60));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            pace.tick().await;
            if let Err(error) = stream.write_all(&large).await {
                return error;
            }
        }
    });

    wait_for("the session closes", BOUND, async || {
        open_sockets(http).await == before
    })
    .await;
    eprintln!(
        "non-reading client's session closed after {:?}",
        started.elapsed()
    );
    let metrics = get_text(http, "/metrics").await;
    assert_eq!(metric(&metrics, "media_signaling_send_timeouts_total"), 1.0);
    // Its peer is gone...
    wait_for("the peer is removed", Duration::from_secs(5), async || {
        server.counts() == (0, 0)
    })
    .await;
    // ...the connection itself is closed (with what was queued for it): the client's
    // writes fail...
    let error = tokio::time::timeout(BOUND, writer)
        .await
        .expect("the server never closed the TCP connection")
        .unwrap();
    // ...and then its per-IP place (the cap is 1) is free again: while the connection
    // held the server's buffers it still counted.
    let mut again = Ws::connect_from(http, CLIENT).await;
    again.send(&MediaClientMessage::Ping).await;
    assert_eq!(
        again.recv(Duration::from_secs(5)).await,
        Some(MediaServerMessage::Pong)
    );
    again.close().await;
    eprintln!("connection closed after {:?}: {error}", started.elapsed());
    server.stop().await;
}
