//! Simulcast in real Chromium: the broadcast page publishes layers; a viewer whose
//! downstream is limited (the relay of `privatehub_testkit::netem` rate-limits what the
//! media server sends it) keeps decoding on a lower layer while an unlimited viewer of
//! the same live decodes the top one; the quality menu pins a layer and Auto returns to
//! adaptation. Freeze counts and sizes are printed for the notes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use privatehub_testkit::netem::{DownlinkLimit, UdpRelay};
use privatehub_testkit::{StackOptions, start_stack};
use serde_json::Value;

use crate::harness::{Browser, BrowserOptions, ChromeDriver, wait_until};
use crate::pages;

/// Well below the top layer (about 1.5 Mbit/s at 720p), above the lowest (~150 kbit/s).
const SLOW_LINK: DownlinkLimit = DownlinkLimit {
    bits_per_second: 450_000,
    max_queue: Duration::from_millis(250),
};

/// Below the lowest layer: video pauses, audio (~40 kbit/s) still fits.
const STARVED_LINK: DownlinkLimit = DownlinkLimit {
    bits_per_second: 90_000,
    max_queue: Duration::from_millis(250),
};

#[derive(Debug, Clone, Copy, Default)]
struct VideoStats {
    width: f64,
    height: f64,
    frames: f64,
    freezes: f64,
}

async fn video_stats(browser: &Browser) -> VideoStats {
    let value = browser
        .js("return window.privatehubDebug.videoStats();", vec![])
        .await;
    let field = |name: &str| value.get(name).and_then(Value::as_f64).unwrap_or(0.0);
    VideoStats {
        width: field("frameWidth"),
        height: field("frameHeight"),
        frames: field("framesDecoded"),
        freezes: field("freezeCount"),
    }
}

/// Waits until the viewer decodes frames `width` pixels wide (or, with `narrower`, less
/// than that); returns how long it took.
async fn wait_width(
    browser: &Browser,
    what: &str,
    width: f64,
    narrower: bool,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    wait_until(what, timeout, || async {
        let stats = video_stats(browser).await;
        if narrower {
            stats.width > 0.0 && stats.width < width
        } else {
            stats.width == width
        }
    })
    .await;
    started.elapsed()
}

