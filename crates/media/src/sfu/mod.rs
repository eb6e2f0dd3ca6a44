//! The sans-IO SFU core of one media worker.
//!
//! [`WorkerCore`] owns the peers (each wrapping a `str0m::Rtc`) that live on one worker,
//! the worker's UDP demultiplexing tables, the per-live forwarding state and the keyframe
//! policy. It is driven by [`WorkerCore::handle_datagram`], [`WorkerCore::handle_command`],
//! [`WorkerCore::handle_worker_message`] and [`WorkerCore::handle_timeout`], and reports
//! everything it wants done through [`WorkerCore::poll_output`].
//!
//! Architecture invariant: nothing in this module reads a clock, touches a socket or a
//! channel; time is always the `now` argument. That is what makes it testable with
//! virtual time (see `tests.rs`).

pub mod demux;
mod forward;
pub mod keyframe;
pub mod layers;
mod offer;
mod peer;
mod receive;
mod rewrite;
mod simulcast;
pub mod stun;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use str0m::{Candidate, Input, Rtc, RtcError};

pub use forward::Packet;
use forward::Room;
use layers::{LayerChoice, LayerKey};
pub use offer::{LocalCandidates, OfferError, RtcTemplate, SdpProblem};
use peer::{Peer, PeerFault};
pub use simulcast::QualityReport;

use crate::metrics::Metrics;

/// Server-wide identity of one peer connection (one publish or one watch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer-{}", self.0)
    }
}

/// How a peer's packets travel between it and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// ICE-TCP: RFC 4571 frames on a connection to the TCP listener.
    Tcp,
}

/// What a peer does in its live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Viewer,
}

/// Why a peer was removed from its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// The client left (signaling `leave` or WebSocket closed).
    Left,
    /// A newer publisher of the same live took over.
    Replaced,
    /// The client closed DTLS (e.g. `pc.close()`).
    DtlsClosed,
    /// ICE reported the client gone.
    IceDisconnected,
    /// The client never connected within the connect timeout.
    ConnectTimeout,
    /// The peer's `Rtc` returned an error.
    RtcError,
    /// The peer's `Rtc` panicked.
    RtcPanic,
    /// The server is stopping.
    Shutdown,
    /// The app withdrew the right to publish (stream key rotated, live ended).
    Revoked,
    /// The peer's worker thread is gone; the engine dropped the peer without it.
    WorkerStopped,
}

/// A ready-made peer handed to a worker: the `Rtc` was built and the offer accepted off
/// the worker thread, because building an `Rtc` costs about a millisecond of CPU.
pub struct NewPeer {
    pub id: PeerId,
    pub live: LiveId,
    pub role: Role,
    /// Publish generation: increases with every publish, so viewers can tell a new
    /// publisher of the same live from a stale one.
    pub generation: u64,
    pub rtc: Rtc,
    /// Our ICE ufrag for this peer, for demultiplexing STUN checks.
    pub local_ufrag: String,
    /// When the offer reached the server (for the set-up time metric).
    pub offered_at: Instant,
    /// Viewer: its `Rtc` estimates the downstream bandwidth (see `accept_offer`).
    pub estimating: bool,
    /// Publisher: its offer sends simulcast layers.
    pub simulcast: bool,
    /// Addresses of relay candidates in the offer (see [`relay_candidate_addresses`]).
    pub relay_addrs: Vec<SocketAddr>,
    /// Publisher: its packets are recorded (each one is also a [`CoreOutput::Record`]).
    pub record: bool,
}

/// Most relay candidate addresses remembered per peer.
pub const MAX_RELAY_ADDRS: usize = 8;

/// The addresses of the `typ relay` candidates in an SDP (bounded), so media arriving
/// from one is counted as relayed.
pub fn relay_candidate_addresses(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|line| line.trim().strip_prefix("a="))
        .filter_map(|line| Candidate::from_sdp_string(line).ok())
        .filter(|c| c.kind() == str0m::CandidateKind::Relayed)
        .map(|c| c.addr())
        .take(MAX_RELAY_ADDRS)
        .collect()
}

/// Commands from the signaling side to a worker (unbounded; their rate is limited by the
/// signaling sessions).
pub enum Command {
    AddPeer(Box<NewPeer>),
    RemovePeer {
        peer: PeerId,
        reason: RemoveReason,
    },
    RemoteCandidate {
        peer: PeerId,
        candidate: Candidate,
    },
    /// The recorder wants a keyframe: asked of the live's publisher if it is here.
    WantKeyframe {
        live: LiveId,
        layer: LayerKey,
    },
    /// The viewer picked a quality in the player's menu.
    SetLayerChoice {
        peer: PeerId,
        choice: LayerChoice,
    },
    Shutdown,
}

