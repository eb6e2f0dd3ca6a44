//! Simulcast in the deterministic harness: a publisher sending three layers, viewers
//! whose server side estimates their bandwidth, links with a rate limit.

use super::*;
use crate::sfu::layers::{LayerChoice, VideoTarget};

const RIDS: [&str; 3] = ["q", "h", "f"];
const TOP: u8 = 2;

/// The layer of the last video frame a viewer received.
fn last_layer(h: &Harness, viewer: usize) -> Option<u8> {
    h.clients[viewer].stats.frames.last().map(|f| f.layer)
}

/// Frames a viewer received in the last `window`.
fn recent_frames(h: &Harness, viewer: usize, window: Duration) -> Vec<Frame> {
    let since = h.now - window;
    let frames = &h.clients[viewer].stats.frames;
    frames.iter().filter(|f| f.at >= since).copied().collect()
}

/// Every change of layer in what a viewer received starts on a keyframe (and so does
/// the first frame): the picture never breaks at a switch. A change right after a gap
/// (frames lost on a lossy link and not repaired) is not a switch the SFU made there.
/// Returns the number of switches.
fn assert_switches_start_on_keyframes(h: &Harness, viewer: usize) -> usize {
    let frames = &h.clients[viewer].stats.frames;
    assert!(frames.first().is_some_and(|f| f.keyframe), "first frame");
    let mut switches = 0;
    for pair in frames.windows(2) {
        if pair[1].layer != pair[0].layer && pair[1].contiguous {
            switches += 1;
            assert!(
                pair[1].keyframe,
                "switch from layer {} to {} on {:?}",
                pair[0].layer, pair[1].layer, pair[1]
            );
        }
    }
    switches
}

fn start(h: &mut Harness, viewers: usize) -> Vec<usize> {
    h.add_client(Some(1), &RIDS, false);
    let viewers: Vec<usize> = (0..viewers)
        .map(|_| h.add_client(None, &[], true))
        .collect();
    h.run_until(Duration::from_secs(20), |h| {
        viewers.iter().all(|v| last_layer(h, *v) == Some(TOP))
    });
    viewers
}

#[test]
fn a_viewer_on_a_slow_link_moves_down_and_back_up_while_a_fast_one_stays_on_top() {
    let mut h = Harness::new();
    let viewers = start(&mut h, 2);
    let (slow, fast) = (viewers[0], viewers[1]);
    let on_top_at = h.now.duration_since(h.start);

    // The slow viewer's link drops to 450 kbit/s: below the top layer (~800 kbit/s with
    // headers), above the middle one (~280).
    h.clients[slow].downlink.rate_bps = Some(450_000);
    h.clients[slow].downlink.max_queue = Duration::from_millis(300);
    let limited_at = h.now;
    h.run_until(Duration::from_secs(8), |h| {
        last_layer(h, slow).is_some_and(|l| l < TOP)
    });
    let down_after = h.now.duration_since(limited_at);
    // It goes on decoding on the lower layer: nearly every frame, none of the top one.
    h.run_for(Duration::from_secs(6));
    let recent = recent_frames(&h, slow, Duration::from_secs(3));
    assert!(
        recent.len() >= 80,
        "frames in 3 s on the slow link: {}",
        recent.len()
    );
    assert!(recent.iter().all(|f| f.layer < TOP), "{recent:?}");
    let gaps = recent.iter().filter(|f| !f.contiguous).count();
    assert!(gaps <= 3, "gaps on the lower layer: {gaps}");

    // The link recovers: back to the top layer.
    h.clients[slow].downlink.rate_bps = None;
    let lifted_at = h.now;
    h.run_until(Duration::from_secs(25), |h| {
        last_layer(h, slow) == Some(TOP)
    });
    let up_after = h.now.duration_since(lifted_at);

    // The fast viewer never left the top layer once on it.
    let fast_frames = &h.clients[fast].stats.frames;
    let first_top = fast_frames.iter().position(|f| f.layer == TOP).unwrap();
    assert!(fast_frames[first_top..].iter().all(|f| f.layer == TOP));
    let slow_switches = assert_switches_start_on_keyframes(&h, slow);
    assert_switches_start_on_keyframes(&h, fast);
    assert!(slow_switches >= 2, "down and up: {slow_switches}");
    let metrics = &h.metrics;
    println!(
        "simulcast harness: on top after {on_top_at:?}; down {down_after:?} after the limit, \
         up {up_after:?} after it lifted; slow viewer {slow_switches} switches, {gaps} gaps \
         in 3 s on the lower layer; switches up {} down {}; switch keyframe requests {}; \
         slow link dropped {} datagrams",
        metrics.layer_switches_up.load(Relaxed),
        metrics.layer_switches_down.load(Relaxed),
        metrics.layer_switch_keyframe_requests.load(Relaxed),
        h.clients[slow].downlink.dropped,
    );
}

