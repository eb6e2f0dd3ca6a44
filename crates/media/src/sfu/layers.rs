//! Simulcast: the layers a publisher sends, as one worker measures them from the packets
//! it forwards ([`Layers`]), and the per-viewer choice of one ([`LayerSelector`]).
//!
//! Both are small state machines driven by `now` passed in. A layer is named by its
//! RTP stream id (`rid`); a publisher without simulcast has one layer with no rid.
//! Layers are ranked by their measured bitrate, not by name: publishers name them as
//! they like (`q`/`h`/`f`, `0`/`1`/`2`...).

use std::time::{Duration, Instant};

use str0m::media::Rid;

/// Name of a layer: its rid, `None` for a publisher that sends one encoding.
pub type LayerKey = Option<Rid>;

/// Layers kept per live; a publisher announcing more is not followed beyond these.
pub const MAX_LAYERS: usize = 4;
/// Length of one measuring bucket; rates are over [`BUCKETS`] of them.
const BUCKET: Duration = Duration::from_millis(500);
const BUCKETS: usize = 4;
/// A layer with no packet for this long is not offered (the encoder dropped it, as
/// browsers do when their uplink or CPU is short).
const INACTIVE_AFTER: Duration = Duration::from_millis(1500);

/// What a viewer (and the quality menu) is told about one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    pub key: LayerKey,
    /// Measured over the last two seconds, RTP payload and headers.
    pub bitrate_bps: u64,
    /// From the last keyframe (VP8 only).
    pub dimensions: Option<(u16, u16)>,
}

#[derive(Debug)]
struct LayerMeter {
    key: LayerKey,
    buckets: [u64; BUCKETS],
    last_packet: Instant,
    bitrate_bps: u64,
    dimensions: Option<(u16, u16)>,
}

/// The layers of one live as seen by one worker.
#[derive(Debug, Default)]
pub struct Layers {
    meters: Vec<LayerMeter>,
    bucket_started: Option<Instant>,
    /// When the first packet was measured: layers are offered once a whole window has
    /// been (an encoder ramps its layers up during the first second or two).
    first_packet: Option<Instant>,
    /// Active layers, lowest bitrate first (recomputed at each bucket end).
    ranked: Vec<LayerInfo>,
}

/// RTP header bytes counted per packet on top of the payload.
const RTP_OVERHEAD: u64 = 12 + 28;

impl Layers {
    /// A video packet of layer `key` with `payload_len` bytes arrived.
    pub fn observe(
        &mut self,
        now: Instant,
        key: LayerKey,
        payload_len: usize,
        dimensions: Option<(u16, u16)>,
    ) {
        self.bucket_started.get_or_insert(now);
        self.first_packet.get_or_insert(now);
        let index = match self.meters.iter().position(|m| m.key == key) {
            Some(index) => index,
            None if self.meters.len() < MAX_LAYERS => {
                self.meters.push(LayerMeter {
                    key,
                    buckets: [0; BUCKETS],
                    last_packet: now,
                    bitrate_bps: 0,
                    dimensions: None,
                });
                self.meters.len() - 1
            }
            None => return,
        };
        let meter = &mut self.meters[index];
        meter.buckets[0] += payload_len as u64 + RTP_OVERHEAD;
        meter.last_packet = now;
        if dimensions.is_some() {
            meter.dimensions = dimensions;
        }
    }

    /// When [`Layers::tick`] is next due.
    pub fn next_tick(&self) -> Option<Instant> {
        self.bucket_started.map(|at| at + BUCKET)
    }

    /// Closes the bucket if due and re-ranks.
    pub fn tick(&mut self, now: Instant) {
        let Some(started) = self.bucket_started else {
            return;
        };
        if now < started + BUCKET {
            return;
        }
        self.bucket_started = Some(now);
        let window = BUCKET.as_secs_f64() * BUCKETS as f64;
        for meter in &mut self.meters {
            let bytes: u64 = meter.buckets.iter().sum();
            meter.bitrate_bps = (bytes as f64 * 8.0 / window) as u64;
            meter.buckets.rotate_right(1);
            meter.buckets[0] = 0;
        }
        self.meters
            .retain(|m| now.saturating_duration_since(m.last_packet) < INACTIVE_AFTER * 4);
        let measured = self
            .first_packet
            .is_some_and(|at| now.saturating_duration_since(at) >= BUCKET * BUCKETS as u32);
        let mut ranked: Vec<LayerInfo> = self
            .meters
            .iter()
            .filter(|_| measured)
            .filter(|m| now.saturating_duration_since(m.last_packet) < INACTIVE_AFTER)
            .map(|m| LayerInfo {
                key: m.key,
                bitrate_bps: m.bitrate_bps,
                dimensions: m.dimensions,
            })
            .collect();
        ranked.sort_by(|a, b| {
            a.bitrate_bps
                .cmp(&b.bitrate_bps)
                .then_with(|| a.key.as_deref().cmp(&b.key.as_deref()))
        });
        self.ranked = ranked;
    }

