//! A lossy, jittery broadcaster link: 5 % loss and 30 ms ± 30 ms delay on everything the
//! broadcaster sends to the media server, while the viewer's link stays clean. NACK/RTX
//! between the broadcaster and the SFU repairs most of the loss, so the viewer keeps
//! decoding. The shaping is the user-space relay of `privatehub_testkit::netem` (the
//! media server announces the relay's loopback address). Measured figures are printed
//! for docs/reliability.md; the bounds asserted are generous sanity bounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use privatehub_testkit::netem::{LinkShape, UdpRelay};
use privatehub_testkit::{StackOptions, start_stack};
use serde_json::{Value, json};

use crate::harness::{Browser, BrowserOptions, ChromeDriver};
use crate::pages::{self, LIVE_STATUS, PLAYER_FRAMES};

const BROADCASTER_LINK: LinkShape = LinkShape {
    delay: Duration::from_millis(30),
    jitter: Duration::from_millis(30),
    loss: 0.05,
};
/// Unshaped measurement before the loss, for comparison.
const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// How long the broadcaster's link is lossy.
const LOSSY_WINDOW: Duration = Duration::from_secs(25);
/// The longest the viewer may go without a new frame, or out of `live`, while lossy.
const LONGEST_GAP: Duration = Duration::from_secs(8);
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The viewer's inbound video fields read from getStats.
const INBOUND_FIELDS: &[&str] = &[
    "packetsReceived",
    "packetsLost",
    "nackCount",
    "framesDecoded",
    "framesDropped",
    "freezeCount",
    "totalFreezesDuration",
    "pliCount",
];
/// The broadcaster's outbound video fields.
const OUTBOUND_FIELDS: &[&str] = &[
    "packetsSent",
    "retransmittedPacketsSent",
    "nackCount",
    "pliCount",
];
/// What the SFU reports back to the broadcaster about its video (RTCP receiver reports).
const REMOTE_INBOUND_FIELDS: &[&str] = &["packetsLost"];

type Stats = BTreeMap<String, f64>;

/// Sums `fields` over the page's video stats of `type`, from the peer connection the
/// page exposes as `privatehubDebug.peerConnection()`. `None` before there is one.
async fn video_stats(browser: &Browser, stat_type: &str, fields: &[&str]) -> Option<Stats> {
    let value = browser
        .js(
            "const [type, fields] = arguments; \
             return (async () => { \
               const pc = window.privatehubDebug?.peerConnection?.(); \
               if (!pc) return null; \
               const sums = Object.fromEntries(fields.map(f => [f, 0])); \
               let found = false; \
               (await pc.getStats()).forEach(s => { \
                 if (s.type === type && s.kind === 'video') { \
                   found = true; \
                   for (const f of fields) sums[f] += s[f] ?? 0; \
                 } \
               }); \
               return found ? sums : null; \
             })();",
            vec![json!(stat_type), json!(fields)],
        )
        .await;
    let Value::Object(map) = value else {
        return None;
    };
    Some(
        map.into_iter()
            .map(|(key, value)| (key, value.as_f64().unwrap_or(f64::NAN)))
            .collect(),
    )
}

/// Everything read at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    viewer_inbound: Stats,
    broadcaster_outbound: Stats,
    broadcaster_remote_inbound: Stats,
}

impl Snapshot {
    async fn take(broadcaster: &Browser, viewer: &Browser) -> Snapshot {
        let viewer_inbound = video_stats(viewer, "inbound-rtp", INBOUND_FIELDS)
            .await
            .expect("viewer has inbound video stats");
        let broadcaster_outbound = video_stats(broadcaster, "outbound-rtp", OUTBOUND_FIELDS)
            .await
            .expect("broadcaster has outbound video stats");
        let broadcaster_remote_inbound =
            video_stats(broadcaster, "remote-inbound-rtp", REMOTE_INBOUND_FIELDS)
                .await
                .unwrap_or_default();
        Snapshot {
            viewer_inbound,
            broadcaster_outbound,
            broadcaster_remote_inbound,
        }
    }

