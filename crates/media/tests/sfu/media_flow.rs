//! Publish → watch end to end, across workers, with a late viewer, a publisher
//! replacement, the publisher leaving, and everything freed afterwards.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use privatehub_protocol::{MediaRole, MediaServerMessage};

use crate::bot::{Bot, BotRole};
use crate::helpers::{get_text, metric, spawn_server, token, wait_for_empty};

const LIVE: i64 = 11;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_watch_replace_leave() {
    let _heap = crate::alloc::shared().await;
    let server = spawn_server(42000, 2).await;
    let http = server.http_addr;

    // A viewer may join before any publisher exists.
    let early = Bot::start(http, &token(LIVE, MediaRole::Watch), BotRole::Viewer).await;
    let publisher = Bot::start(
        http,
        &token(LIVE, MediaRole::Publish),
        BotRole::Publisher { tag: 1 },
    )
    .await;
    let mut viewers = vec![early];
    for _ in 0..2 {
        viewers.push(Bot::start(http, &token(LIVE, MediaRole::Watch), BotRole::Viewer).await);
    }
    for viewer in &viewers {
        viewer
            .wait_for("audio and video", Duration::from_secs(10), |s| {
                s.audio_frames >= 20 && s.video_frames >= 10
            })
            .await;
        let stats = viewer.stats();
        assert_eq!(
            stats.first_video_keyframe,
            Some(true),
            "first video frame must be a keyframe"
        );
        assert_eq!(stats.last_video_tag, Some(1));
    }
    let ports: HashSet<u16> = viewers
        .iter()
        .map(|v| v.stats().server_addr.unwrap().port())
        .collect();
    assert!(
        ports.len() >= 2,
        "viewers should be spread over workers: {ports:?}"
    );
    assert!(
        publisher.stats().keyframe_requests >= 1,
        "the SFU must ask the publisher for a keyframe"
    );

    // The early viewer was told when the publisher connected.
    let mut early = viewers.remove(0);
    early
        .ws
        .expect("publisher_joined", Duration::from_secs(5), |m| {
            matches!(m, MediaServerMessage::PublisherJoined { .. })
        })
        .await;

    // A late viewer's first video frame is a keyframe, even though the publisher's
    // periodic keyframe is seconds away.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let late = Bot::start(http, &token(LIVE, MediaRole::Watch), BotRole::Viewer).await;
    late.wait_for("late viewer video", Duration::from_secs(5), |s| {
        s.video_frames >= 3
    })
    .await;
    let stats = late.stats();
    assert_eq!(stats.first_video_keyframe, Some(true));
    let join_ms = stats
        .first_video_at
        .unwrap()
        .duration_since(late.created)
        .as_millis();
    eprintln!("late viewer: first keyframe {join_ms} ms after its answer");
    assert!(join_ms < 2000, "join took {join_ms} ms");
    viewers.push(early);
    viewers.push(late);

    // The publisher reconnects (a new publish for the same live): the old one is told
    // `replaced` and closed; viewers keep receiving, now the new publisher's frames.
    let mut old = publisher;
    let replacement = Bot::start(
        http,
        &token(LIVE, MediaRole::Publish),
        BotRole::Publisher { tag: 2 },
    )
    .await;
    old.ws
        .expect("replaced", Duration::from_secs(5), |m| {
            matches!(m, MediaServerMessage::Replaced { .. })
        })
        .await;
    assert!(old.ws.closed_within(Duration::from_secs(5)).await);
    old.stop_media();
    for viewer in &viewers {
        let before = viewer.stats().video_frames;
        viewer
            .wait_for(
                "video from the new publisher",
                Duration::from_secs(10),
                |s| s.last_video_tag == Some(2) && s.video_frames >= before + 10,
            )
            .await;
    }

    // The publisher leaves: viewers are told.
    let mut replacement = replacement;
    replacement
        .ws
        .send(&privatehub_protocol::MediaClientMessage::Leave)
        .await;
    for viewer in &mut viewers {
        viewer
            .ws
            .expect("publisher_left", Duration::from_secs(5), |m| {
                matches!(m, MediaServerMessage::PublisherLeft { .. })
            })
            .await;
    }
    replacement.stop_media();

    let metrics = get_text(http, "/metrics").await;
    assert!(metric(&metrics, "media_packets_forwarded_total") > 100.0);
    assert!(metric(&metrics, "media_keyframe_requests_sent_total") >= 1.0);
    assert!(metrics.contains("media_peer_setup_seconds_count"));

    // Everyone leaves: counters return to zero.
    for mut viewer in viewers {
        viewer.stop_media();
        viewer.ws.close().await;
    }
    wait_for_empty(&server, Duration::from_secs(5)).await;
    let metrics = get_text(http, "/metrics").await;
    for gauge in [
        "media_rooms",
        "media_publishers",
        "media_viewers",
        "media_peers",
    ] {
        assert_eq!(metric(&metrics, gauge), 0.0, "{gauge}");
    }
    let health: serde_json::Value =
        serde_json::from_str(&get_text(http, "/healthz").await).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["announced_ip"], "127.0.0.1");
    assert_eq!(health["rtc_ports"], serde_json::json!([42000, 42001]));
    server.stop().await;
    let _ = Instant::now();
}

