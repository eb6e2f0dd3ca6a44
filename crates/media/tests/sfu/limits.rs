//! Per-client-IP limits on `/ws`: a flood of sockets from one address is refused with
//! `rate_limited` while a viewer (even one from the same address) keeps streaming.
//! Clients are placed at public addresses with `X-Forwarded-For` and
//! `MEDIA_TRUST_PROXY_HEADERS` on, as behind nginx; a loopback peer is not limited while
//! proxy headers are not trusted, but a header claiming loopback is.

use std::time::Duration;

use privatehub_media::MediaSettings;
use privatehub_protocol::{MediaClientMessage, MediaErrorCode, MediaRole, MediaServerMessage};

use crate::bot::{Bot, BotRole};
use crate::helpers::{
    SECRET, Ws, WsEvent, get_text, metric, spawn_server_with, token, wait_for_empty,
};

const LIVE: i64 = 31;
const T: Duration = Duration::from_secs(5);
const FLOODER: &str = "203.0.113.9";

/// Whether a fresh socket is admitted: it answers a ping, or it is refused with
/// `rate_limited` and closed.
async fn admitted(ws: &mut Ws) -> bool {
    ws.send(&MediaClientMessage::Ping).await;
    match ws.next_event(T).await {
        Some(WsEvent::Message(MediaServerMessage::Pong)) => true,
        Some(WsEvent::Message(MediaServerMessage::Error { code, close, .. })) => {
            assert_eq!(code, MediaErrorCode::RateLimited);
            assert!(close);
            assert!(ws.closed_within(T).await, "a refused socket is closed");
            false
        }
        other => panic!("expected pong or rate_limited, got {other:?}"),
    }
}

async fn start_live(settings: MediaSettings) -> (privatehub_media::RunningServer, Bot, Bot) {
    let server = spawn_server_with(settings).await;
    let http = server.http_addr;
    let publisher = Bot::start_on(
        Ws::connect_from(http, "198.51.100.1").await,
        &token(LIVE, MediaRole::Publish),
        BotRole::Publisher { tag: 1 },
    )
    .await;
    // The viewer comes from the flooder's own address, before the flood.
    let viewer = Bot::start_on(
        Ws::connect_from(http, FLOODER).await,
        &token(LIVE, MediaRole::Watch),
        BotRole::Viewer,
    )
    .await;
    viewer.wait_for("video", T, |s| s.video_frames >= 5).await;
    (server, publisher, viewer)
}

