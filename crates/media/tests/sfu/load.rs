//! A quick load measurement (ignored by default; run with
//! `cargo test --release -p privatehub-media --test sfu load -- --ignored --nocapture`).
//! Bots run in this process, so only the media worker threads' CPU is counted.

use std::time::{Duration, Instant};

use privatehub_protocol::MediaRole;

use crate::bot::{Bot, BotRole, DELTA_FRAME_BYTES};
use crate::helpers::{get_text, metric, token, wait_for_empty};

/// CPU seconds (user + system) of this process's threads named `media-worker-*`.
fn worker_cpu_seconds() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("media-worker") {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let utime: f64 = fields[11].parse().unwrap();
        let stime: f64 = fields[12].parse().unwrap();
        total += (utime + stime) / ticks;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn load_measurement() {
    let _heap = crate::alloc::exclusive().await;
    let viewers: usize = std::env::var("LOAD_VIEWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    DELTA_FRAME_BYTES.store(7500, std::sync::atomic::Ordering::Relaxed); // ~2 Mbit/s at 30 fps
    let mut settings = privatehub_media::MediaSettings::for_tests(crate::helpers::SECRET, 42100, 2);
    if let Some(ms) = std::env::var("LOAD_KEYFRAME_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.keyframe_interval_ms = ms;
    }
    let server = crate::helpers::spawn_server_with(settings).await;
    let http = server.http_addr;
    let publisher = Bot::start(
        http,
        &token(99, MediaRole::Publish),
        BotRole::Publisher { tag: 1 },
    )
    .await;
    publisher
        .wait_for("connected", Duration::from_secs(5), |s| {
            s.connected_at.is_some()
        })
        .await;
    let heap_before = crate::alloc::live_bytes() as f64;
    let client_before = crate::alloc::client_bytes() as f64;
    let rss_before = metric(
        &get_text(http, "/metrics").await,
        "process_resident_memory_bytes",
    );
    let mut bots = Vec::new();
    for _ in 0..viewers {
        bots.push(Bot::start(http, &token(99, MediaRole::Watch), BotRole::Viewer).await);
    }
    let mut joins: Vec<u128> = Vec::new();
    let mut connects: Vec<u128> = Vec::new();
    for bot in &bots {
        bot.wait_for("video", Duration::from_secs(20), |s| {
            s.first_video_at.is_some()
        })
        .await;
        let s = bot.stats();
        joins.push(
            s.first_video_at
                .unwrap()
                .duration_since(bot.created)
                .as_millis(),
        );
        connects.push(
            s.connected_at
                .unwrap()
                .duration_since(bot.created)
                .as_millis(),
        );
    }
    joins.sort();
    connects.sort();
    eprintln!(
        "connect (answer to DTLS up) p50={}ms p95={}ms",
        connects[connects.len() / 2],
        connects[connects.len() * 95 / 100]
    );
    let before_cpu = worker_cpu_seconds();
    let before = get_text(http, "/metrics").await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = worker_cpu_seconds() - before_cpu;
    let elapsed = started.elapsed().as_secs_f64();
    let after = get_text(http, "/metrics").await;
    // Heap held for the viewers after streaming for `seconds`: whole process (server +
    // in-process bots), the bots' share (allocated on bot threads) and the rest (server).
    let heap = crate::alloc::live_bytes() as f64 - heap_before;
    let client = crate::alloc::client_bytes() as f64 - client_before;
    let rss = metric(&after, "process_resident_memory_bytes");
    eprintln!(
        "heap per viewer: {:.0} KB total, {:.0} KB bot side, {:.0} KB server side; process RSS {:.1} MB (was {:.1} MB before the viewers, +{:.0} KB per viewer, bots included)",
        heap / viewers as f64 / 1024.0,
        client / viewers as f64 / 1024.0,
        (heap - client) / viewers as f64 / 1024.0,
        rss / 1e6,
        rss_before / 1e6,
        (rss - rss_before) / viewers as f64 / 1024.0,
    );
    let packets =
        metric(&after, "media_packets_out_total") - metric(&before, "media_packets_out_total");
    let packets_in =
        metric(&after, "media_packets_in_total") - metric(&before, "media_packets_in_total");
    let drops = metric(&after, "media_channel_drops_total");
    eprintln!(
        "viewers={viewers} elapsed={elapsed:.1}s worker_cpu={cpu:.2}s ({:.0}% of one core) packets_out={packets} ({:.0}/s) packets_in={packets_in} cpu_per_out_packet={:.2}us channel_drops={drops} join_p50={}ms join_p95={}ms",
        cpu / elapsed * 100.0,
        packets / elapsed,
        cpu / packets * 1e6,
        joins[joins.len() / 2],
        joins[joins.len() * 95 / 100],
    );
    let video: Vec<u64> = bots.iter().map(|b| b.stats().video_frames).collect();
    eprintln!(
        "video frames per viewer: min={} max={}",
        video.iter().min().unwrap(),
        video.iter().max().unwrap()
    );
    for mut bot in bots {
        bot.stop_media();
        bot.ws.close().await;
    }
    let mut publisher = publisher;
    publisher.stop_media();
    publisher.ws.close().await;
    wait_for_empty(&server, Duration::from_secs(10)).await;
    server.stop().await;
}