/// DTLS close (`pc.close()`) and a client that never connects are both detected and
/// freed without the WebSocket closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_are_detected() {
    let _heap = crate::alloc::shared().await;
    let mut settings = privatehub_media::MediaSettings::for_tests(crate::helpers::SECRET, 42010, 1);
    settings.connect_timeout_secs = 2;
    let server = crate::helpers::spawn_server_with(settings).await;
    let http = server.http_addr;
    let publisher = Bot::start(
        http,
        &token(12, MediaRole::Publish),
        BotRole::Publisher { tag: 1 },
    )
    .await;
    let mut viewer = Bot::start(http, &token(12, MediaRole::Watch), BotRole::Viewer).await;
    viewer
        .wait_for("video", Duration::from_secs(10), |s| s.video_frames >= 5)
        .await;
    viewer.close_dtls();
    assert!(
        viewer.ws.closed_within(Duration::from_secs(3)).await,
        "server should drop a viewer that closed DTLS and close its socket"
    );
    let mut publisher = publisher;
    publisher.stop_media();
    publisher.ws.close().await;
    wait_for_empty(&server, Duration::from_secs(5)).await;

    // A watcher that gets an answer but never does ICE is dropped after the timeout.
    let (_rtc, _socket, offer, _pending, _, _) =
        crate::bot::make_offer(BotRole::Viewer, crate::bot::BotTransport::Udp);
    let mut ws = crate::helpers::Ws::connect(http, None).await;
    ws.send(&privatehub_protocol::MediaClientMessage::Watch {
        token: token(12, MediaRole::Watch),
        offer,
    })
    .await;
    assert!(matches!(
        ws.recv(Duration::from_secs(5)).await,
        Some(MediaServerMessage::Answer { .. })
    ));
    assert_eq!(server.counts(), (1, 1));
    assert!(
        ws.closed_within(Duration::from_secs(5)).await,
        "connect timeout closes the socket"
    );
    wait_for_empty(&server, Duration::from_secs(2)).await;
    assert!(
        server
            .metrics()
            .connect_timeouts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    server.stop().await;
}

/// A publisher whose camera freezes while its connection stays up: viewers are told
/// `publisher_stalled`, then `publisher_resumed` when frames come back, and keep
/// receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_stall_is_told_to_viewers() {
    let _heap = crate::alloc::shared().await;
    let server = spawn_server(42040, 2).await;
    let http = server.http_addr;
    let publisher = Bot::start(
        http,
        &token(13, MediaRole::Publish),
        BotRole::Publisher { tag: 1 },
    )
    .await;
    let mut viewer = Bot::start(http, &token(13, MediaRole::Watch), BotRole::Viewer).await;
    viewer
        .wait_for("video", Duration::from_secs(10), |s| s.video_frames >= 5)
        .await;
    publisher.pause_media(true);
    let paused_at = Instant::now();
    viewer
        .ws
        .expect(
            "publisher_stalled",
            Duration::from_secs(5),
            |m| matches!(m, MediaServerMessage::PublisherStalled { live_id } if live_id.0 == 13),
        )
        .await;
    let took = paused_at.elapsed();
    eprintln!(
        "publisher_stalled {} ms after the camera stopped",
        took.as_millis()
    );
    assert!(took >= Duration::from_millis(1000), "too early: {took:?}");
    // A viewer joining during the stall is told too.
    let mut late = Bot::start(http, &token(13, MediaRole::Watch), BotRole::Viewer).await;
    late.ws
        .expect(
            "publisher_stalled for a late viewer",
            Duration::from_secs(5),
            |m| matches!(m, MediaServerMessage::PublisherStalled { .. }),
        )
        .await;
    publisher.pause_media(false);
    for bot in [&mut viewer, &mut late] {
        bot.ws
            .expect("publisher_resumed", Duration::from_secs(5), |m| {
                matches!(m, MediaServerMessage::PublisherResumed { .. })
            })
            .await;
    }
    let before = viewer.stats().video_frames;
    viewer
        .wait_for("video again", Duration::from_secs(5), |s| {
            s.video_frames >= before + 10
        })
        .await;
    late.wait_for("late viewer video", Duration::from_secs(5), |s| {
        s.video_frames >= 5
    })
    .await;
    let metrics = get_text(http, "/metrics").await;
    assert_eq!(metric(&metrics, "media_publisher_stalls_total"), 1.0);
    for mut bot in [viewer, late, publisher] {
        bot.stop_media();
        bot.ws.close().await;
    }
    wait_for_empty(&server, Duration::from_secs(5)).await;
    server.stop().await;
}

/// Stopping the server (what SIGTERM does) tells every publishing and watching session
/// `server_restarting` before their sockets close, and stops within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_tells_every_session_the_server_restarts() {
    let _heap = crate::alloc::shared().await;
    let server = spawn_server(42120, 2).await;
    let http = server.http_addr;
    let mut publisher = Bot::start(
        http,
        &token(LIVE, MediaRole::Publish),
        BotRole::Publisher { tag: 1 },
    )
    .await;
    let mut viewer = Bot::start(http, &token(LIVE, MediaRole::Watch), BotRole::Viewer).await;
    viewer
        .wait_for("video", Duration::from_secs(10), |s| s.video_frames >= 3)
        .await;
    let stopping = Instant::now();
    let stopped = tokio::spawn(server.stop());
    for bot in [&mut publisher, &mut viewer] {
        let notice = bot
            .ws
            .expect("server_restarting", Duration::from_secs(5), |m| {
                matches!(m, MediaServerMessage::ServerRestarting { .. })
            })
            .await;
        assert!(
            matches!(notice, MediaServerMessage::ServerRestarting { retry_after_ms } if retry_after_ms > 0)
        );
        assert!(bot.ws.closed_within(Duration::from_secs(5)).await);
    }
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stops within 10 s")
        .unwrap();
    println!("stopped after {:?}", stopping.elapsed());
}
