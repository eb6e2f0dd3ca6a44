//! The worker's side of simulcast: reviewing each viewer's layer against the live's
//! measured layers and the viewer's bandwidth estimate, switching at keyframes, and
//! reporting what a viewer gets to its player.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use str0m::bwe::Bitrate;
use str0m::media::MediaKind;

use super::layers::{LayerChoice, LayerInfo, LayerKey, PAUSED_RANK, VideoTarget};
use super::{CoreOutput, PeerId, WorkerCore};
use crate::metrics::Metrics;

/// How often viewers' layers are reconsidered while a live has viewers here.
pub const LAYER_REVIEW: Duration = Duration::from_millis(250);
/// How often a viewer gets its quality report even when nothing changed (the player's
/// stats overlay shows the estimate).
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// What a viewer's player is told about its video quality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityReport {
    /// The live's layers, lowest first.
    pub layers: Vec<LayerInfo>,
    /// The layer being forwarded (`None` while waiting for a keyframe or paused).
    pub current: Option<LayerKey>,
    /// What the viewer is to get.
    pub target: VideoTarget,
    pub choice: LayerChoice,
    pub estimate_bps: Option<u64>,
    /// Whether the server estimates this viewer's bandwidth (adapts by itself).
    pub adaptive: bool,
}

impl WorkerCore {
    /// Reconsiders every local viewer of `live`: closes the layers' measuring bucket,
    /// decides, starts switches (asking for the keyframes they wait for) and reports.
    pub(super) fn review_layers(&mut self, now: Instant, live: LiveId) {
        let Some(room) = self.rooms.get_mut(&live) else {
            return;
        };
        room.next_layer_review = room.has_viewers().then(|| now + LAYER_REVIEW);
        room.layers.tick(now);
        let layers = room.layers.ranked().to_vec();
        let report_all = room
            .last_report
            .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_EVERY);
        if report_all {
            room.last_report = Some(now);
        }
        let viewers = room.viewers.clone();
        self.review_viewers(now, live, &viewers, &layers, report_all);
    }

    /// Decides for `viewers` of `live` against its `layers`; see [`Self::review_layers`].
    pub(super) fn review_viewers(
        &mut self,
        now: Instant,
        live: LiveId,
        viewers: &[PeerId],
        layers: &[LayerInfo],
        report_all: bool,
    ) {
        let metrics = self.metrics.clone();
        let mut wanted: Vec<LayerKey> = Vec::new();
        for &id in viewers {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if !peer.connected || peer.faulted || peer.video_mid.is_none() {
                continue;
            }
            let decision = peer.selector.decide(now, layers);
            let target = match decision.target {
                _ if layers.is_empty() => peer.video_target,
                Some(key) => VideoTarget::Layer(key),
                None => VideoTarget::Paused,
            };
            if target != peer.video_target {
                tracing::debug!(
                    peer = %id,
                    from = ?peer.video_target,
                    to = ?target,
                    estimate_bps = ?peer.selector.estimate_bps,
                    loss = peer.selector.loss,
                    "viewer layer"
                );
                count_switch(
                    &metrics,
                    peer.video_target,
                    target,
                    layers,
                    peer.video_layer,
                );
                if target == VideoTarget::Paused {
                    // Resumed later with continuous numbering, at a keyframe.
                    peer.video_gated = true;
                    peer.restart_track(MediaKind::Video);
                }
                peer.video_target = target;
                peer.quality_changed = true;
                if let Some(key) = peer.awaited_keyframe() {
                    metrics.layer_switch_keyframe_requests.fetch_add(1, Relaxed);
                    if !wanted.contains(&key) {
                        wanted.push(key);
                    }
                }
            }
            let rank = match peer.video_target {
                VideoTarget::Paused => Some(PAUSED_RANK),
                _ if peer.video_gated => None,
                _ => layers
                    .iter()
                    .rev()
                    .position(|l| l.key == peer.video_layer)
                    .or(Some(0)),
            };
            metrics.move_viewer_rank(peer.metric_rank, rank);
            peer.metric_rank = rank;
            let probe = decision.desired_bps;
            let reprobe = peer.estimating && probe != peer.probe;
            if reprobe {
                peer.probe = probe;
            }
            if report_all
                && peer.estimating
                && let Some(bps) = peer.selector.estimate_bps
            {
                metrics.observe_viewer_estimate(bps);
            }
            if peer.quality_changed || report_all {
                peer.quality_changed = false;
                let report = QualityReport {
                    layers: layers.to_vec(),
                    current: (!peer.video_gated).then_some(peer.video_layer),
                    target: peer.video_target,
                    choice: peer.selector.choice,
                    estimate_bps: peer.selector.estimate_bps,
                    adaptive: peer.estimating,
                };
                self.out
                    .push_back(CoreOutput::ViewerQuality { peer: id, report });
            }
            if reprobe {
                // A rise above the estimate makes str0m send a probe cluster.
                self.with_rtc(now, id, |rtc| {
                    rtc.bwe().set_bitrate(Bitrate::bps(0), Bitrate::bps(probe));
                    Ok(())
                });
            }
        }
        if !wanted.is_empty() {
            if let Some(room) = self.rooms.get_mut(&live) {
                room.gate_retry.gated(now);
            }
            for key in wanted {
                self.want_keyframe(now, live, key);
            }
        }
    }

    /// The viewer picked a quality in the player's menu.
    pub(super) fn set_layer_choice(&mut self, now: Instant, id: PeerId, choice: LayerChoice) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.selector.choice != choice {
            peer.selector.set_choice(choice);
            peer.quality_changed = true;
            let live = peer.live;
            self.review_one_viewer(now, live, id);
        }
    }

    /// Decides for one viewer at once (a menu choice, a join), without touching the
    /// others: what one client does costs the room nothing.
    pub(super) fn review_one_viewer(&mut self, now: Instant, live: LiveId, id: PeerId) {
        let Some(room) = self.rooms.get(&live) else {
            return;
        };
        let layers = room.layers.ranked().to_vec();
        self.review_viewers(now, live, &[id], &layers, false);
    }
}

/// Counts a change of a viewer's target in the switch metrics.
fn count_switch(
    metrics: &Metrics,
    from: VideoTarget,
    to: VideoTarget,
    layers: &[LayerInfo],
    current: LayerKey,
) {
    let position = |key: LayerKey| layers.iter().position(|l| l.key == key);
    let from = match from {
        VideoTarget::Layer(key) => position(key),
        VideoTarget::Any => position(current),
        VideoTarget::Paused => {
            metrics.video_resumes.fetch_add(1, Relaxed);
            return;
        }
    };
    let to = match to {
        VideoTarget::Layer(key) => position(key),
        VideoTarget::Paused => {
            metrics.video_pauses.fetch_add(1, Relaxed);
            return;
        }
        VideoTarget::Any => None,
    };
    match (from, to) {
        (Some(a), Some(b)) if b > a => metrics.layer_switches_up.fetch_add(1, Relaxed),
        (Some(a), Some(b)) if b < a => metrics.layer_switches_down.fetch_add(1, Relaxed),
        _ => 0,
    };
}