    /// `self - earlier`, field by field (a missing field counts as zero).
    fn since(&self, earlier: &Snapshot) -> Snapshot {
        fn minus(now: &Stats, then: &Stats) -> Stats {
            now.iter()
                .map(|(key, value)| (key.clone(), value - then.get(key).unwrap_or(&0.0)))
                .collect()
        }
        Snapshot {
            viewer_inbound: minus(&self.viewer_inbound, &earlier.viewer_inbound),
            broadcaster_outbound: minus(&self.broadcaster_outbound, &earlier.broadcaster_outbound),
            broadcaster_remote_inbound: minus(
                &self.broadcaster_remote_inbound,
                &earlier.broadcaster_remote_inbound,
            ),
        }
    }

    fn print(&self, window: &str) {
        for (side, stats) in [
            ("viewer inbound-rtp video", &self.viewer_inbound),
            ("broadcaster outbound-rtp video", &self.broadcaster_outbound),
            (
                "broadcaster remote-inbound-rtp video",
                &self.broadcaster_remote_inbound,
            ),
        ] {
            for (field, value) in stats {
                println!("lossy link [{window}] {side} {field}: {value:.3}");
            }
        }
    }

    fn outbound(&self, field: &str) -> f64 {
        self.broadcaster_outbound.get(field).copied().unwrap_or(0.0)
    }

    fn inbound(&self, field: &str) -> f64 {
        self.viewer_inbound.get(field).copied().unwrap_or(0.0)
    }
}

/// What the viewer showed while it was watched, sample by sample.
#[derive(Debug, Default)]
struct Playback {
    /// Longest time without a new decoded frame.
    longest_without_frames: Duration,
    /// Longest time with the player's state other than `live`.
    longest_not_live: Duration,
    states_seen: Vec<String>,
}

/// Samples the viewer's frames and player state every [`SAMPLE_EVERY`] for `window` (a
/// fixed measurement window: the point is to watch for that long).
async fn watch_playback(viewer: &Browser, window: Duration) -> Playback {
    let started = Instant::now();
    let mut playback = Playback::default();
    let mut last_frames = viewer.number(PLAYER_FRAMES).await;
    let mut last_new_frame = Instant::now();
    let mut not_live_since: Option<Instant> = None;
    while started.elapsed() < window {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let now = Instant::now();
        let frames = viewer.number(PLAYER_FRAMES).await;
        if frames > last_frames || (frames < last_frames && frames > 0.0) {
            last_new_frame = now;
        }
        if !frames.is_nan() {
            last_frames = frames;
        }
        playback.longest_without_frames = playback.longest_without_frames.max(now - last_new_frame);
        let state = viewer
            .try_js(&format!("return {LIVE_STATUS};"))
            .await
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        if !playback.states_seen.contains(&state) {
            playback.states_seen.push(state.clone());
        }
        if state == "live" {
            not_live_since = None;
        } else {
            let since = *not_live_since.get_or_insert(now);
            playback.longest_not_live = playback.longest_not_live.max(now - since);
        }
    }
    playback
}

