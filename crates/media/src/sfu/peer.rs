//! One peer on a worker: a `str0m::Rtc` plus what the SFU needs to know about it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use str0m::bwe::BweKind;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc, Vp8Descriptor};
use str0m::{Event, IceConnectionState, Output, Rtc, RtcError};

use super::forward::LatenessTracker;
use super::layers::{LayerKey, LayerSelector, MAX_LAYERS, VideoTarget, vp8_keyframe_dimensions};
use super::rewrite::TrackRewriter;
use super::{
    Action, CoreOutput, NewPeer, Packet, PeerId, RemoveReason, Role, Transport, WorkerMessage,
};
use crate::metrics::{ConnectedOver, IceFailure, Metrics};

/// Why driving a peer failed.
pub(super) enum PeerFault {
    Rtc(RtcError),
}

/// A source address str0m confirmed for a peer.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerAddress {
    pub transport: Transport,
    pub source: SocketAddr,
    /// Shared UDP port: the worker whose socket receives this source's datagrams, when
    /// not this one (it holds a route to release).
    pub via: Option<usize>,
}

/// A datagram str0m wants sent, for the driver: UDP from the worker's socket, or a frame
/// on an ICE-TCP connection.
fn transmit_output(transmit: str0m::net::Transmit) -> CoreOutput {
    match transmit.proto {
        str0m::net::Protocol::Udp => CoreOutput::Transmit {
            destination: transmit.destination,
            contents: transmit.contents.into(),
            media_received_at: None,
        },
        _ => CoreOutput::TransmitTcp {
            destination: transmit.destination,
            contents: transmit.contents.into(),
        },
    }
}

pub(super) struct Peer {
    pub id: PeerId,
    pub live: LiveId,
    pub role: Role,
    pub generation: u64,
    pub rtc: Rtc,
    pub local_ufrag: String,
    /// Source addresses confirmed by str0m for this peer (bounded).
    pub addrs: Vec<PeerAddress>,
    /// Addresses of the client's relay (TURN) candidates, from its offer and trickle
    /// (bounded): media from one of them went through a TURN server.
    pub relay_addrs: Vec<SocketAddr>,
    /// Publisher: its packets go to the recorder too.
    pub record: bool,
    pub offered_at: Instant,
    pub connect_deadline: Instant,
    pub connected: bool,
    /// The entry of this peer in the worker's deadline set.
    pub deadline: Option<Instant>,
    /// The last `Output::Timeout` from str0m.
    pub rtc_timeout: Option<Instant>,
    /// Latest time given to this `Rtc` (str0m wants time not to go backwards).
    pub last_now: Instant,
    pub audio_mid: Option<Mid>,
    pub video_mid: Option<Mid>,
    /// Viewer: video is held back until the next keyframe.
    pub video_gated: bool,
    /// Set once the `Rtc` errored or panicked; it is not touched again but dropped.
    pub faulted: bool,
    /// Publisher: when its last video frame arrived (or when it connected).
    pub last_video_at: Option<Instant>,
    /// Publisher: its video is reported stalled (see `CoreOutput::PublisherStall`).
    pub stalled: bool,
    /// Publisher: its video SSRCs and their simulcast layer (bounded by [`MAX_LAYERS`]).
    video_layers: Vec<(Ssrc, LayerKey)>,
    /// Viewer: the layer whose packets are forwarded (while not gated).
    pub video_layer: LayerKey,
    /// Viewer: the layer to forward next, switched to at its next keyframe.
    pub video_target: VideoTarget,
    /// Viewer: bandwidth estimate and layer choice (simulcast).
    pub selector: LayerSelector,
    /// Viewer: its `Rtc` runs str0m's bandwidth estimator (TWCC negotiated).
    pub estimating: bool,
    /// Viewer: the desired rate last given to str0m's estimator.
    pub probe: u64,
    /// Viewer: something the viewer is shown changed (layer, pause): report it soon.
    pub quality_changed: bool,
    /// Viewer: where it is counted in the viewers-by-layer gauge.
    pub metric_rank: Option<usize>,
    /// Publisher: arrival lateness of audio and of each video layer (each has its own
    /// RTP clock offset), for shedding stale media.
    lateness: Vec<(MediaKind, LayerKey, LatenessTracker)>,
    /// Viewer: the publisher's payload type mapped to ours, per kind, for one generation.
    pt_cache: [Option<(u64, Pt, Pt)>; 2],
    /// Viewer: header rewrite per kind (audio, video).
    tracks: [TrackRewriter; 2],
    /// Viewer: receipt time of the oldest packet written but not yet sent (str0m sends
    /// at the peer's next timeout), for the forwarding-delay histogram.
    pub unsent_media_since: Option<Instant>,
}