    /// Active layers, lowest first.
    pub fn ranked(&self) -> &[LayerInfo] {
        &self.ranked
    }
}

/// Which video a viewer is to get next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoTarget {
    /// No layer chosen yet: the first keyframe of any layer opens the gate.
    Any,
    /// This layer, from its next keyframe on.
    Layer(LayerKey),
    /// None: the viewer's link cannot carry even the lowest layer (audio goes on).
    Paused,
}

/// Rank of a paused viewer in the viewers-by-layer gauge (0 is the top layer).
pub const PAUSED_RANK: usize = MAX_LAYERS;

/// What a viewer asked for in the quality menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerChoice {
    /// Follow the viewer's bandwidth.
    #[default]
    Auto,
    /// This layer whatever the bandwidth (or the nearest lower one while it is absent).
    Fixed(Rid),
}

/// Margin a layer needs under the estimate to be kept.
const KEEP_HEADROOM: f64 = 1.0;
/// Margin a layer needs under the estimate to be switched up to.
const UP_HEADROOM: f64 = 1.15;
/// How long the estimate must allow the next layer up before switching to it.
const UP_HOLD: Duration = Duration::from_secs(2);
/// Least time after going down before trying up again.
const UP_AFTER_DOWN: Duration = Duration::from_secs(6);
/// How long the lowest layer must not fit before video is paused.
const PAUSE_HOLD: Duration = Duration::from_millis(1000);
/// Loss above which the estimate is not trusted for the current layer.
const LOSS_LIMIT: f32 = 0.10;
/// Loss is not held against a layer until it has been in force this long.
const LOSS_GRACE: Duration = Duration::from_secs(3);

/// How long one attempt to find room for the next layer up lasts.
/// How long one attempt lasts: long enough for the estimate to climb, short enough that
/// a link which is really short suffers little.
const PROBE_LENGTH: Duration = Duration::from_secs(2);
/// Wait after a failed attempt (doubling up to [`PROBE_BACKOFF_MAX`]): each attempt on a
/// link that is really short costs it some loss (measured: probing 4 s of every 4-16 s
/// halved the frames a 450 kbit/s viewer decoded), and a link that recovers is found
/// again within about the longest wait.
const PROBE_BACKOFF: Duration = Duration::from_secs(6);
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(24);
/// While video is paused: probe this often, this long, for the lowest layer.
const PAUSED_PROBE_EVERY: Duration = Duration::from_secs(8);
const PAUSED_PROBE_LENGTH: Duration = Duration::from_secs(2);

/// The decision for one viewer: the video layer to forward (`None`: video paused, audio
/// goes on), and the rate str0m's estimator is to look for (`desired_bps`, zero when
/// nothing is to be probed). Raising it above the estimate makes str0m send a short
/// probe cluster; between attempts it is held at the estimate, so the next attempt
/// raises it again. Sustained padding was tried and dropped: measured in Chromium
/// behind a 450 kbit/s link, padding towards the next layer congested the link the
/// viewer was already short of and halved the frames it decoded on the lower layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDecision {
    pub target: Option<LayerKey>,
    pub desired_bps: u64,
}

/// Per viewer: picks a layer from the estimate, with hysteresis (down at once, up only
/// after the estimate has allowed it for [`UP_HOLD`]).
#[derive(Debug, Default)]
pub struct LayerSelector {
    pub choice: LayerChoice,
    /// Latest downstream estimate (TWCC or REMB), bits per second.
    pub estimate_bps: Option<u64>,
    /// Latest video loss fraction from the viewer's receiver reports.
    pub loss: f32,
    target: Option<Option<LayerKey>>,
    up_allowed_since: Option<Instant>,
    unfit_since: Option<Instant>,
    last_down: Option<Instant>,
    /// When the target last changed.
    changed_at: Option<Instant>,
    /// The running probe for the next layer up ends then.
    probe_until: Option<Instant>,
    /// No probe before then (after a failed one).
    next_probe_at: Option<Instant>,
    probe_backoff: Duration,
}

impl LayerSelector {
    /// The viewer's menu choice; going back to Auto probes afresh (a pinned viewer's
    /// estimate only knows the pinned layer's rate).
    pub fn set_choice(&mut self, choice: LayerChoice) {
        if choice != self.choice {
            self.choice = choice;
            self.probe_until = None;
            self.next_probe_at = None;
            self.probe_backoff = PROBE_BACKOFF;
            self.last_down = None;
        }
    }