async fn finish(server: privatehub_media::RunningServer, publisher: Bot, viewer: Bot) {
    for mut bot in [viewer, publisher] {
        bot.stop_media();
        bot.ws.close().await;
    }
    wait_for_empty(&server, T).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sockets_per_ip_are_capped() {
    let _heap = crate::alloc::shared().await;
    let mut settings = MediaSettings::for_tests(SECRET, 42050, 1);
    settings.trust_proxy_headers = true;
    settings.max_sockets_per_ip = 4;
    settings.new_sockets_per_ip_per_sec = 0;
    let (server, publisher, viewer) = start_live(settings).await;
    let http = server.http_addr;
    let before = viewer.stats().video_frames;

    // The viewer holds one of the flooder's 4 places: 3 more get in, the rest are refused.
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..30 {
        let mut ws = Ws::connect_from(http, FLOODER).await;
        if admitted(&mut ws).await {
            kept.push(ws);
        } else {
            refused += 1;
        }
    }
    assert_eq!(kept.len(), 3, "admitted beyond the cap");
    assert_eq!(refused, 27);
    // Another address is not affected; without the header the loopback peer is not limited.
    let mut other = Ws::connect_from(http, "198.51.100.2").await;
    assert!(admitted(&mut other).await);
    let mut local = Ws::connect(http, None).await;
    assert!(admitted(&mut local).await);
    // A closed socket frees its place.
    kept.pop().unwrap().close().await;
    let mut again = None;
    for _ in 0..50 {
        let mut ws = Ws::connect_from(http, FLOODER).await;
        if admitted(&mut ws).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a place freed by a close is reusable");

    let metrics = get_text(http, "/metrics").await;
    assert!(metric(&metrics, "media_signaling_sockets_refused_total") >= 27.0);
    viewer
        .wait_for("video during the flood", T, |s| {
            s.video_frames >= before + 30
        })
        .await;
    assert!(viewer.stats().error.is_none());
    finish(server, publisher, viewer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sockets_per_ip_per_second_are_limited() {
    let _heap = crate::alloc::shared().await;
    let mut settings = MediaSettings::for_tests(SECRET, 42060, 1);
    settings.trust_proxy_headers = true;
    settings.max_sockets_per_ip = 0;
    settings.new_sockets_per_ip_per_sec = 5;
    let (server, publisher, viewer) = start_live(settings).await;
    let http = server.http_addr;
    // Let the bucket refill after the viewer's socket.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = viewer.stats().video_frames;

    // A tight loop of connect + close: about one second's worth gets in, the rest not.
    let (mut admitted_n, mut refused) = (0, 0);
    for _ in 0..40 {
        let mut ws = Ws::connect_from(http, FLOODER).await;
        if admitted(&mut ws).await {
            admitted_n += 1;
            ws.close().await;
        } else {
            refused += 1;
        }
    }
    eprintln!("rate flood: {admitted_n} admitted, {refused} refused");
    assert!((5..=12).contains(&admitted_n), "admitted {admitted_n}");
    assert!(refused >= 28, "refused {refused}");
    // Another address is not affected, and the flooder gets in again a second later.
    let mut other = Ws::connect_from(http, "198.51.100.3").await;
    assert!(admitted(&mut other).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut later = Ws::connect_from(http, FLOODER).await;
    assert!(admitted(&mut later).await);

    viewer
        .wait_for("video during the flood", T, |s| {
            s.video_frames >= before + 30
        })
        .await;
    finish(server, publisher, viewer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_ignored_unless_trusted() {
    let _heap = crate::alloc::shared().await;
    let mut settings = MediaSettings::for_tests(SECRET, 42070, 1);
    settings.max_sockets_per_ip = 1;
    let server = spawn_server_with(settings).await;
    let http = server.http_addr;
    // The peer is loopback (not limited) and the header is not believed.
    let mut kept = Vec::new();
    for _ in 0..5 {
        let mut ws = Ws::connect_from(http, FLOODER).await;
        assert!(admitted(&mut ws).await);
        kept.push(ws);
    }
    let metrics = get_text(http, "/metrics").await;
    assert_eq!(metric(&metrics, "media_signaling_sockets"), 5.0);
    for mut ws in kept {
        ws.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_loopback_and_ipv6_neighbours_are_limited() {
    let _heap = crate::alloc::shared().await;
    let mut settings = MediaSettings::for_tests(SECRET, 42110, 1);
    settings.trust_proxy_headers = true;
    settings.max_sockets_per_ip = 1;
    settings.new_sockets_per_ip_per_sec = 0;
    let server = spawn_server_with(settings).await;
    let http = server.http_addr;
    // A header saying loopback is only a claim: the cap applies.
    let mut kept = Vec::new();
    for claimed in ["::1", "127.0.0.1", "2001:db8:5:6::1"] {
        let mut first = Ws::connect_from(http, claimed).await;
        assert!(admitted(&mut first).await, "{claimed}");
        kept.push(first);
        let mut second = Ws::connect_from(http, claimed).await;
        assert!(!admitted(&mut second).await, "second socket from {claimed}");
    }
    // Another address in the same IPv6 /64 is the same client; the next /64 is not.
    let mut neighbour = Ws::connect_from(http, "2001:db8:5:6:ffff::2").await;
    assert!(!admitted(&mut neighbour).await, "same /64");
    let mut next_net = Ws::connect_from(http, "2001:db8:5:7::1").await;
    assert!(admitted(&mut next_net).await, "another /64");
    kept.push(next_net);
    let metrics = get_text(http, "/metrics").await;
    assert_eq!(
        metric(&metrics, "media_signaling_sockets_refused_total"),
        4.0
    );
    for mut ws in kept {
        ws.close().await;
    }
    server.stop().await;
}