impl Peer {
    pub fn new(new_peer: NewPeer, now: Instant, connect_deadline: Instant) -> Self {
        Peer {
            id: new_peer.id,
            live: new_peer.live,
            role: new_peer.role,
            generation: new_peer.generation,
            rtc: new_peer.rtc,
            local_ufrag: new_peer.local_ufrag,
            addrs: Vec::new(),
            relay_addrs: new_peer.relay_addrs,
            record: new_peer.record && new_peer.role == Role::Publisher,
            offered_at: new_peer.offered_at,
            connect_deadline,
            connected: false,
            deadline: None,
            rtc_timeout: None,
            last_now: now,
            audio_mid: None,
            video_mid: None,
            video_gated: true,
            faulted: false,
            last_video_at: None,
            stalled: false,
            video_layers: Vec::new(),
            video_layer: None,
            video_target: VideoTarget::Any,
            selector: LayerSelector::default(),
            estimating: new_peer.estimating,
            probe: 0,
            quality_changed: false,
            metric_rank: None,
            lateness: Vec::new(),
            pt_cache: [None, None],
            tracks: Default::default(),
            unsent_media_since: None,
        }
    }

    /// Polls the `Rtc` until it returns a timeout, turning its output into core outputs
    /// and deferred actions.
    pub fn drain(
        &mut self,
        now: Instant,
        out: &mut VecDeque<CoreOutput>,
        actions: &mut VecDeque<Action>,
        metrics: &Metrics,
    ) -> Result<(), PeerFault> {
        loop {
            match self.rtc.poll_output().map_err(PeerFault::Rtc)? {
                Output::Timeout(at) => {
                    self.rtc_timeout = self.rtc.is_alive().then_some(at);
                    return Ok(());
                }
                Output::Transmit(transmit) => out.push_back(transmit_output(transmit)),
                Output::Event(event) => self.on_event(now, event, out, actions, metrics),
            }
        }
    }