    /// The layer in force (`None` before the first decision, `Some(None)` when paused).
    pub fn target(&self) -> Option<Option<LayerKey>> {
        self.target
    }

    /// Decides against the live's active `layers` (lowest first).
    pub fn decide(&mut self, now: Instant, layers: &[LayerInfo]) -> LayerDecision {
        let decision = self.choose(now, layers);
        if self.target != Some(decision.target) {
            self.changed_at = Some(now);
        }
        self.target = Some(decision.target);
        decision
    }

    fn choose(&mut self, now: Instant, layers: &[LayerInfo]) -> LayerDecision {
        if layers.is_empty() {
            // Nothing measured yet: keep what is in force (or the only layer there is).
            return LayerDecision {
                target: self.target.unwrap_or(Some(None)),
                desired_bps: 0,
            };
        }
        if let LayerChoice::Fixed(rid) = self.choice {
            let index = layers
                .iter()
                .rposition(|l| l.key == Some(rid))
                // Absent (the encoder dropped it): the best there is meanwhile.
                .unwrap_or(layers.len() - 1);
            return LayerDecision {
                target: Some(layers[index].key),
                desired_bps: 0,
            };
        }
        let Some(estimate) = self.estimate_bps else {
            // No estimator on this viewer: the best there is.
            return LayerDecision {
                target: Some(layers[layers.len() - 1].key),
                desired_bps: 0,
            };
        };
        let current = self
            .target
            .and_then(|t| t)
            .and_then(|key| layers.iter().position(|l| l.key == key));
        let paused = self.target == Some(None);
        let mut effective = estimate as f64;
        // Receiver reports cover the last second or so: just after a switch their loss
        // belongs to the layer before (measured: a viewer moved down from a layer its
        // link could not carry still reported 40 % loss for a second, and the lowest
        // layer was taken for too much and video paused).
        let loss_is_current = self
            .changed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= LOSS_GRACE);
        if let Some(index) = current
            && self.loss > LOSS_LIMIT
            && loss_is_current
        {
            effective = effective.min(layers[index].bitrate_bps as f64 * 0.8);
        }
        let fits = |l: &LayerInfo, headroom: f64| l.bitrate_bps as f64 * headroom <= effective;
        let best_fitting = layers.iter().rposition(|l| fits(l, KEEP_HEADROOM));
        let target = match (current, paused) {
            (Some(index), _) if !fits(&layers[index], KEEP_HEADROOM) => {
                // Down at once, to the best that fits.
                self.last_down = Some(now);
                self.up_allowed_since = None;
                match best_fitting {
                    Some(lower) => {
                        self.unfit_since = None;
                        Some(lower)
                    }
                    None if layers.len() < 2 => Some(0),
                    None => {
                        // Not even the lowest fits: pause once that has lasted, on the
                        // estimate itself (loss alone never pauses).
                        let since = *self.unfit_since.get_or_insert(now);
                        let below = (estimate as f64) < layers[0].bitrate_bps as f64;
                        if below && now.saturating_duration_since(since) >= PAUSE_HOLD {
                            None
                        } else {
                            Some(0)
                        }
                    }
                }
            }
            (Some(index), _) => {
                self.unfit_since = None;
                let up = index + 1;
                if up < layers.len() && self.may_go_up(now, fits(&layers[up], UP_HEADROOM)) {
                    self.went_up();
                    Some(up)
                } else {
                    Some(index)
                }
            }
            (None, true) => {
                if self.may_go_up(now, fits(&layers[0], UP_HEADROOM)) {
                    self.went_up();
                    Some(0)
                } else {
                    None
                }
            }
            // First decision, or the layer in force went away: the best that fits now.
            (None, false) => Some(best_fitting.unwrap_or(0)),
        };
        // The layer an up-switch would go to, if any.
        let next_up = match target {
            Some(index) if index + 1 < layers.len() => Some(index + 1),
            Some(_) => None,
            None => Some(0),
        };
        let went_down = self.last_down == Some(now);
        let desired_bps = match next_up {
            Some(up) => self.probe(now, &layers[up], estimate, went_down, target.is_none()),
            None => {
                self.probe_until = None;
                self.probe_backoff = PROBE_BACKOFF;
                if layers.len() == 1 {
                    // One layer, nothing to switch to: ask for room above it, so that
                    // an estimate that starts (or fell) below it grows and str0m's pacer
                    // does not hold the stream back (measured, 200 viewers of 2 Mbit/s:
                    // p99 delay 1.26 s without, 13 ms with). With layers this was
                    // measured worse (more probing on the top layer, p99 up to 340 ms).
                    (layers[0].bitrate_bps as f64 * UP_HEADROOM * 1.1) as u64
                } else {
                    0
                }
            }
        };
        LayerDecision {
            target: target.map(|index| layers[index].key),
            desired_bps,
        }
    }

    /// Probing for room for layer `up`: returns the desired rate.
    fn probe(
        &mut self,
        now: Instant,
        up: &LayerInfo,
        estimate: u64,
        went_down: bool,
        paused: bool,
    ) -> u64 {
        let wanted = (up.bitrate_bps as f64 * UP_HEADROOM * 1.1) as u64;
        if self.probe_backoff.is_zero() {
            self.probe_backoff = PROBE_BACKOFF;
        }
        // Paused, the link carries audio only: probing there costs audio, so rarely.
        let wait = if paused {
            self.probe_backoff.max(PAUSED_PROBE_EVERY)
        } else {
            self.probe_backoff
        };
        if went_down {
            // The link is short now: no probing for a while.
            self.probe_until = None;
            self.next_probe_at = Some(now + wait);
        }
        if let Some(until) = self.probe_until {
            if now < until && !went_down {
                return wanted;
            }
            // It did not find the room in time: try again later, less often.
            self.probe_until = None;
            self.next_probe_at = Some(now + wait);
            self.probe_backoff = (self.probe_backoff * 2).min(PROBE_BACKOFF_MAX);
        }
        if estimate >= wanted {
            return wanted;
        }
        if self.next_probe_at.is_none_or(|at| now >= at) {
            self.probe_until = Some(
                now + if paused {
                    PAUSED_PROBE_LENGTH
                } else {
                    PROBE_LENGTH
                },
            );
            return wanted;
        }
        // Between probes, desired is held at the estimate, so the next probe raises it.
        estimate
    }

    /// After an up-switch: the link has more room than the failed probes before said
    /// (a link that recovered), so a failed probe for the next layer waits the first
    /// backoff again, not one grown while the link was short (measured: up to 24 s, and a
    /// viewer needing over 45 s to climb back from a pause).
    fn went_up(&mut self) {
        self.up_allowed_since = None;
        self.probe_backoff = PROBE_BACKOFF;
    }

    /// Whether an up-switch allowed by the estimate (`allowed`) has been for long enough.
    fn may_go_up(&mut self, now: Instant, allowed: bool) -> bool {
        if !allowed {
            self.up_allowed_since = None;
            return false;
        }
        if self
            .last_down
            .is_some_and(|at| now.saturating_duration_since(at) < UP_AFTER_DOWN)
        {
            return false;
        }
        let since = *self.up_allowed_since.get_or_insert(now);
        now.saturating_duration_since(since) >= UP_HOLD
    }
}