/// Messages between workers (over bounded channels; dropped when full).
#[derive(Debug, Clone)]
pub enum WorkerMessage {
    /// A packet from a publisher on another worker.
    Packet(Arc<Packet>),
    /// Viewers on another worker want a keyframe of this live's `layer`.
    KeyframeWanted { live: LiveId, layer: LayerKey },
    /// Shared UDP port: a datagram worker `via` received for one of our peers.
    PassedDatagram {
        source: SocketAddr,
        contents: Vec<u8>,
        via: usize,
    },
    /// Shared UDP port: `owner` verified a check from `source`; pass it all it sends.
    RouteConfirmed { source: SocketAddr, owner: usize },
    /// Shared UDP port: `owner`'s peer at `source` is gone.
    RouteReleased { source: SocketAddr, owner: usize },
}

/// What the core asks its driver to do.
#[derive(Debug)]
pub enum CoreOutput {
    /// Send a datagram from this worker's socket.
    Transmit {
        destination: SocketAddr,
        contents: Vec<u8>,
        /// For forwarded media: when the publisher's packet it carries was received (the
        /// driver observes the forwarding delay once the send returns).
        media_received_at: Option<Instant>,
    },
    /// Send a frame on the ICE-TCP connection from `destination`.
    TransmitTcp {
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// Deliver to every other worker.
    ToOtherWorkers(WorkerMessage),
    /// A packet of a publisher whose live is recorded.
    Record(Arc<Packet>),
    /// Deliver to one other worker.
    ToWorker {
        worker: usize,
        message: WorkerMessage,
    },
    /// ICE and DTLS are up for this peer.
    Connected {
        peer: PeerId,
        live: LiveId,
        role: Role,
        setup: Duration,
    },
    /// A connected publisher's video stopped (`stalled: true`: str0m reported its video
    /// stream paused, or no video frame for [`CoreConfig::stall_after`]) or came back
    /// (`stalled: false`: a video frame arrived after a stall).
    PublisherStall {
        peer: PeerId,
        live: LiveId,
        stalled: bool,
    },
    /// What a viewer's player should show about its video quality (layers, the one
    /// forwarded, the estimate): on every change and every couple of seconds.
    ViewerQuality { peer: PeerId, report: QualityReport },
    /// The peer is gone and everything it held is freed.
    Removed {
        peer: PeerId,
        live: LiveId,
        role: Role,
        reason: RemoveReason,
    },
}

/// Deferred work, so that handling one peer's event never re-enters another peer.
enum Action {
    /// Forward a packet to local viewers, from the `from`th on (a delivery is done in
    /// slices so the driver sends the first viewers' datagrams before the last are
    /// encrypted); `gated` counts gated viewers seen in earlier slices.
    Deliver {
        packet: Arc<Packet>,
        from: usize,
        gated: usize,
    },
    /// Viewers want a keyframe of this layer (`None` without simulcast: any layer).
    WantKeyframe(LiveId, LayerKey),
    /// A viewer connected and waits for a keyframe: start the retry episode.
    ViewerGated(LiveId, PeerId),
    Remove(PeerId, RemoveReason),
}

/// Counters a test or the stats call can read without the metrics registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    pub peers: usize,
    pub rooms: usize,
    pub addr_entries: usize,
    pub ufrag_entries: usize,
    pub deadlines: usize,
}

/// Tunables of the core, like str0m's `RtcConfig`.
#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    /// A peer not connected this long after being added is removed.
    pub connect_timeout: Duration,
    /// Least time between two keyframe requests to one publisher.
    pub keyframe_interval: Duration,
    /// A connected publisher whose video sent no frame this long is reported stalled.
    pub stall_after: Duration,
    /// Media older than this when it would be forwarded is dropped instead (overload).
    pub shed_after: Duration,
    /// This worker's index; it starts the ufrag of every peer placed here.
    pub worker_index: usize,
    /// All workers share one UDP port, so datagrams may arrive at the wrong worker.
    pub shared_udp_port: bool,
    /// The announced address of the ICE-TCP listener, when it runs.
    pub tcp_addr: Option<SocketAddr>,
}