    /// Drains only the datagrams (used while closing).
    pub fn drain_transmits(&mut self, _now: Instant, out: &mut VecDeque<CoreOutput>) {
        for _ in 0..64 {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(transmit)) => out.push_back(transmit_output(transmit)),
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => return,
            }
        }
    }

    /// The transport of the address the peer's latest confirmed check came from (with
    /// ICE-lite the client nominates, and the nominated check is among the last).
    fn connected_over(&self) -> ConnectedOver {
        match self.addrs.last() {
            Some(address) if address.transport == Transport::Tcp => ConnectedOver::Tcp,
            Some(address) if self.relay_addrs.contains(&address.source) => ConnectedOver::Relay,
            _ => ConnectedOver::Udp,
        }
    }

    /// Why a peer that never connected did not.
    pub fn connect_failure(&self) -> IceFailure {
        if self.addrs.is_empty() {
            IceFailure::NoCheckArrived
        } else {
            IceFailure::DtlsIncomplete
        }
    }

    fn on_event(
        &mut self,
        now: Instant,
        event: Event,
        out: &mut VecDeque<CoreOutput>,
        actions: &mut VecDeque<Action>,
        metrics: &Metrics,
    ) {
        match event {
            Event::Connected if !self.connected => {
                self.connected = true;
                let setup = now.saturating_duration_since(self.offered_at);
                metrics.observe_setup(setup);
                metrics.transport.connected(self.connected_over());
                out.push_back(CoreOutput::Connected {
                    peer: self.id,
                    live: self.live,
                    role: self.role,
                    setup,
                });
                if self.role == Role::Viewer {
                    actions.push_back(Action::ViewerGated(self.live, self.id));
                } else {
                    self.last_video_at = Some(now);
                }
            }
            Event::StreamPaused(paused)
                if self.role == Role::Publisher
                    && paused.paused
                    && Some(paused.mid) == self.video_mid
                    // A simulcast encoder pausing one layer is not a stall (the stall
                    // timer still sees every layer stop).
                    && self.video_layers.len() <= 1 =>
            {
                self.set_stalled(true, out);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if self.connected {
                    metrics.transport.ice_failed(IceFailure::ConsentLost);
                }
                actions.push_back(Action::Remove(self.id, RemoveReason::IceDisconnected));
            }
            Event::Closed => actions.push_back(Action::Remove(self.id, RemoveReason::DtlsClosed)),
            Event::MediaAdded(added) => match added.kind {
                MediaKind::Audio => self.audio_mid = self.audio_mid.or(Some(added.mid)),
                MediaKind::Video => self.video_mid = self.video_mid.or(Some(added.mid)),
            },
            Event::RtpPacket(rtp) if self.role == Role::Publisher => {
                self.on_rtp_packet(now, rtp, out, actions)
            }
            Event::KeyframeRequest(_) if self.role == Role::Viewer => {
                metrics.keyframe_requests_from_viewers.fetch_add(1, Relaxed);
                actions.push_back(Action::WantKeyframe(self.live, self.video_layer));
            }
            Event::EgressBitrateEstimate(
                BweKind::Twcc {
                    estimate: bitrate, ..
                }
                | BweKind::Remb {
                    estimate: bitrate, ..
                },
            ) if self.role == Role::Viewer => {
                self.selector.estimate_bps = Some(bitrate.as_u64());
            }
            Event::MediaEgressStats(stats) if Some(stats.mid) == self.video_mid => {
                self.selector.loss = stats.loss.unwrap_or(0.0);
            }
            _ => {}
        }
    }

    /// Publisher: when it must be reported stalled if no video frame arrives meanwhile.
    pub fn stall_deadline(&self, stall_after: Duration) -> Option<Instant> {
        if self.role != Role::Publisher || !self.connected || self.stalled || self.faulted {
            return None;
        }
        self.last_video_at.map(|at| at + stall_after)
    }

    /// Publisher: reports a stall if no video frame arrived for `stall_after`.
    pub fn check_stall(
        &mut self,
        now: Instant,
        stall_after: Duration,
        out: &mut VecDeque<CoreOutput>,
    ) {
        if self
            .stall_deadline(stall_after)
            .is_some_and(|due| now >= due)
        {
            self.set_stalled(true, out);
        }
    }

    fn set_stalled(&mut self, stalled: bool, out: &mut VecDeque<CoreOutput>) {
        if self.stalled == stalled {
            return;
        }
        self.stalled = stalled;
        tracing::debug!(peer = %self.id, live = %self.live, stalled, "publisher video");
        out.push_back(CoreOutput::PublisherStall {
            peer: self.id,
            live: self.live,
            stalled,
        });
    }

    /// Publisher: one RTP packet received (already decrypted, RTX unwrapped).
    fn on_rtp_packet(
        &mut self,
        now: Instant,
        rtp: RtpPacket,
        out: &mut VecDeque<CoreOutput>,
        actions: &mut VecDeque<Action>,
    ) {
        let pt = rtp.header.payload_type;
        let Some(params) = self.rtc.codec_config().find(|p| p.pt() == pt).copied() else {
            return;
        };
        let codec = params.spec().codec;
        let kind = if codec.is_audio() {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let mut keyframe = false;
        let mut vp8 = None;
        let mut layer = None;
        let mut dimensions = None;
        if kind == MediaKind::Video {
            let ssrc = rtp.header.ssrc;
            layer = match self.video_layers.iter().find(|(s, _)| *s == ssrc) {
                Some((_, layer)) => *layer,
                None if self.video_layers.len() < MAX_LAYERS => {
                    let rid = self.rtc.direct_api().stream_rx(&ssrc).and_then(|s| s.rid());
                    self.video_layers.push((ssrc, rid));
                    rid
                }
                None => return,
            };
            self.last_video_at = Some(now);
            self.set_stalled(false, out);
            match codec {
                Codec::Vp8 => {
                    vp8 = Vp8Descriptor::parse(&rtp.payload).ok();
                    keyframe = vp8.is_some_and(|d| d.starts_keyframe(&rtp.payload));
                    if keyframe {
                        dimensions = vp8_keyframe_dimensions(&rtp.payload);
                    }
                }
                Codec::H264 => keyframe = str0m::format::detect_h264_keyframe(&rtp.payload),
                _ => {}
            }
        }
        let late_on_arrival = self.lateness_tracker(kind, layer).observe(
            now,
            rtp.header.timestamp,
            params.spec().clock_rate.get(),
        );
        let extensions = ExtensionValues {
            audio_level: rtp.header.ext_vals.audio_level,
            voice_activity: rtp.header.ext_vals.voice_activity,
            video_orientation: rtp.header.ext_vals.video_orientation,
            ..ExtensionValues::default()
        };
        let packet = Arc::new(Packet {
            live: self.live,
            generation: self.generation,
            kind,
            pt,
            params,
            seq: *rtp.seq_no,
            rtp_time: rtp.header.timestamp,
            marker: rtp.header.marker,
            keyframe,
            layer,
            dimensions,
            vp8,
            extensions,
            received_at: now,
            late_on_arrival,
            payload: rtp.payload,
        });
        out.push_back(CoreOutput::ToOtherWorkers(WorkerMessage::Packet(
            packet.clone(),
        )));
        if self.record {
            out.push_back(CoreOutput::Record(packet.clone()));
        }
        actions.push_back(Action::Deliver {
            packet,
            from: 0,
            gated: 0,
        });
    }

    /// Viewer: the track of `kind` must start anew at the next packet that may start it
    /// (video: a keyframe), continuing its numbering.
    pub fn restart_track(&mut self, kind: MediaKind) {
        self.tracks[kind_slot(kind)].restart();
    }

    /// Viewer: writes one publisher packet, honouring the keyframe gate. Returns whether
    /// the `Rtc` was touched (and so must be drained).
    pub fn write_packet(&mut self, packet: &Packet, now: Instant) -> bool {
        let slot = kind_slot(packet.kind);
        let mid = match packet.kind {
            MediaKind::Audio => self.audio_mid,
            MediaKind::Video => self.video_mid,
        };
        let Some(mid) = mid else { return false };
        let video = packet.kind == MediaKind::Video;
        let mut switching = false;
        if video {
            // A keyframe of the layer wanted next starts it (a switch, or the end of the
            // gate); otherwise only the layer in force goes out.
            switching = packet.keyframe
                && match self.video_target {
                    VideoTarget::Any => self.video_gated,
                    VideoTarget::Layer(key) => {
                        key == packet.layer && (self.video_gated || key != self.video_layer)
                    }
                    VideoTarget::Paused => false,
                };
            let in_force = !self.video_gated && packet.layer == self.video_layer;
            if !switching && !in_force {
                return false;
            }
            if !switching && !self.tracks[slot].is_mapped(packet) && !packet.keyframe {
                // A mapping for this packet's generation would have to start here, mid-GOP.
                return false;
            }
        }
        let cached = self.pt_cache[slot]
            .filter(|(generation, from, _)| *generation == packet.generation && *from == packet.pt)
            .map(|(_, _, to)| to);
        let pt = match cached {
            Some(pt) => pt,
            None => match self.rtc.codec_config().match_params(packet.params) {
                Some(params) => {
                    let pt = params.pt();
                    self.pt_cache[slot] = Some((packet.generation, packet.pt, pt));
                    pt
                }
                None => return false,
            },
        };
        let Some(header) = self.tracks[slot].rewrite(packet, now) else {
            return false;
        };
        if switching {
            self.video_gated = false;
            if self.video_layer != packet.layer {
                self.video_layer = packet.layer;
                self.quality_changed = true;
            }
        }
        let mut write = RtpWrite::new(
            pt,
            header.seq.into(),
            header.rtp_time,
            packet.received_at,
            packet.payload.clone(),
        )
        .marker(packet.marker)
        .nackable(video)
        .ext_vals(packet.extensions.clone());
        if let Some(patch) = header.vp8_patch {
            write = write.vp8_patch(patch);
        }
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        // Sent at this peer's next timeout (str0m's pacer takes written packets in
        // there), which the written packet makes due at once. Running that timeout
        // inline here was measured slower (scripts/bench: 15-16 against 11-13 µs per
        // packet at 200 viewers): deferred, one timeout sends all a viewer got meanwhile.
        stream.write_rtp(write);
        true
    }
}

