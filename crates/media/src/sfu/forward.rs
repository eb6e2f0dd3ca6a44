//! Forwarding state: one [`Packet`] per RTP packet received from a publisher, shared by
//! `Arc` across workers and viewers, and the per-live [`Room`] each worker keeps for its
//! local peers.
//!
//! RTP mode: the publisher's packets are forwarded as they are (payload shared, never
//! copied); per viewer only the header is rewritten (see `rewrite.rs`) and str0m
//! encrypts. str0m's RTX cache of each viewer holds the same shared payloads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Pt};
use str0m::rtp::{ExtensionValues, Vp8Descriptor};

use super::PeerId;
use super::keyframe::{GateRetry, UpstreamThrottle};
use super::layers::{LayerKey, Layers, MAX_LAYERS};

/// One RTP packet of a publisher, as forwarded to viewers.
#[derive(Debug)]
pub struct Packet {
    pub live: LiveId,
    /// The publish generation it came from (see `NewPeer::generation`).
    pub generation: u64,
    pub kind: MediaKind,
    /// The publisher's payload type (key of the viewers' PT cache).
    pub pt: Pt,
    pub params: PayloadParams,
    /// The publisher's extended sequence number.
    pub seq: u64,
    /// The publisher's RTP timestamp.
    pub rtp_time: u32,
    pub marker: bool,
    /// First packet of a video keyframe (viewers' gates open on it).
    pub keyframe: bool,
    /// The simulcast layer (rid) of a video packet; `None` without simulcast.
    pub layer: LayerKey,
    /// Picture size, read from the first packet of a VP8 keyframe.
    pub dimensions: Option<(u16, u16)>,
    /// VP8 payload descriptor, parsed once, for the viewers' picture id rewrite.
    pub vp8: Option<Vp8Descriptor>,
    /// The header extensions worth passing on (audio level, video orientation).
    pub extensions: ExtensionValues,
    /// When the publisher's worker handed the datagram to str0m.
    pub received_at: Instant,
    /// How much later than its media time the packet reached us, beyond the least such
    /// lateness seen recently: time it spent queued before the core saw it (socket
    /// buffer, a busy worker). See [`LatenessTracker`].
    pub late_on_arrival: Duration,
    pub payload: Arc<[u8]>,
}

impl Packet {
    /// How stale the packet is at `now`: queued before arrival plus since.
    pub fn staleness(&self, now: Instant) -> Duration {
        self.late_on_arrival + now.saturating_duration_since(self.received_at)
    }
}

/// Tracks, for one publisher track, how late packets arrive relative to their RTP
/// timestamps. The least lateness over the last window is the path's own delay; what is
/// above it is queueing. Two half windows, so the minimum follows slow clock drift.
#[derive(Debug, Default)]
pub(super) struct LatenessTracker {
    clock_rate: u64,
    /// (first arrival, its RTP time extended), the anchor offsets are measured from.
    anchor: Option<(Instant, u64)>,
    last_rtp: u32,
    extended_rtp: u64,
    /// Least (arrival - media time) in microseconds, current and previous half window.
    least_current: Option<i64>,
    least_previous: Option<i64>,
    window_started: Option<Instant>,
    last_arrival: Option<Instant>,
}

/// Half of the window over which the least lateness is kept. Long, so that a queue that
/// persists under overload is not taken for the path's own delay after a few seconds
/// (measured: with 5 s, one overloaded core's receive queue became the baseline and
/// shedding stopped); clock drift over it is at most milliseconds.
const LATENESS_HALF_WINDOW: Duration = Duration::from_secs(30);
/// A track silent this long starts afresh: a paused camera's RTP clock need not have
/// advanced with the wall clock, and no queue builds while nothing arrives.
const LATENESS_RESET_AFTER_SILENCE: Duration = Duration::from_secs(1);

impl LatenessTracker {
    /// Lateness of a packet with RTP time `rtp_time` arriving at `now`.
    pub fn observe(&mut self, now: Instant, rtp_time: u32, clock_rate: u32) -> Duration {
        let silent = self
            .last_arrival
            .is_some_and(|at| now.saturating_duration_since(at) >= LATENESS_RESET_AFTER_SILENCE);
        if self.anchor.is_none() || silent || self.clock_rate != u64::from(clock_rate) {
            *self = LatenessTracker {
                clock_rate: u64::from(clock_rate.max(1)),
                anchor: Some((now, u64::from(rtp_time) + (1 << 32))),
                last_rtp: rtp_time,
                extended_rtp: u64::from(rtp_time) + (1 << 32),
                window_started: Some(now),
                ..LatenessTracker::default()
            };
        }
        self.last_arrival = Some(now);
        // Extended relative to the newest RTP time seen; an older packet (reordered, a
        // retransmission) is placed behind it without moving it.
        let step = rtp_time.wrapping_sub(self.last_rtp) as i32;
        let extended = self.extended_rtp.wrapping_add_signed(i64::from(step));
        if step > 0 {
            self.last_rtp = rtp_time;
            self.extended_rtp = extended;
        }
        let Some((anchor_at, anchor_rtp)) = self.anchor else {
            return Duration::ZERO;
        };
        let arrival = now.saturating_duration_since(anchor_at).as_micros() as i64;
        let media =
            (self.extended_rtp as i64 - anchor_rtp as i64) * 1_000_000 / self.clock_rate as i64;
        let offset = arrival - media;
        if self
            .window_started
            .is_some_and(|at| now.saturating_duration_since(at) >= LATENESS_HALF_WINDOW)
        {
            self.least_previous = self.least_current.take();
            self.window_started = Some(now);
        }
        self.least_current = Some(self.least_current.map_or(offset, |l| l.min(offset)));
        let least = match self.least_previous {
            Some(previous) => previous.min(self.least_current.unwrap_or(offset)),
            None => self.least_current.unwrap_or(offset),
        };
        Duration::from_micros((offset - least).max(0) as u64)
    }
}