#[test]
fn video_pauses_when_no_layer_fits_and_resumes_while_audio_goes_on() {
    let mut h = Harness::new();
    let viewer = start(&mut h, 1)[0];
    let peer = h.clients[viewer].peer;
    h.clients[viewer].downlink.rate_bps = Some(60_000);
    h.clients[viewer].downlink.max_queue = Duration::from_millis(300);
    h.run_until(Duration::from_secs(15), |h| {
        h.qualities
            .iter()
            .rev()
            .find(|(p, _)| *p == peer)
            .is_some_and(|(_, q)| q.target == VideoTarget::Paused)
    });
    // Frames written from now on are not sent (repairs of earlier ones may still land);
    // audio gets the link back once what was queued before the pause has drained.
    h.run_for(Duration::from_secs(1));
    let paused_from = h.clients[0].frame_no as u32 + 1;
    let audio_before = h.clients[viewer].stats.audio_frames;
    let video_before = h.clients[viewer].stats.frames.len();
    h.run_for(Duration::from_secs(3));
    let audio = h.clients[viewer].stats.audio_frames - audio_before;
    let frames = &h.clients[viewer].stats.frames[video_before..];
    let newer = frames.iter().filter(|f| f.number >= paused_from).count();
    assert_eq!(newer, 0, "paused video still sent new frames: {frames:?}");
    assert!(audio >= 100, "audio while paused: {audio} frames in 3 s");
    h.clients[viewer].downlink.rate_bps = None;
    let lifted_at = h.now;
    h.run_until(Duration::from_secs(20), |h| {
        h.clients[viewer]
            .stats
            .frames
            .last()
            .is_some_and(|f| f.at > lifted_at && f.keyframe)
    });
    assert_switches_start_on_keyframes(&h, viewer);
    assert!(h.metrics.video_pauses.load(Relaxed) >= 1);
    assert!(h.metrics.video_resumes.load(Relaxed) >= 1);
}

#[test]
fn a_layer_picked_in_the_menu_is_kept_until_auto() {
    let mut h = Harness::new();
    let viewer = start(&mut h, 1)[0];
    let peer = h.clients[viewer].peer;
    let choice = LayerChoice::Fixed(str0m::media::Rid::from("q"));
    h.core
        .handle_command(h.now, Command::SetLayerChoice { peer, choice });
    h.run_until(Duration::from_secs(3), |h| last_layer(h, viewer) == Some(0));
    // A good link does not move a pinned viewer.
    h.run_for(Duration::from_secs(8));
    assert_eq!(last_layer(&h, viewer), Some(0));
    let (_, report) = h.qualities.iter().rev().find(|(p, _)| *p == peer).unwrap();
    assert_eq!(report.choice, choice);
    assert_eq!(report.current, Some(Some(str0m::media::Rid::from("q"))));
    assert_eq!(report.layers.len(), 3, "{report:?}");
    assert!(report.adaptive && report.estimate_bps.is_some());
    let choice = LayerChoice::Auto;
    h.core
        .handle_command(h.now, Command::SetLayerChoice { peer, choice });
    h.run_until(Duration::from_secs(15), |h| {
        last_layer(h, viewer) == Some(TOP)
    });
    assert_switches_start_on_keyframes(&h, viewer);
}

#[test]
fn viewers_without_an_estimator_get_the_top_layer() {
    let mut h = Harness::new();
    h.add_client(Some(1), &RIDS, false);
    let viewer = h.add_client(None, &[], false);
    h.run_until(Duration::from_secs(5), |h| {
        last_layer(h, viewer) == Some(TOP)
    });
    h.run_for(Duration::from_secs(3));
    assert_switches_start_on_keyframes(&h, viewer);
    // It may have started on whichever layer's keyframe came first, then moved up once.
    assert!(
        h.clients[viewer]
            .stats
            .frames
            .iter()
            .rev()
            .take(60)
            .all(|f| f.layer == TOP)
    );
}