impl Peer {
    /// Publisher: the lateness tracker of one track (bounded: layers are).
    fn lateness_tracker(&mut self, kind: MediaKind, layer: LayerKey) -> &mut LatenessTracker {
        let index = match self
            .lateness
            .iter()
            .position(|(k, l, _)| *k == kind && *l == layer)
        {
            Some(index) => index,
            None => {
                self.lateness
                    .push((kind, layer, LatenessTracker::default()));
                self.lateness.len() - 1
            }
        };
        &mut self.lateness[index].2
    }

    /// Publisher: the layers its video has come in (each simulcast rid seen).
    pub fn publisher_layers(&self) -> Vec<LayerKey> {
        self.video_layers.iter().map(|(_, layer)| *layer).collect()
    }

    /// Viewer: waiting for a keyframe (gated, or switching layers); returns the layer.
    pub fn awaited_keyframe(&self) -> Option<LayerKey> {
        if self.role != Role::Viewer || !self.connected || self.video_mid.is_none() {
            return None;
        }
        match self.video_target {
            VideoTarget::Any if self.video_gated => Some(self.video_layer),
            VideoTarget::Layer(key) if self.video_gated || key != self.video_layer => Some(key),
            _ => None,
        }
    }
}

/// Index of a kind in the per-kind arrays.
fn kind_slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}
