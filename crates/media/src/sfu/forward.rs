//! Forwarding state: one [`Frame`] per publisher frame, shared by `Arc` across workers,
//! and the per-live [`Room`] each worker keeps for its local peers.
//!
//! Frame mode: str0m reassembles the publisher's RTP into frames and re-packetizes them
//! for each viewer, keeping sequence numbers, SSRCs and timestamps continuous per viewer
//! even across a publisher replacement. RTP mode would be cheaper per packet (see
//! `docs/str0m-notes.md` §3.3); this module and `Peer::write_frame` are the only places
//! that would change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use privatehub_protocol::LiveId;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, MediaTime, Pt};

use super::PeerId;
use super::keyframe::{GateRetry, UpstreamThrottle};
use super::peer::Peer;

/// One media frame of a publisher, as forwarded to viewers.
#[derive(Debug)]
pub struct Frame {
    pub live: LiveId,
    /// The publish generation it came from (see `NewPeer::generation`).
    pub generation: u64,
    pub kind: MediaKind,
    /// The publisher's payload type (key of the viewers' PT cache).
    pub pt: Pt,
    pub params: PayloadParams,
    pub network_time: Instant,
    pub time: MediaTime,
    pub data: Arc<[u8]>,
    /// Video keyframe (viewers' gates open on it).
    pub keyframe: bool,
}

/// What one worker knows about one live.
#[derive(Debug)]
pub(super) struct Room {
    /// The live's publisher, if it is on this worker.
    pub publisher: Option<PeerId>,
    /// This worker's viewers of the live.
    pub viewers: Vec<PeerId>,
    /// Highest publish generation seen in frames here.
    pub generation: u64,
    /// Coalesces PLIs to the local publisher.
    pub throttle: UpstreamThrottle,
    /// Retries keyframe requests while local viewers are gated.
    pub gate_retry: GateRetry,
}

impl Room {
    pub fn new(keyframe_interval: std::time::Duration) -> Self {
        Room {
            publisher: None,
            viewers: Vec::new(),
            generation: 0,
            throttle: UpstreamThrottle::new(keyframe_interval),
            gate_retry: GateRetry::default(),
        }
    }

    pub fn has_viewers(&self) -> bool {
        !self.viewers.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        match (self.throttle.next_timeout(), self.gate_retry.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Connected viewers still waiting for a keyframe.
    pub fn gated_viewers(&self, peers: &HashMap<PeerId, Peer>) -> usize {
        self.viewers
            .iter()
            .filter_map(|id| peers.get(id))
            .filter(|p| p.connected && p.video_gated && p.video_mid.is_some())
            .count()
    }
}