/// What one worker knows about one live.
#[derive(Debug)]
pub(super) struct Room {
    /// The live's publisher, if it is on this worker.
    pub publisher: Option<PeerId>,
    /// This worker's viewers of the live.
    pub viewers: Vec<PeerId>,
    /// Highest publish generation seen in packets here.
    pub generation: u64,
    /// Coalesces PLIs to the local publisher, per layer.
    throttles: Vec<(LayerKey, UpstreamThrottle)>,
    keyframe_interval: Duration,
    /// The publisher's video layers as measured here (simulcast).
    pub layers: Layers,
    /// When viewers' layer choices are next reconsidered (while there are viewers).
    pub next_layer_review: Option<Instant>,
    /// When every viewer here last got a quality report.
    pub last_report: Option<Instant>,
    /// Retries keyframe requests while local viewers are gated.
    pub gate_retry: GateRetry,
    /// Set while stale media is being shed (for the log: one line per episode).
    pub shedding: bool,
}

impl Room {
    pub fn new(keyframe_interval: Duration) -> Self {
        Room {
            publisher: None,
            viewers: Vec::new(),
            generation: 0,
            throttles: Vec::new(),
            keyframe_interval,
            layers: Layers::default(),
            next_layer_review: None,
            last_report: None,
            gate_retry: GateRetry::default(),
            shedding: false,
        }
    }

    pub fn has_viewers(&self) -> bool {
        !self.viewers.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty()
    }

    /// The PLI throttle of one layer (layers beyond [`MAX_LAYERS`] share the last).
    pub fn throttle(&mut self, layer: LayerKey) -> &mut UpstreamThrottle {
        let index = match self.throttles.iter().position(|(key, _)| *key == layer) {
            Some(index) => index,
            None if self.throttles.len() <= MAX_LAYERS => {
                let throttle = UpstreamThrottle::new(self.keyframe_interval);
                self.throttles.push((layer, throttle));
                self.throttles.len() - 1
            }
            None => self.throttles.len() - 1,
        };
        &mut self.throttles[index].1
    }

    /// Layers whose pending keyframe request is due at `now`.
    pub fn due_keyframe_requests(&mut self, now: Instant) -> Vec<LayerKey> {
        self.throttles
            .iter_mut()
            .filter_map(|(key, throttle)| throttle.poll(now).then_some(*key))
            .collect()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.throttles
            .iter()
            .filter_map(|(_, throttle)| throttle.next_timeout())
            .chain(self.gate_retry.next_timeout())
            .chain(self.next_layer_review)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_queueing_above_the_least_seen() {
        let t0 = Instant::now();
        let mut tracker = LatenessTracker::default();
        // 90 kHz, one frame every 33 ms, arriving on time with 2 ms of jitter.
        for i in 0..30u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 33 + u64::from(i % 3));
            let late = tracker.observe(at, 1000 + i * 2970, 90_000);
            assert!(late < Duration::from_millis(5), "{i}: {late:?}");
        }
        // Frame 30 sits 400 ms in a queue.
        let at = t0 + Duration::from_millis(30 * 33 + 400);
        let late = tracker.observe(at, 1000 + 30 * 2970, 90_000);
        assert!(late >= Duration::from_millis(395), "{late:?}");
        // A packet from before the newest (reordered) does not shift later ones.
        let at = t0 + Duration::from_millis(30 * 33 + 401);
        tracker.observe(at, 1000 + 20 * 2970, 90_000);
        let at = t0 + Duration::from_millis(31 * 33 + 400);
        let late = tracker.observe(at, 1000 + 31 * 2970, 90_000);
        assert!(
            late >= Duration::from_millis(395) && late < Duration::from_millis(410),
            "{late:?}"
        );
        // After a second of silence (a paused camera) the RTP clock may have stood
        // still: the first packet after it is not taken for a queued one.
        let at = t0 + Duration::from_millis(30 * 33 + 400 + 3000);
        let late = tracker.observe(at, 1000 + 32 * 2970, 90_000);
        assert_eq!(late, Duration::ZERO);
        // RTP time wrapping around does not look like lateness.
        let mut tracker = LatenessTracker::default();
        let start = u32::MAX - 1500;
        for i in 0..10u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 20);
            let late = tracker.observe(at, start.wrapping_add(i * 960), 48_000);
            assert!(late < Duration::from_millis(2), "{i}: {late:?}");
        }
    }
}