/// Waits until the viewer decodes `width`-wide frames again, printing its layer and the
/// server's estimate every 2 s on the way (how the climb went, for the test log).
async fn climb(browser: &Browser, what: &str, width: f64, timeout: Duration) -> Duration {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let stats = video_stats(browser).await;
        if stats.width == width {
            return started.elapsed();
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            let quality = browser
                .js(
                    "const q = window.privatehubDebug.quality; \
                     return q ? `${q.current}->${q.target} est ${q.estimate_kbps}` : 'none';",
                    vec![],
                )
                .await;
            println!(
                "simulcast: {what}: {:?} in, {}x{}, {quality}",
                started.elapsed(),
                stats.width,
                stats.height
            );
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Frames decoded over `window`, and freezes in it.
async fn decoding_over(browser: &Browser, window: Duration) -> (f64, f64) {
    let before = video_stats(browser).await;
    tokio::time::sleep(window).await;
    let after = video_stats(browser).await;
    (after.frames - before.frames, after.freezes - before.freezes)
}

/// Limits what the media server sends to each of `flows`.
fn limit_all(relay: &UdpRelay, flows: &[SocketAddr], limit: DownlinkLimit) {
    for flow in flows {
        relay.limit_downlink(*flow, Some(limit));
    }
}

fn new_flows(relay: &UdpRelay, before: &[SocketAddr]) -> Vec<SocketAddr> {
    relay
        .clients()
        .into_iter()
        .filter(|flow| !before.contains(flow))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_viewer_decodes_a_lower_layer_while_an_unlimited_one_gets_the_top() {
    let _guard = crate::exclusive().await;
    // Not recorded: in one CI run with recording on, the broadcaster's top layer vanished
    // under the machine's load (the recorder's 5 s keyframe requests are a suspect; its
    // own issue). This test is about forwarding layers; recordings have their own tests.
    let mut media_env = UdpRelay::media_env();
    media_env.push(("MEDIA_RECORDINGS".into(), "false".into()));
    let stack = start_stack(StackOptions {
        media_env,
        ..StackOptions::default()
    });
    let relay = UdpRelay::start(stack.rtc_ports).expect("start the UDP relay");
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();
    let (alice, bob, carol) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster)", &options),
        Browser::open(&driver, "bob (slow viewer)", &options),
        Browser::open(&driver, "carol (fast viewer)", &options),
    );
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Simulcast").await;
    // The broadcaster sends several layers and says so.
    alice
        .wait_js(
            "two or more layers going out",
            "Number(document.querySelector('#layers')?.dataset.count ?? 0) >= 2",
            Duration::from_secs(20),
        )
        .await;
    let layers = alice
        .js(
            "return JSON.stringify(window.privatehubDebug.layers);",
            vec![],
        )
        .await;
    println!("simulcast: broadcaster layers {layers}");
    let top_width = alice
        .js(
            "return Math.max(...window.privatehubDebug.layers.map(l => l.width ?? 0));",
            vec![],
        )
        .await
        .as_f64()
        .unwrap_or(0.0);
    assert!(top_width >= 640.0, "top layer width {top_width}");

    let before_bob = relay.clients();
    pages::sign_up(&bob, &app, "bob").await;
    pages::watch(&bob, &app, "alice").await;
    pages::wait_playing(&bob, Duration::from_secs(20)).await;
    let bob_flows = new_flows(&relay, &before_bob);
    assert!(
        !bob_flows.is_empty(),
        "bob's media did not go through the relay"
    );
    let before_carol = relay.clients();
    pages::sign_up(&carol, &app, "carol").await;
    pages::watch(&carol, &app, "alice").await;
    pages::wait_playing(&carol, Duration::from_secs(20)).await;
    assert!(!new_flows(&relay, &before_carol).is_empty());
    for viewer in [&bob, &carol] {
        viewer
            .wait_js(
                "the server adapts this viewer",
                "window.privatehubDebug.adaptive === true",
                Duration::from_secs(5),
            )
            .await;
    }
    let to_top = wait_width(
        &carol,
        "carol on the top layer",
        top_width,
        false,
        Duration::from_secs(30),
    )
    .await;
    wait_width(
        &bob,
        "bob on the top layer",
        top_width,
        false,
        Duration::from_secs(30),
    )
    .await;
    println!("simulcast: unlimited viewers on the top layer ({top_width} wide) after {to_top:?}");

    limit_all(&relay, &bob_flows, SLOW_LINK);
    let down = wait_width(
        &bob,
        "bob on a lower layer",
        top_width,
        true,
        Duration::from_secs(20),
    )
    .await;
    // Settled on the lower layer, bob keeps decoding smoothly; carol stays on top.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ((bob_frames, bob_freezes), (carol_frames, carol_freezes)) = tokio::join!(
        decoding_over(&bob, Duration::from_secs(8)),
        decoding_over(&carol, Duration::from_secs(8)),
    );
    let (bob_now, carol_now) = tokio::join!(video_stats(&bob), video_stats(&carol));
    let quality = bob
        .js(
            "return JSON.stringify(window.privatehubDebug.quality);",
            vec![],
        )
        .await;
    println!(
        "simulcast: limited to {} kbit/s, bob moved down after {down:?} to {}x{}; over 8 s \
         bob decoded {bob_frames} frames with {bob_freezes} freezes, carol {carol_frames} \
         frames with {carol_freezes} freezes at {}x{}; relay dropped {} datagrams to bob; \
         bob's last quality report {quality}",
        SLOW_LINK.bits_per_second / 1000,
        bob_now.width,
        bob_now.height,
        carol_now.width,
        carol_now.height,
        relay.shaped_counts().downlink_dropped,
    );
    assert!(bob_now.width < top_width, "bob back on top while limited");
    assert_eq!(carol_now.width, top_width, "carol left the top layer");
    assert!(
        bob_frames >= 8.0 * 12.0,
        "bob decoded {bob_frames} frames in 8 s"
    );
    assert!(
        carol_frames >= 8.0 * 12.0,
        "carol decoded {carol_frames} frames in 8 s"
    );
    assert!(bob_freezes <= 3.0, "bob froze {bob_freezes} times in 8 s");

    // The quality menu: carol pins the lowest layer, then returns to Auto.
    let lowest = carol
        .js(
            "const select = document.querySelector('#quality-select'); \
             const value = select.options[select.options.length - 1].value; \
             select.value = value; select.dispatchEvent(new Event('change')); \
             return value;",
            vec![],
        )
        .await;
    println!("simulcast: carol picks {lowest}");
    wait_width(
        &carol,
        "carol on the picked layer",
        top_width / 2.0,
        true,
        Duration::from_secs(10),
    )
    .await;
    carol
        .wait_js(
            "the server confirms the choice",
            &format!("window.privatehubDebug.quality?.choice === {lowest}"),
            Duration::from_secs(5),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pinned = video_stats(&carol).await;
    assert!(
        pinned.width <= top_width / 2.0,
        "a pinned layer was left: {pinned:?}"
    );
    carol
        .js(
            "const select = document.querySelector('#quality-select'); \
             select.value = 'auto'; select.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await;
    let back = climb(
        &carol,
        "carol back on top with Auto",
        top_width,
        Duration::from_secs(45),
    )
    .await;
    println!("simulcast: Auto took carol back to the top layer after {back:?}");

    // The stats overlay shows the layer and the estimate, for support.
    bob.click("#stats-toggle").await;
    bob.wait_js(
        "the stats overlay shows the estimate",
        "/estimate\\s+\\d+ kbit\\/s/.test(document.querySelector('#stats-overlay').textContent) \
         && !document.querySelector('#stats-overlay').hidden",
        Duration::from_secs(5),
    )
    .await;

    // A link too slow for even the lowest layer: video pauses with a clear state, audio
    // goes on.
    limit_all(&relay, &bob_flows, STARVED_LINK);
    bob.wait_js(
        "the player says audio only",
        &format!("{} === 'paused'", pages::LIVE_STATUS),
        Duration::from_secs(25),
    )
    .await;
    let audio_before = bob.number(pages::AUDIO_PACKETS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audio = bob.number(pages::AUDIO_PACKETS).await - audio_before;
    let overlay = bob
        .js(
            "return document.querySelector('#player-overlay-text').textContent;",
            vec![],
        )
        .await;
    println!(
        "simulcast: starved at {} kbit/s, bob paused; {audio} audio packets in 3 s; overlay {overlay}",
        STARVED_LINK.bits_per_second / 1000
    );
    // Opus sends 50 packets/s; on a link this short some are lost (the browser's
    // retransmission requests for video from before the pause share it).
    assert!(audio >= 75.0, "audio while paused: {audio} packets in 3 s");

    // The link recovers: bob goes back up by itself. After a pause the estimate only
    // grows through the paused viewer's rare probes, so the climb has taken 20-45 s
    // here (a CI run at c778d75 reached 640x360 only at 44 s): a known slowness, not
    // the behaviour we want, allowed 75 s until the climb after a pause is fixed.
    relay.unshape_all();
    let up = climb(
        &bob,
        "bob back on the top layer",
        top_width,
        Duration::from_secs(75),
    )
    .await;
    println!("simulcast: limit lifted, bob back on top after {up:?}");
    for browser in [alice, bob, carol] {
        browser.close().await;
    }
}