/// Default of [`CoreConfig::stall_after`]: a little more than str0m's 1.5 s pause
/// threshold, so `Event::StreamPaused` usually reports a stall first.
pub const STALL_AFTER: Duration = Duration::from_secs(2);

/// Datagrams the core lets pile up before it stops to let the driver send them (one
/// `sendmmsg` batch is 32).
const OUTPUT_SLICE: usize = 32;

/// Default of [`CoreConfig::shed_after`]: well above a keyframe's pacing spread and
/// ordinary jitter, well below what a viewer notices as falling behind.
pub const SHED_AFTER: Duration = Duration::from_millis(300);

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            connect_timeout: Duration::from_secs(15),
            keyframe_interval: keyframe::UPSTREAM_INTERVAL,
            stall_after: STALL_AFTER,
            shed_after: SHED_AFTER,
            worker_index: 0,
            shared_udp_port: false,
            tcp_addr: None,
        }
    }
}

/// One worker's SFU state. See the module docs.
pub struct WorkerCore {
    /// The address this worker announces (host candidate); every received datagram is
    /// given to str0m with this as its destination.
    local_addr: SocketAddr,
    config: CoreConfig,
    metrics: Arc<Metrics>,
    peers: HashMap<PeerId, Peer>,
    by_addr: HashMap<SocketAddr, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    /// ICE-TCP connections' remote addresses.
    by_tcp_addr: HashMap<SocketAddr, PeerId>,
    /// Shared UDP port: sources whose peers live on other workers.
    foreign_routes: demux::ForeignRoutes,
    deadlines: BTreeSet<(Instant, PeerId)>,
    rooms: HashMap<LiveId, Room>,
    stun_limiter: stun::StunRateLimiter,
    out: VecDeque<CoreOutput>,
    actions: VecDeque<Action>,
    /// The latest `now` given (deferred work runs with it).
    last_now: Option<Instant>,
    /// Peers whose timeout is due and not yet run (see `run_due_timeouts`).
    due: VecDeque<PeerId>,
}

impl WorkerCore {
    pub fn new(local_addr: SocketAddr, config: CoreConfig, metrics: Arc<Metrics>) -> Self {
        WorkerCore {
            local_addr,
            config,
            metrics,
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_tcp_addr: HashMap::new(),
            foreign_routes: demux::ForeignRoutes::default(),
            deadlines: BTreeSet::new(),
            rooms: HashMap::new(),
            stun_limiter: stun::StunRateLimiter::default(),
            out: VecDeque::new(),
            actions: VecDeque::with_capacity(64),
            last_now: None,
            due: VecDeque::new(),
        }
    }

    /// The next thing the driver must do, if any. Deferred work (the rest of a
    /// delivery) runs here once earlier output is taken.
    pub fn poll_output(&mut self) -> Option<CoreOutput> {
        if self.out.is_empty()
            && let Some(now) = self.last_now
        {
            if !self.due.is_empty() {
                self.run_due_timeouts(now);
            }
            if self.out.is_empty() && !self.actions.is_empty() {
                self.run_actions(now);
            }
        }
        self.out.pop_front()
    }