/// The broadcaster's flows through the relay: every client seen before any viewer.
fn broadcaster_flows(relay: &UdpRelay) -> Vec<SocketAddr> {
    let flows = relay.clients();
    assert!(
        !flows.is_empty(),
        "the broadcaster's media did not go through the relay (media server announced the relay?)"
    );
    assert!(
        flows.iter().all(|flow| flow.ip().is_loopback()),
        "{flows:?}"
    );
    flows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_keeps_playing_while_the_broadcasters_link_loses_and_jitters() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions {
        media_env: UdpRelay::media_env(),
        ..StackOptions::default()
    });
    let relay = UdpRelay::start(stack.rtc_ports).expect("start the UDP relay");
    println!(
        "lossy link: relay seed {}, rtc ports {:?}",
        relay.seed, stack.rtc_ports
    );
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();
    let (alice, bob) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster)", &options),
        Browser::open(&driver, "bob (viewer)", &options),
    );
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Over a bad uplink").await;
    // Connected and live: every flow the relay has seen so far is alice's.
    let alice_flows = broadcaster_flows(&relay);
    pages::sign_up(&bob, &app, "bob").await;
    pages::watch(&bob, &app, "alice").await;
    assert!(
        relay.clients().len() > alice_flows.len(),
        "the viewer's media did not go through the relay"
    );

    // Baseline: the same figures over a clean link.
    let before_baseline = Snapshot::take(&alice, &bob).await;
    let baseline_playback = watch_playback(&bob, BASELINE_WINDOW).await;
    let baseline = Snapshot::take(&alice, &bob).await.since(&before_baseline);
    baseline.print("clean 10 s");
    println!(
        "lossy link [clean 10 s] viewer longest without a new frame: {:?}",
        baseline_playback.longest_without_frames
    );

    // The broadcaster's uplink turns bad.
    for flow in &alice_flows {
        relay.shape(*flow, BROADCASTER_LINK);
    }
    println!(
        "lossy link: shaping {alice_flows:?} with {BROADCASTER_LINK} \
         (relay ignored {} datagrams from non-loopback candidates)",
        relay.ignored_non_loopback()
    );
    let before_loss = Snapshot::take(&alice, &bob).await;
    let counts_before = relay.shaped_counts();
    let playback = watch_playback(&bob, LOSSY_WINDOW).await;
    let lossy = Snapshot::take(&alice, &bob).await.since(&before_loss);
    let counts = relay.shaped_counts();
    relay.unshape_all();

    lossy.print("lossy 25 s");
    let dropped = counts.dropped - counts_before.dropped;
    let seen = counts.seen - counts_before.seen;
    println!(
        "lossy link [lossy 25 s] relay dropped {dropped} of {seen} broadcaster datagrams ({:.2} %)",
        100.0 * dropped as f64 / seen.max(1) as f64
    );
    println!(
        "lossy link [lossy 25 s] viewer longest without a new frame: {:?}",
        playback.longest_without_frames
    );
    println!(
        "lossy link [lossy 25 s] viewer longest not live: {:?}, states seen {:?}",
        playback.longest_not_live, playback.states_seen
    );

    // The shaping really bit: the relay dropped some of alice's datagrams.
    assert!(
        seen > 100 && dropped > 0,
        "the relay shaped nothing: {dropped} dropped of {seen}"
    );
    // The SFU asked for the lost packets and alice resent them: NACK/RTX works.
    assert!(
        lossy.outbound("nackCount") > 0.0,
        "alice received no NACKs while {dropped} of her packets were lost"
    );
    assert!(
        lossy.outbound("retransmittedPacketsSent") > 0.0,
        "alice retransmitted nothing while {dropped} of her packets were lost"
    );
    // The viewer kept playing: frames kept coming, the player stayed live.
    let frames = lossy.inbound("framesDecoded");
    assert!(
        frames > 5.0 * LOSSY_WINDOW.as_secs_f64(),
        "bob decoded only {frames} frames in {LOSSY_WINDOW:?} of a lossy uplink"
    );
    assert!(
        playback.longest_without_frames < LONGEST_GAP,
        "bob's video froze for {:?}",
        playback.longest_without_frames
    );
    assert!(
        playback.longest_not_live < LONGEST_GAP,
        "bob's player left `live` for {:?} (states {:?})",
        playback.longest_not_live,
        playback.states_seen
    );
    let frozen = lossy.inbound("totalFreezesDuration");
    assert!(
        frozen.is_finite() && frozen < LOSSY_WINDOW.as_secs_f64() / 2.0,
        "bob's video was frozen for {frozen} s of {LOSSY_WINDOW:?}"
    );

    // Clean again: the viewer still plays.
    pages::wait_playing(&bob, Duration::from_secs(20)).await;
    drop(relay);
    for browser in [alice, bob] {
        browser.close().await;
    }
}