/// Width and height from the first packet of a VP8 keyframe (the start code `9d 01 2a`
/// follows the payload descriptor and the 3-byte frame tag).
pub fn vp8_keyframe_dimensions(payload: &[u8]) -> Option<(u16, u16)> {
    let head = &payload[..payload.len().min(16)];
    let at = head.windows(3).position(|w| w == [0x9d, 0x01, 0x2a])?;
    let size = payload.get(at + 3..at + 7)?;
    let width = u16::from_le_bytes([size[0], size[1]]) & 0x3fff;
    let height = u16::from_le_bytes([size[2], size[3]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(rates: &[(&str, u64)]) -> Vec<LayerInfo> {
        rates
            .iter()
            .map(|(rid, bps)| LayerInfo {
                key: Some(Rid::from(*rid)),
                bitrate_bps: *bps,
                dimensions: None,
            })
            .collect()
    }

    fn rid(name: &str) -> Option<Option<LayerKey>> {
        Some(Some(Some(Rid::from(name))))
    }

    #[test]
    fn layers_are_ranked_by_measured_rate_and_dropped_when_silent() {
        let t0 = Instant::now();
        let mut layers = Layers::default();
        let mut now = t0;
        for _ in 0..100 {
            layers.observe(now, Some(Rid::from("f")), 1000, Some((1280, 720)));
            layers.observe(now, Some(Rid::from("q")), 100, None);
            layers.observe(now, Some(Rid::from("h")), 400, None);
            now += Duration::from_millis(20);
            layers.tick(now);
        }
        let names: Vec<String> = layers
            .ranked()
            .iter()
            .map(|l| l.key.unwrap().to_string())
            .collect();
        assert_eq!(names, ["q", "h", "f"]);
        let top = layers.ranked()[2];
        assert_eq!(top.dimensions, Some((1280, 720)));
        // 1040 bytes every 20 ms: 416 kbit/s.
        assert!((380_000..450_000).contains(&top.bitrate_bps), "{top:?}");
        // "f" stops; the others go on.
        for _ in 0..100 {
            layers.observe(now, Some(Rid::from("q")), 100, None);
            layers.observe(now, Some(Rid::from("h")), 400, None);
            now += Duration::from_millis(20);
            layers.tick(now);
        }
        assert_eq!(layers.ranked().len(), 2);
    }

    #[test]
    fn goes_down_at_once_and_up_only_after_holding() {
        let t0 = Instant::now();
        let set = layers(&[("q", 150_000), ("h", 500_000), ("f", 1_500_000)]);
        let mut selector = LayerSelector {
            estimate_bps: Some(3_000_000),
            ..LayerSelector::default()
        };
        assert_eq!(selector.decide(t0, &set).target, Some(Some(Rid::from("f"))));
        // The link drops to 600 kbit/s: down to h at the next decision.
        selector.estimate_bps = Some(600_000);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(selector.decide(t1, &set).target, Some(Some(Rid::from("h"))));
        // It recovers: not before UP_AFTER_DOWN and UP_HOLD.
        selector.estimate_bps = Some(3_000_000);
        let mut now = t1;
        let mut went_up_at = None;
        while now < t1 + Duration::from_secs(20) {
            now += Duration::from_millis(250);
            if selector.decide(now, &set).target == Some(Some(Rid::from("f"))) {
                went_up_at = Some(now);
                break;
            }
        }
        let after = went_up_at.unwrap().duration_since(t1);
        assert!(after >= UP_AFTER_DOWN, "{after:?}");
        assert!(
            after < UP_AFTER_DOWN + UP_HOLD + Duration::from_secs(1),
            "{after:?}"
        );
    }

    #[test]
    fn pauses_video_when_nothing_fits_and_resumes() {
        let t0 = Instant::now();
        let set = layers(&[("q", 150_000), ("h", 500_000)]);
        let mut selector = LayerSelector {
            estimate_bps: Some(100_000),
            ..LayerSelector::default()
        };
        assert_eq!(selector.decide(t0, &set).target, Some(Some(Rid::from("q"))));
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(selector.decide(t1, &set).target, Some(Some(Rid::from("q"))));
        let t2 = t0 + Duration::from_millis(1600);
        let decision = selector.decide(t2, &set);
        assert_eq!(decision.target, None, "paused");
        assert_eq!(selector.target(), Some(None));
        // It probes for room for the lowest layer now and then.
        let mut now = t2;
        let mut probed = false;
        while now < t2 + PAUSED_PROBE_EVERY + Duration::from_secs(2) {
            now += Duration::from_millis(250);
            let decision = selector.decide(now, &set);
            probed |= decision.desired_bps > 150_000;
        }
        assert!(probed, "no probe for the lowest layer");
        selector.estimate_bps = Some(400_000);
        while selector.target() == Some(None) {
            now += Duration::from_millis(250);
            selector.decide(now, &set);
            assert!(now < t2 + Duration::from_secs(30));
        }
        assert_eq!(selector.target(), rid("q"));
    }

    #[test]
    fn a_fixed_choice_ignores_the_estimate_and_auto_returns() {
        let t0 = Instant::now();
        let set = layers(&[("q", 150_000), ("h", 500_000), ("f", 1_500_000)]);
        let mut selector = LayerSelector {
            estimate_bps: Some(200_000),
            choice: LayerChoice::Fixed(Rid::from("f")),
            ..LayerSelector::default()
        };
        assert_eq!(selector.decide(t0, &set).target, Some(Some(Rid::from("f"))));
        selector.choice = LayerChoice::Auto;
        assert_eq!(
            selector.decide(t0 + Duration::from_millis(10), &set).target,
            Some(Some(Rid::from("q")))
        );
        // Without an estimator, the top layer.
        let mut plain = LayerSelector::default();
        assert_eq!(plain.decide(t0, &set).target, Some(Some(Rid::from("f"))));
    }

    #[test]
    fn reads_vp8_keyframe_dimensions() {
        // Descriptor with a 15-bit picture id, frame tag, start code, 640x480.
        let payload = [
            0x90, 0x80, 0x81, 0x23, 0x50, 0x2d, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
        ];
        assert_eq!(vp8_keyframe_dimensions(&payload), Some((640, 480)));
        assert_eq!(vp8_keyframe_dimensions(&payload[..9]), None);
    }
}
