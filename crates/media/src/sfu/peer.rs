//! One peer on a worker: a `str0m::Rtc` plus what the SFU needs to know about it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::{Event, IceConnectionState, Output, Rtc, RtcError};

use super::{Action, CoreOutput, Frame, NewPeer, PeerId, RemoveReason, Role, WorkerMessage};
use crate::metrics::Metrics;

/// Why driving a peer failed.
pub(super) enum PeerFault {
    Rtc(RtcError),
}

pub(super) struct Peer {
    pub id: PeerId,
    pub live: LiveId,
    pub role: Role,
    pub generation: u64,
    pub rtc: Rtc,
    pub local_ufrag: String,
    /// Source addresses confirmed by str0m for this peer (bounded).
    pub addrs: Vec<SocketAddr>,
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
    /// Publisher: the simulcast layer forwarded (the first seen; `Some(None)` = no rid).
    video_rid: Option<Option<str0m::media::Rid>>,
    /// Viewer: the publisher's payload type mapped to ours, per kind, for one generation.
    pt_cache: [Option<(u64, Pt, Pt)>; 2],
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
            video_rid: None,
            pt_cache: [None, None],
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
                Output::Transmit(transmit) => out.push_back(CoreOutput::Transmit {
                    destination: transmit.destination,
                    contents: transmit.contents.into(),
                }),
                Output::Event(event) => self.on_event(now, event, out, actions, metrics),
            }
        }
    }

    /// Drains only the datagrams (used while closing).
    pub fn drain_transmits(&mut self, _now: Instant, out: &mut VecDeque<CoreOutput>) {
        for _ in 0..64 {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(transmit)) => out.push_back(CoreOutput::Transmit {
                    destination: transmit.destination,
                    contents: transmit.contents.into(),
                }),
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => return,
            }
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
                out.push_back(CoreOutput::Connected {
                    peer: self.id,
                    live: self.live,
                    role: self.role,
                    setup,
                });
                if self.role == Role::Viewer {
                    actions.push_back(Action::ViewerGated(self.live));
                } else {
                    self.last_video_at = Some(now);
                }
            }
            Event::StreamPaused(paused)
                if self.role == Role::Publisher
                    && paused.paused
                    && Some(paused.mid) == self.video_mid
                    && self.video_rid.is_none_or(|rid| rid == paused.rid) =>
            {
                self.set_stalled(true, out);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                actions.push_back(Action::Remove(self.id, RemoveReason::IceDisconnected));
            }
            Event::Closed => actions.push_back(Action::Remove(self.id, RemoveReason::DtlsClosed)),
            Event::MediaAdded(added) => match added.kind {
                MediaKind::Audio => self.audio_mid = self.audio_mid.or(Some(added.mid)),
                MediaKind::Video => self.video_mid = self.video_mid.or(Some(added.mid)),
            },
            Event::MediaData(data) if self.role == Role::Publisher => {
                let kind = if Some(data.mid) == self.video_mid {
                    MediaKind::Video
                } else if Some(data.mid) == self.audio_mid {
                    MediaKind::Audio
                } else {
                    return;
                };
                // Our clients do not send simulcast; if one does, forward only the first
                // layer seen rather than mixing layers.
                if kind == MediaKind::Video {
                    match self.video_rid {
                        None => self.video_rid = Some(data.rid),
                        Some(rid) if rid != data.rid => return,
                        Some(_) => {}
                    }
                }
                if kind == MediaKind::Video {
                    self.last_video_at = Some(now);
                    self.set_stalled(false, out);
                }
                let keyframe = kind == MediaKind::Video && data.is_keyframe();
                if kind == MediaKind::Video && !data.contiguous {
                    actions.push_back(Action::WantKeyframe(self.live));
                }
                let frame = Arc::new(Frame {
                    live: self.live,
                    generation: self.generation,
                    kind,
                    pt: data.pt,
                    params: data.params,
                    network_time: data.network_time,
                    time: data.time,
                    data: data.data,
                    keyframe,
                });
                out.push_back(CoreOutput::ToOtherWorkers(WorkerMessage::Frame(
                    frame.clone(),
                )));
                actions.push_back(Action::Deliver(frame));
            }
            Event::KeyframeRequest(_) if self.role == Role::Viewer => {
                metrics.keyframe_requests_from_viewers.fetch_add(1, Relaxed);
                actions.push_back(Action::WantKeyframe(self.live));
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

    /// Viewer: writes one publisher frame, honouring the keyframe gate. Returns whether
    /// the `Rtc` was touched (and so must be drained).
    pub fn write_frame(&mut self, frame: &Frame) -> bool {
        let (mid, slot) = match frame.kind {
            MediaKind::Audio => (self.audio_mid, 0),
            MediaKind::Video => (self.video_mid, 1),
        };
        let Some(mid) = mid else { return false };
        if frame.kind == MediaKind::Video && self.video_gated {
            if !frame.keyframe {
                return false;
            }
            self.video_gated = false;
        }
        let cached = self.pt_cache[slot]
            .filter(|(generation, from, _)| *generation == frame.generation && *from == frame.pt)
            .map(|(_, _, to)| to);
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        let pt = match cached {
            Some(pt) => pt,
            None => match writer.match_params(frame.params) {
                Some(pt) => {
                    self.pt_cache[slot] = Some((frame.generation, frame.pt, pt));
                    pt
                }
                None => return false,
            },
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        if let Err(error) = writer.write(pt, frame.network_time, frame.time, frame.data.clone()) {
            tracing::debug!(peer = %self.id, %error, "write failed");
        }
        true
    }
}
