//! A small load run against the real `privatehub-media` binary: media reaches every
//! viewer and the report is well formed. Build the binaries first
//! (`cargo build --workspace --bins`; `scripts/test` does).

use std::net::IpAddr;
use std::time::Duration;

use privatehub_loadgen::{RunConfig, ServerTarget, StreamSpec, VerifyMode, run};
use privatehub_testkit::{StackOptions, start_media_server};

#[test]
fn one_publisher_three_viewers_receive_media() {
    three_viewers(VerifyMode::Sampled);
}

#[test]
fn one_publisher_three_fully_verifying_viewers_receive_media() {
    three_viewers(VerifyMode::Full);
}

fn three_viewers(verify: VerifyMode) {
    let media = start_media_server(
        &StackOptions::default(),
        "loadgen-test-secret-at-least-32-bytes",
    );
    let config = RunConfig {
        target: ServerTarget::PrivateHub {
            ws_url: format!("ws://127.0.0.1:{}/ws", media.port),
            origin: "http://127.0.0.1".into(),
            secret: media.token_secret.clone(),
            live_id: 7,
        },
        viewers: 3,
        stream: StreamSpec {
            video_kbps: 500,
            fps: 30,
            keyframe_interval_frames: 30,
            audio: true,
            simulcast: false,
        },
        bind_ip: IpAddr::from([127, 0, 0, 1]),
        driver_threads: 1,
        join_concurrency: 3,
        join_timeout: Duration::from_secs(10),
        warmup: Duration::from_millis(500),
        window: Duration::from_secs(2),
        server_pid: Some(media.process.pid()),
        metrics_url: Some(format!("http://127.0.0.1:{}/metrics", media.port)),
        verify,
    };
    let report = run(&config).unwrap_or_else(|error| panic!("load run failed: {error}"));
    let json = serde_json::to_string_pretty(&report).unwrap();

    assert_eq!(report.server, "privatehub", "{json}");
    assert_eq!(report.viewer_verify, verify.name(), "{json}");
    assert_eq!(report.viewers, 3, "{json}");
    assert_eq!(report.viewers_joined, 3, "{json}");
    assert_eq!(
        report.viewers_receiving, 3,
        "every viewer got a keyframe: {json}"
    );
    assert_eq!(report.join_failures, 0, "{json}");
    // 500 kbit/s at 30 fps is ~2 packets per frame plus 50 audio packets/s: well over
    // 100 packets per viewer in 2 s.
    assert!(
        report.packets_min_viewer > 100,
        "media reached every viewer: {json}"
    );
    assert!(
        report.packets_forwarded >= 3 * report.packets_min_viewer,
        "{json}"
    );
    assert!(
        (1.9..5.0).contains(&report.window_s),
        "window length: {json}"
    );
    // ~530 kbit/s; a loaded machine may make the publisher skip a few frames.
    assert!(
        report.publisher_kbps > 100.0 && report.publisher_kbps < 900.0,
        "{json}"
    );
    assert!(
        report.server_cpu_s >= 0.0 && report.cpu_us_per_packet >= 0.0,
        "{json}"
    );
    assert!(report.cpu_us_per_packet < 10_000.0, "{json}");
    assert!(
        report.rss_baseline_kb > 0 && report.rss_loaded_kb > 0,
        "{json}"
    );
    assert!((0.0..=100.0).contains(&report.loss_pct_worst), "{json}");
    assert!(report.loss_pct_mean <= report.loss_pct_worst, "{json}");
    assert!(report.delay_p50_ms >= 0.0, "{json}");
    assert!(report.delay_p50_ms <= report.delay_p99_ms, "{json}");
    assert!(report.delay_p99_ms <= report.delay_max_ms, "{json}");
    assert!(report.delay_p99_ms < 1000.0, "{json}");
    // Sampled mode takes delays from 1 frame (and audio packet) in 16: still some of each.
    assert!(
        report.delay_video_p99_ms > 0.0 && report.delay_audio_p99_ms > 0.0,
        "{json}"
    );
    assert!(report.join_p50_ms > 0.0, "{json}");
    assert!(report.join_p50_ms <= report.join_p95_ms, "{json}");
    assert!(report.join_p95_ms < 10_000.0, "{json}");
    assert!(report.errors.is_empty(), "{json}");

    // The JSON carries every field results.json needs.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "server",
        "viewers",
        "bitrate_kbps",
        "cpu_us_per_packet",
        "packets_forwarded",
        "loss_pct_worst",
        "delay_p50_ms",
        "delay_p99_ms",
        "join_p95_ms",
        "rss_kb_per_viewer",
    ] {
        assert!(value.get(field).is_some(), "missing {field}: {json}");
    }
}