    /// When [`WorkerCore::handle_timeout`] must next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        let peers = self.deadlines.first().map(|(t, _)| *t);
        let rooms = self.rooms.values().filter_map(Room::next_timeout).min();
        match (peers, rooms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn stats(&self) -> CoreStats {
        CoreStats {
            peers: self.peers.len(),
            rooms: self.rooms.len(),
            addr_entries: self.by_addr.len(),
            ufrag_entries: self.by_ufrag.len(),
            deadlines: self.deadlines.len(),
        }
    }

    /// A command from signaling.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::AddPeer(new_peer) => self.add_peer(now, *new_peer),
            Command::RemovePeer { peer, reason } => {
                self.actions.push_back(Action::Remove(peer, reason))
            }
            Command::RemoteCandidate { peer, candidate } => {
                if candidate.kind() == str0m::CandidateKind::Relayed
                    && let Some(p) = self.peers.get_mut(&peer)
                    && p.relay_addrs.len() < MAX_RELAY_ADDRS
                {
                    p.relay_addrs.push(candidate.addr());
                }
                self.with_rtc(now, peer, |rtc| {
                    rtc.add_remote_candidate(candidate);
                    Ok(())
                });
            }
            Command::SetLayerChoice { peer, choice } => self.set_layer_choice(now, peer, choice),
            Command::WantKeyframe { live, layer } => {
                if self
                    .rooms
                    .get(&live)
                    .is_some_and(|room| room.publisher.is_some())
                {
                    self.actions.push_back(Action::WantKeyframe(live, layer));
                }
            }
            Command::Shutdown => {
                let ids: Vec<PeerId> = self.peers.keys().copied().collect();
                for id in ids {
                    self.actions
                        .push_back(Action::Remove(id, RemoveReason::Shutdown));
                }
            }
        }
        self.run_actions(now);
    }

    /// A message from another worker.
    pub fn handle_worker_message(&mut self, now: Instant, message: WorkerMessage) {
        match message {
            WorkerMessage::Packet(packet) => {
                if self.rooms.get(&packet.live).is_some_and(Room::has_viewers) {
                    self.actions.push_back(Action::Deliver {
                        packet,
                        from: 0,
                        gated: 0,
                    });
                }
            }
            WorkerMessage::KeyframeWanted { live, layer } => {
                if self.rooms.get(&live).is_some_and(|r| r.publisher.is_some()) {
                    self.actions.push_back(Action::WantKeyframe(live, layer));
                }
            }
            WorkerMessage::PassedDatagram {
                source,
                contents,
                via,
            } => return self.handle_passed_datagram(now, source, &contents, via),
            WorkerMessage::RouteConfirmed { source, owner } => {
                self.foreign_routes.confirm(now, source, owner)
            }
            WorkerMessage::RouteReleased { source, owner } => {
                self.foreign_routes.release(source, owner)
            }
        }
        self.run_actions(now);
    }

    /// Timers: peers' str0m timeouts, connect timeouts and the rooms' keyframe timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(self.last_now.map_or(now, |last| last.max(now)));
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.due.push_back(id);
        }
        self.run_due_timeouts(now);
        let lives: Vec<LiveId> = self.rooms.keys().copied().collect();
        for live in lives {
            let Some(room) = self.rooms.get_mut(&live) else {
                continue;
            };
            let due = room.due_keyframe_requests(now);
            if let Some(publisher) = room.publisher {
                for layer in due {
                    self.send_pli(now, publisher, layer);
                }
            }
            let Some(room) = self.rooms.get_mut(&live) else {
                continue;
            };
            if room.gate_retry.poll(now) {
                for layer in awaited_layers(room, &self.peers) {
                    self.actions.push_back(Action::WantKeyframe(live, layer));
                }
            }
            if self
                .rooms
                .get(&live)
                .and_then(|room| room.next_layer_review)
                .is_some_and(|at| at <= now)
            {
                self.review_layers(now, live);
            }
        }
        self.run_actions(now);
    }

    /// Runs due peers' timeouts until none is left or a slice of output is ready (str0m
    /// sends written media on a peer's timeout, so this is where most datagrams of a
    /// fan-out are made; the rest run from `poll_output` once the slice is sent).
    fn run_due_timeouts(&mut self, now: Instant) {
        while self.out.len() < OUTPUT_SLICE
            && let Some(id) = self.due.pop_front()
        {
            tracing::trace!(peer = %id, "timeout due");
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.deadline = None;
                if !peer.connected && now >= peer.connect_deadline {
                    self.metrics.connect_timeouts.fetch_add(1, Relaxed);
                    self.metrics.transport.ice_failed(peer.connect_failure());
                    self.actions
                        .push_back(Action::Remove(id, RemoveReason::ConnectTimeout));
                    continue;
                }
                peer.check_stall(now, self.config.stall_after, &mut self.out);
            }
            let first_output = self.out.len();
            self.with_rtc(now, id, |rtc| rtc.handle_input(Input::Timeout(now)));
            // What this timeout sent carries the media written since the last one.
            if let Some(at) = self
                .peers
                .get_mut(&id)
                .and_then(|p| p.unsent_media_since.take())
            {
                for output in self.out.range_mut(first_output..) {
                    if let CoreOutput::Transmit {
                        media_received_at, ..
                    } = output
                    {
                        *media_received_at = Some(at);
                    }
                }
            }
        }
    }

    fn add_peer(&mut self, now: Instant, new_peer: NewPeer) {
        let id = new_peer.id;
        let live = new_peer.live;
        let role = new_peer.role;
        let peer = Peer::new(new_peer, now, now + self.config.connect_timeout);
        tracing::trace!(peer = %id, "added");
        self.by_ufrag.insert(peer.local_ufrag.clone(), id);
        self.peers.insert(id, peer);
        let interval = self.config.keyframe_interval;
        let room = self
            .rooms
            .entry(live)
            .or_insert_with(|| Room::new(interval));
        match role {
            Role::Publisher => room.publisher = Some(id),
            Role::Viewer => room.viewers.push(id),
        }
        self.with_rtc(now, id, |rtc| rtc.handle_input(Input::Timeout(now)));
        self.run_actions(now);
    }

    /// Runs `f` on a peer's `Rtc`, then drains it (the single-mutation invariant), all
    /// inside `catch_unwind`. A panic or error schedules the removal of that peer only.
    fn with_rtc(
        &mut self,
        now: Instant,
        id: PeerId,
        f: impl FnOnce(&mut Rtc) -> Result<(), RtcError>,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.last_now = peer.last_now.max(now);
        let result = catch_unwind(AssertUnwindSafe(|| {
            f(&mut peer.rtc).map_err(PeerFault::Rtc)?;
            peer.drain(now, &mut self.out, &mut self.actions, &self.metrics)
        }));
        let fault = match result {
            Ok(Ok(())) => None,
            Ok(Err(PeerFault::Rtc(error))) => {
                tracing::info!(peer = %id, %error, "rtc error, removing peer");
                self.metrics.rtc_errors.fetch_add(1, Relaxed);
                Some(RemoveReason::RtcError)
            }
            Err(_) => {
                tracing::error!(peer = %id, "rtc panicked, removing peer");
                self.metrics.rtc_panics.fetch_add(1, Relaxed);
                Some(RemoveReason::RtcPanic)
            }
        };
        if let Some(reason) = fault {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.faulted = true;
            }
            self.actions.push_back(Action::Remove(id, reason));
        }
        self.update_deadline(id);
    }

    fn update_deadline(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut want = peer.rtc_timeout;
        if !peer.connected {
            want = Some(want.map_or(peer.connect_deadline, |t| t.min(peer.connect_deadline)));
        }
        if let Some(stall) = peer.stall_deadline(self.config.stall_after) {
            want = Some(want.map_or(stall, |t| t.min(stall)));
        }
        if want != peer.deadline {
            if let Some(old) = peer.deadline {
                self.deadlines.remove(&(old, id));
            }
            if let Some(new) = want {
                self.deadlines.insert((new, id));
            }
            peer.deadline = want;
        }
    }

    /// Runs deferred work until none is left or a slice of output is ready.
    fn run_actions(&mut self, now: Instant) {
        let now = self.last_now.map_or(now, |last| last.max(now));
        self.last_now = Some(now);
        while self.out.len() < OUTPUT_SLICE
            && let Some(action) = self.actions.pop_front()
        {
            match action {
                Action::Deliver {
                    packet, from: 0, ..
                } => self.deliver(now, packet),
                Action::Deliver {
                    packet,
                    from,
                    gated,
                } => self.deliver_slice(now, packet, from, gated),
                Action::WantKeyframe(live, layer) => self.want_keyframe(now, live, layer),
                Action::ViewerGated(live, id) => {
                    // Choose its layer first, so the keyframe asked for is that one's.
                    self.review_one_viewer(now, live, id);
                    self.want_awaited_keyframes(now, live);
                }
                Action::Remove(id, reason) => self.remove_peer(now, id, reason),
            }
        }
    }

    fn want_keyframe(&mut self, now: Instant, live: LiveId, layer: LayerKey) {
        let publisher = self.rooms.get_mut(&live).and_then(|room| {
            let publisher = room.publisher?;
            Some((publisher, room.throttle(layer).request(now)))
        });
        match publisher {
            Some((publisher, true)) => self.send_pli(now, publisher, layer),
            Some((_, false)) => {}
            None => self
                .out
                .push_back(CoreOutput::ToOtherWorkers(WorkerMessage::KeyframeWanted {
                    live,
                    layer,
                })),
        }
    }

    /// Starts a keyframe retry episode and asks for the layers local viewers wait for.
    fn want_awaited_keyframes(&mut self, now: Instant, live: LiveId) {
        let Some(room) = self.rooms.get_mut(&live) else {
            return;
        };
        let layers = awaited_layers(room, &self.peers);
        if !layers.is_empty() {
            room.gate_retry.gated(now);
        }
        for layer in layers {
            self.want_keyframe(now, live, layer);
        }
    }

    /// Sends a PLI for `layer` (`None`: the one stream, or every layer of a simulcast
    /// publisher when the asker did not say which).
    fn send_pli(&mut self, now: Instant, publisher: PeerId, layer: LayerKey) {
        let Some(peer) = self.peers.get(&publisher) else {
            return;
        };
        let Some(mid) = peer.video_mid else {
            return;
        };
        let every_layer = peer.publisher_layers();
        let metrics = self.metrics.clone();
        self.with_rtc(now, publisher, |rtc| {
            let mut api = rtc.direct_api();
            let rids: Vec<LayerKey> = match api.stream_rx_by_mid(mid, layer) {
                Some(_) => vec![layer],
                None if layer.is_none() => every_layer,
                None => Vec::new(),
            };
            for rid in rids {
                if let Some(stream) = api.stream_rx_by_mid(mid, rid) {
                    stream.request_keyframe(str0m::media::KeyframeRequestKind::Pli);
                    metrics.keyframe_requests_sent.fetch_add(1, Relaxed);
                }
            }
            Ok(())
        });
    }

    /// Starts forwarding one publisher packet to this worker's viewers of its live:
    /// generation change, shedding, then the first slice.
    fn deliver(&mut self, now: Instant, packet: Arc<Packet>) {
        let Some(room) = self.rooms.get_mut(&packet.live) else {
            return;
        };
        if packet.generation < room.generation {
            return;
        }
        if packet.generation > room.generation {
            // A new publisher: hold everyone's video until its first keyframe.
            room.generation = packet.generation;
            for id in &room.viewers {
                if let Some(peer) = self.peers.get_mut(id) {
                    peer.video_gated = true;
                }
            }
            if room.has_viewers() && room.gate_retry.gated(now) {
                self.actions
                    .push_back(Action::WantKeyframe(packet.live, None));
            }
        }
        if packet.keyframe {
            room.throttle(packet.layer).keyframe_seen();
        }
        if packet.kind == str0m::media::MediaKind::Video {
            room.layers
                .observe(now, packet.layer, packet.payload.len(), packet.dimensions);
            if room.next_layer_review.is_none() && room.has_viewers() {
                room.next_layer_review = Some(now + simulcast::LAYER_REVIEW);
            }
        }
        let staleness = packet.staleness(now);
        if staleness > self.config.shed_after {
            self.shed(now, &packet, staleness);
            return;
        }
        if room.shedding {
            // Keyframes asked for while shedding may have been shed too: ask again now
            // that what arrives is fresh.
            room.shedding = false;
            tracing::info!(live = %packet.live, "media fresh again, shedding stopped");
            if room.gate_retry.gated(now) {
                self.actions
                    .push_back(Action::WantKeyframe(packet.live, None));
            }
        }
        self.deliver_slice(now, packet, 0, 0);
    }

    /// Forwards `packet` to the local viewers from the `from`th on, until a slice of
    /// output is ready; the rest is queued to run first once the slice is sent.
    fn deliver_slice(&mut self, now: Instant, packet: Arc<Packet>, from: usize, mut gated: usize) {
        let Some(room) = self.rooms.get_mut(&packet.live) else {
            return;
        };
        // Borrowed out of the room for the loop (no per-packet copy); removals during the
        // loop are deferred through `actions`, so the list cannot change meanwhile.
        let viewers = std::mem::take(&mut room.viewers);
        let mut forwarded = 0u64;
        let mut next = None;
        for (index, &id) in viewers.iter().enumerate().skip(from) {
            if self.out.len() >= OUTPUT_SLICE {
                next = Some(index);
                break;
            }
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if !peer.connected || peer.faulted {
                continue;
            }
            let metrics = &self.metrics;
            let result = catch_unwind(AssertUnwindSafe(|| {
                if peer.write_packet(&packet, now) {
                    forwarded += 1;
                    peer.unsent_media_since.get_or_insert(packet.received_at);
                    peer.drain(now, &mut self.out, &mut self.actions, metrics)
                } else {
                    Ok(())
                }
            }));
            if peer.awaited_keyframe().is_some() {
                gated += 1;
            }
            if !matches!(result, Ok(Ok(()))) {
                let reason = if result.is_err() {
                    self.metrics.rtc_panics.fetch_add(1, Relaxed);
                    RemoveReason::RtcPanic
                } else {
                    self.metrics.rtc_errors.fetch_add(1, Relaxed);
                    RemoveReason::RtcError
                };
                peer.faulted = true;
                self.actions.push_back(Action::Remove(id, reason));
            }
            self.update_deadline(id);
        }
        self.metrics.packets_forwarded.fetch_add(forwarded, Relaxed);
        let live = packet.live;
        if let Some(from) = next {
            // The rest runs before any other deferred work, once this slice is sent.
            self.actions.push_front(Action::Deliver {
                packet,
                from,
                gated,
            });
        }
        if let Some(room) = self.rooms.get_mut(&live) {
            room.viewers = viewers;
            if next.is_none() && gated == 0 {
                room.gate_retry.clear();
            }
        }
    }

    /// A packet too stale to be worth sending: drop it for every local viewer. Video
    /// then waits for a fresh keyframe (asked for at once) so that viewers never decode
    /// across the hole; every track resumes with continuous numbering.
    fn shed(&mut self, now: Instant, packet: &Packet, staleness: Duration) {
        let Some(room) = self.rooms.get_mut(&packet.live) else {
            return;
        };
        if !room.shedding {
            room.shedding = true;
            tracing::warn!(
                live = %packet.live,
                staleness_ms = staleness.as_millis() as u64,
                "media arriving too late to forward; shedding until it is fresh again"
            );
        }
        let mut shed = 0u64;
        let mut newly_gated = false;
        for id in &room.viewers {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if !peer.connected || peer.faulted {
                continue;
            }
            shed += 1;
            peer.restart_track(packet.kind);
            if packet.kind == str0m::media::MediaKind::Video && !peer.video_gated {
                peer.video_gated = true;
                newly_gated = true;
            }
        }
        self.metrics.packets_shed.fetch_add(shed, Relaxed);
        if newly_gated && room.gate_retry.gated(now) {
            self.actions
                .push_back(Action::WantKeyframe(packet.live, None));
        }
    }

    fn remove_peer(&mut self, now: Instant, id: PeerId, reason: RemoveReason) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        self.metrics.move_viewer_rank(peer.metric_rank, None);
        for address in &peer.addrs {
            let table = match address.transport {
                Transport::Udp => &mut self.by_addr,
                Transport::Tcp => &mut self.by_tcp_addr,
            };
            if table.get(&address.source) == Some(&id) {
                table.remove(&address.source);
            }
            if let Some(via) = address.via {
                self.out.push_back(CoreOutput::ToWorker {
                    worker: via,
                    message: WorkerMessage::RouteReleased {
                        source: address.source,
                        owner: self.config.worker_index,
                    },
                });
            }
        }
        self.by_ufrag.remove(&peer.local_ufrag);
        if let Some(deadline) = peer.deadline {
            self.deadlines.remove(&(deadline, id));
        }
        if let Some(room) = self.rooms.get_mut(&peer.live) {
            if room.publisher == Some(id) {
                room.publisher = None;
            }
            room.viewers.retain(|v| *v != id);
            if room.is_empty() {
                self.rooms.remove(&peer.live);
            }
        }
        // A graceful close sends DTLS close_notify so the client notices at once.
        let graceful = matches!(
            reason,
            RemoveReason::Left
                | RemoveReason::Replaced
                | RemoveReason::Shutdown
                | RemoveReason::Revoked
                | RemoveReason::ConnectTimeout
        );
        if graceful && !peer.faulted {
            let out = &mut self.out;
            let _ = catch_unwind(AssertUnwindSafe(|| {
                if peer.rtc.close().is_ok() {
                    peer.drain_transmits(now, out);
                }
            }));
        }
        let _ = catch_unwind(AssertUnwindSafe(|| peer.rtc.disconnect()));
        tracing::debug!(peer = %id, live = %peer.live, ?reason, "peer removed");
        self.out.push_back(CoreOutput::Removed {
            peer: id,
            live: peer.live,
            role: peer.role,
            reason,
        });
    }
}

/// The layers connected viewers of `room` wait for a keyframe of (a scan: only for the
/// keyframe retry timer and joins, never per packet).
fn awaited_layers(room: &Room, peers: &HashMap<PeerId, Peer>) -> Vec<LayerKey> {
    let mut layers = Vec::new();
    for peer in room.viewers.iter().filter_map(|id| peers.get(id)) {
        if let Some(layer) = peer.awaited_keyframe()
            && !layers.contains(&layer)
        {
            layers.push(layer);
        }
    }
    layers
}
