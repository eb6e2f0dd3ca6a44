//! The media engine: the handle the signaling sessions use to create and remove peers,
//! and the registry of lives (who publishes, who watches, on which worker).
//!
//! The registry is behind one mutex that is only taken on joins, leaves and connection
//! state changes, never on the packet path.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use privatehub_protocol::media_signaling::{QualityLayer, SINGLE_LAYER};
use privatehub_protocol::{LiveId, MediaServerMessage};
use str0m::Candidate;
use str0m::change::SdpAnswer;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender, UnboundedSender, channel};

use crate::config::{MediaSettings, ViewerEstimation};
use crate::metrics::Metrics;
use crate::sfu::QualityReport;
use crate::sfu::layers::{LayerChoice, LayerKey, VideoTarget};
use crate::sfu::{
    Command, CoreConfig, CoreOutput, LocalCandidates, NewPeer, OfferError, PeerId, RemoveReason,
    Role, RtcTemplate, SdpProblem,
};

/// Capacity of a session's notice queue. Notices are rare (a few per publisher change),
/// so a session that lets this many pile up is not reading: it is closed rather than
/// letting its queue grow.
pub const NOTICE_QUEUE: usize = 32;

/// How the engine reaches a signaling session: messages to send (bounded, never
/// waited on) and a close signal that always gets through.
#[derive(Clone)]
pub struct NoticeSender {
    messages: Sender<MediaServerMessage>,
    close: Arc<Notify>,
    removed: Arc<Mutex<Option<RemoveReason>>>,
    metrics: Arc<Metrics>,
}

/// The session's end of a [`NoticeSender`].
pub struct SessionNotices {
    pub messages: Receiver<MediaServerMessage>,
    pub close: Arc<Notify>,
    removed: Arc<Mutex<Option<RemoveReason>>>,
}

impl SessionNotices {
    /// Why the engine dropped the session's peer, once it has (WHIP tells a client that
    /// closed its connection from one that was lost).
    pub fn removed_because(&self) -> Option<RemoveReason> {
        *self
            .removed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A new session's notice queue.
pub fn notice_channel(metrics: Arc<Metrics>) -> (NoticeSender, SessionNotices) {
    let (messages, receiver) = channel(NOTICE_QUEUE);
    let close = Arc::new(Notify::new());
    let removed = Arc::new(Mutex::new(None));
    (
        NoticeSender {
            messages,
            close: close.clone(),
            removed: removed.clone(),
            metrics,
        },
        SessionNotices {
            messages: receiver,
            close,
            removed,
        },
    )
}

impl NoticeSender {
    /// Queues a message for the client; if the session is too far behind, closes it.
    pub fn send(&self, message: MediaServerMessage) {
        if let Err(TrySendError::Full(_)) = self.messages.try_send(message) {
            self.metrics.notice_overflows.fetch_add(1, Relaxed);
            self.close();
        }
    }

    /// Tells the session to close its socket (after sending what is queued).
    pub fn close(&self) {
        self.close.notify_one();
    }

    /// Like [`NoticeSender::close`], saying why the peer was dropped.
    fn close_because(&self, reason: RemoveReason) {
        *self
            .removed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason);
        self.close();
    }
}

/// Why a peer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The server holds `MEDIA_MAX_PEERS` peers already.
    #[error("the media server is full")]
    ServerFull,
    /// The live has `MEDIA_MAX_VIEWERS_PER_LIVE` viewers already.
    #[error("this live has reached its viewer limit")]
    LiveFull,
    /// The offer is not usable SDP or str0m refused it; `detail` is for logs only.
    #[error("{}", problem.message())]
    InvalidSdp { problem: SdpProblem, detail: String },
    /// Something on our side failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One media worker as seen from signaling.
pub struct WorkerHandle {
    pub commands: UnboundedSender<Command>,
    /// Where this worker's peers reach it (its ufrags name it too).
    pub candidates: LocalCandidates,
    pub peers: AtomicUsize,
    /// A command could not be delivered: the worker's thread is gone (logged once).
    stopped: AtomicBool,
}

impl WorkerHandle {
    pub fn new(commands: UnboundedSender<Command>, candidates: LocalCandidates) -> Self {
        WorkerHandle {
            commands,
            candidates,
            peers: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }
}

/// The peer's worker thread is gone; the peer was dropped.
#[derive(Debug, thiserror::Error)]
#[error("the media worker stopped")]
pub struct WorkerStopped;

#[derive(Default)]
struct Registry {
    lives: HashMap<LiveId, LiveEntry>,
    peers: HashMap<PeerId, PeerEntry>,
}

#[derive(Default)]
struct LiveEntry {
    publisher: Option<PeerId>,
    publisher_connected: bool,
    /// The connected publisher's video is stalled (viewers were told `publisher_stalled`).
    publisher_stalled: bool,
    /// The publisher's offer sends simulcast layers.
    publisher_simulcast: bool,
    viewers: HashSet<PeerId>,
}

struct PeerEntry {
    live: LiveId,
    role: Role,
    worker: usize,
    notify: NoticeSender,
}

/// Whether an SDP offer sends simulcast (`a=simulcast:send ...`).
fn offer_sends_simulcast(offer_sdp: &str) -> bool {
    offer_sdp
        .lines()
        .any(|line| line.trim_start().starts_with("a=simulcast:send"))
}

/// The wire name of a layer.
fn layer_name(layer: LayerKey) -> String {
    match layer {
        Some(rid) => rid.to_string(),
        None => SINGLE_LAYER.to_owned(),
    }
}

/// A worker's quality report as the viewer's `quality` message.
fn quality_message(report: &QualityReport) -> MediaServerMessage {
    MediaServerMessage::Quality {
        layers: report
            .layers
            .iter()
            .map(|layer| QualityLayer {
                rid: layer_name(layer.key),
                width: layer.dimensions.map(|(w, _)| w),
                height: layer.dimensions.map(|(_, h)| h),
                kbps: layer.bitrate_bps / 1000,
            })
            .collect(),
        current: report.current.map(layer_name),
        target: match report.target {
            VideoTarget::Layer(layer) => Some(layer_name(layer)),
            VideoTarget::Any | VideoTarget::Paused => None,
        },
        choice: match report.choice {
            LayerChoice::Auto => "auto".to_owned(),
            LayerChoice::Fixed(rid) => rid.to_string(),
        },
        estimate_kbps: report.estimate_bps.map(|bps| bps / 1000),
        paused: report.target == VideoTarget::Paused,
        adaptive: report.adaptive,
    }
}

/// Shared state of the running media server.
pub struct Engine {
    pub metrics: Arc<Metrics>,
    pub workers: Vec<WorkerHandle>,
    max_peers: usize,
    max_viewers_per_live: usize,
    viewer_estimation: ViewerEstimation,
    registry: Mutex<Registry>,
    next_peer: AtomicU64,
    next_generation: AtomicU64,
    template: RtcTemplate,
    recorder: Option<crate::recording::Recorder>,
}

impl Engine {
    pub fn new(
        settings: &MediaSettings,
        metrics: Arc<Metrics>,
        workers: Vec<WorkerHandle>,
        recorder: Option<crate::recording::Recorder>,
    ) -> anyhow::Result<Self> {
        let template = RtcTemplate::generate()?;
        Ok(Engine {
            metrics,
            workers,
            max_peers: settings.max_peers,
            max_viewers_per_live: settings.max_viewers_per_live,
            viewer_estimation: settings.viewer_estimation,
            registry: Mutex::new(Registry::default()),
            next_peer: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            template,
            recorder,
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Builds the peer's `Rtc` and accepts its offer. Blocking (about a millisecond of
    /// CPU): call it from `spawn_blocking`, never on a media worker.
    pub fn prepare_peer(
        &self,
        role: Role,
        live: LiveId,
        offer_sdp: &str,
        offered_at: Instant,
    ) -> Result<(NewPeer, SdpAnswer, usize), PrepareError> {
        let estimating;
        {
            let registry = self.registry();
            let live_entry = registry.lives.get(&live);
            estimating = role == Role::Viewer
                && match self.viewer_estimation {
                    ViewerEstimation::Always => true,
                    ViewerEstimation::Never => false,
                    ViewerEstimation::Simulcast => {
                        live_entry.is_some_and(|l| l.publisher.is_some() && l.publisher_simulcast)
                    }
                };
            if registry.peers.len() >= self.max_peers {
                return Err(PrepareError::ServerFull);
            }
            if role == Role::Viewer
                && registry
                    .lives
                    .get(&live)
                    .is_some_and(|l| l.viewers.len() >= self.max_viewers_per_live)
            {
                return Err(PrepareError::LiveFull);
            }
        }
        // Reserve a place on the least-loaded worker now, so a burst of joins spreads.
        let worker = self
            .least_loaded_worker()
            .ok_or_else(|| PrepareError::Internal("no media worker is running".into()))?;
        self.workers[worker].peers.fetch_add(1, Relaxed);
        let candidates = self.workers[worker].candidates;
        let (rtc, answer, local_ufrag) = self
            .template
            .accept_offer(role, candidates, offer_sdp, offered_at, estimating)
            .map_err(|e| {
                self.workers[worker].peers.fetch_sub(1, Relaxed);
                match e {
                    OfferError::InvalidSdp { problem, detail } => {
                        PrepareError::InvalidSdp { problem, detail }
                    }
                    OfferError::Internal(m) => PrepareError::Internal(m),
                }
            })?;
        let id = PeerId(self.next_peer.fetch_add(1, Relaxed));
        let generation = match role {
            Role::Publisher => self.next_generation.fetch_add(1, Relaxed),
            Role::Viewer => 0,
        };
        let new_peer = NewPeer {
            id,
            live,
            role,
            generation,
            rtc,
            local_ufrag,
            offered_at,
            estimating,
            simulcast: role == Role::Publisher && offer_sends_simulcast(offer_sdp),
            relay_addrs: crate::sfu::relay_candidate_addresses(offer_sdp),
            record: false,
        };
        Ok((new_peer, answer, worker))
    }

    /// A stopped worker would look least loaded forever: skip it.
    /// Gives back the worker place of a prepared peer that will not be added.
    pub fn discard_prepared(&self, worker: usize) {
        self.workers[worker].peers.fetch_sub(1, Relaxed);
    }

    /// Whether the live has a publisher now (connected or still connecting).
    pub fn has_publisher(&self, live: LiveId) -> bool {
        self.registry()
            .lives
            .get(&live)
            .is_some_and(|entry| entry.publisher.is_some())
    }

    fn least_loaded_worker(&self) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.commands.is_closed())
            .min_by_key(|(_, w)| w.peers.load(Relaxed))
            .map(|(k, _)| k)
    }

    /// Hands `command` to `worker`; false if its thread is gone.
    fn send_to_worker(&self, worker: usize, command: Command) -> bool {
        let handle = &self.workers[worker];
        if handle.commands.send(command).is_ok() {
            return true;
        }
        if !handle.stopped.swap(true, Relaxed) {
            tracing::error!(
                worker,
                "media worker stopped: its peers are dropped and it gets no new ones"
            );
        }
        false
    }

    /// Registers a prepared peer (whose worker place [`Engine::prepare_peer`] reserved)
    /// and hands it to its worker. A publisher replaces the
    /// live's current publisher, which is told `replaced` and removed.
    pub fn add_peer(
        &self,
        new_peer: NewPeer,
        worker: usize,
        notify: NoticeSender,
    ) -> Result<(), WorkerStopped> {
        let id = new_peer.id;
        let live = new_peer.live;
        let role = new_peer.role;
        let mut registry = self.registry();
        if !registry.lives.contains_key(&live) {
            self.metrics.rooms.fetch_add(1, Relaxed);
        }
        let entry = registry.lives.entry(live).or_default();
        let mut replaced = None;
        match role {
            Role::Publisher => {
                replaced = entry.publisher.replace(id);
                entry.publisher_connected = false;
                entry.publisher_stalled = false;
                entry.publisher_simulcast = new_peer.simulcast;
                self.metrics.publishers.fetch_add(1, Relaxed);
            }
            Role::Viewer => {
                entry.viewers.insert(id);
                if entry.publisher_connected {
                    notify.send(MediaServerMessage::PublisherJoined {
                        live_id: live,
                        simulcast: entry.publisher_simulcast,
                    });
                    if entry.publisher_stalled {
                        notify.send(MediaServerMessage::PublisherStalled { live_id: live });
                    }
                }
                self.metrics.viewers.fetch_add(1, Relaxed);
            }
        }
        self.metrics.peers.fetch_add(1, Relaxed);
        if let Some(old) = replaced
            && let Some(old_entry) = registry.peers.get(&old)
        {
            old_entry
                .notify
                .send(MediaServerMessage::Replaced { live_id: live });
            old_entry.notify.close();
            let old_worker = old_entry.worker;
            let command = Command::RemovePeer {
                peer: old,
                reason: RemoveReason::Replaced,
            };
            if !self.send_to_worker(old_worker, command) {
                self.forget_peer(&mut registry, old, RemoveReason::WorkerStopped);
            }
        }
        registry.peers.insert(
            id,
            PeerEntry {
                live,
                role,
                worker,
                notify,
            },
        );
        // Under the lock: a stopped worker's peer is forgotten before anyone sees it.
        if !self.send_to_worker(worker, Command::AddPeer(Box::new(new_peer))) {
            self.forget_peer(&mut registry, id, RemoveReason::WorkerStopped);
            return Err(WorkerStopped);
        }
        Ok(())
    }

    /// Asks the peer's worker to remove it (the registry is updated when it reports back).
    pub fn remove_peer(&self, peer: PeerId, reason: RemoveReason) {
        self.command_peer(peer, Command::RemovePeer { peer, reason }, reason);
    }

    /// The viewer's quality menu choice.
    pub fn set_layer_choice(&self, peer: PeerId, choice: LayerChoice) {
        let command = Command::SetLayerChoice { peer, choice };
        self.command_peer(peer, command, RemoveReason::WorkerStopped);
    }

    /// A trickled ICE candidate from the client.
    pub fn remote_candidate(&self, peer: PeerId, candidate: Candidate) {
        let command = Command::RemoteCandidate { peer, candidate };
        self.command_peer(peer, command, RemoveReason::WorkerStopped);
    }

    /// Sends `command` to the worker holding `peer`; if that worker is gone, the peer is
    /// forgotten with `if_stopped`. Nothing happens for an unknown peer.
    fn command_peer(&self, peer: PeerId, command: Command, if_stopped: RemoveReason) {
        let mut registry = self.registry();
        let Some(worker) = registry.peers.get(&peer).map(|p| p.worker) else {
            return;
        };
        if !self.send_to_worker(worker, command) {
            self.forget_peer(&mut registry, peer, if_stopped);
        }
    }

    /// Connection state reports from the workers.
    /// The recorder, when recordings are on.
    pub fn recorder(&self) -> Option<&crate::recording::Recorder> {
        self.recorder.as_ref()
    }

    /// The recorder wants a keyframe of `live`'s `layer`: every worker asks the
    /// publisher it holds (one does; throttled like viewers' requests).
    pub fn request_keyframe(&self, live: LiveId, layer: crate::sfu::layers::LayerKey) {
        for worker in &self.workers {
            let _ = worker.commands.send(Command::WantKeyframe { live, layer });
        }
    }

    pub fn on_core_output(&self, output: &CoreOutput) {
        match output {
            CoreOutput::Record(packet) => {
                if let Some(recorder) = &self.recorder {
                    recorder.offer(crate::recording::RecorderInput::Packet(packet.clone()));
                }
            }
            CoreOutput::Connected {
                peer,
                live,
                role,
                setup,
                ..
            } => {
                tracing::debug!(%peer, %live, ?role, setup_ms = setup.as_millis() as u64, "peer connected");
                if *role != Role::Publisher {
                    return;
                }
                let mut registry = self.registry();
                let Registry { lives, peers } = &mut *registry;
                if let Some(entry) = lives.get_mut(live)
                    && entry.publisher == Some(*peer)
                {
                    entry.publisher_connected = true;
                    for viewer in &entry.viewers {
                        if let Some(v) = peers.get(viewer) {
                            v.notify.send(MediaServerMessage::PublisherJoined {
                                live_id: *live,
                                simulcast: entry.publisher_simulcast,
                            });
                        }
                    }
                }
            }
            CoreOutput::PublisherStall {
                peer,
                live,
                stalled,
            } => {
                let mut registry = self.registry();
                let Registry { lives, peers } = &mut *registry;
                let Some(entry) = lives.get_mut(live) else {
                    return;
                };
                if entry.publisher != Some(*peer) || entry.publisher_stalled == *stalled {
                    return;
                }
                entry.publisher_stalled = *stalled;
                if *stalled {
                    self.metrics.publisher_stalls.fetch_add(1, Relaxed);
                }
                let message = if *stalled {
                    MediaServerMessage::PublisherStalled { live_id: *live }
                } else {
                    MediaServerMessage::PublisherResumed { live_id: *live }
                };
                for viewer in &entry.viewers {
                    if let Some(v) = peers.get(viewer) {
                        v.notify.send(message.clone());
                    }
                }
            }
            CoreOutput::ViewerQuality { peer, report } => {
                let registry = self.registry();
                if let Some(entry) = registry.peers.get(peer) {
                    entry.notify.send(quality_message(report));
                }
            }
            CoreOutput::Removed {
                peer,
                reason,
                role,
                live,
            } => {
                if *role == Role::Publisher
                    && let Some(recorder) = &self.recorder
                {
                    recorder.offer(crate::recording::RecorderInput::PublisherLeft(*live));
                }
                self.forget_peer(&mut self.registry(), *peer, *reason);
            }
            _ => {}
        }
    }

    /// Drops a removed peer from the registry: counts, its live, viewers told when their
    /// publisher left, its session closed unless it left by itself. A no-op if unknown.
    fn forget_peer(&self, registry: &mut Registry, peer: PeerId, reason: RemoveReason) {
        let Some(entry) = registry.peers.remove(&peer) else {
            return;
        };
        self.workers[entry.worker].peers.fetch_sub(1, Relaxed);
        self.metrics.peers.fetch_sub(1, Relaxed);
        if reason != RemoveReason::Left {
            entry.notify.close_because(reason);
        }
        let live = entry.live;
        let Registry { lives, peers } = registry;
        let Some(live_entry) = lives.get_mut(&live) else {
            return;
        };
        match entry.role {
            Role::Publisher => {
                self.metrics.publishers.fetch_sub(1, Relaxed);
                if live_entry.publisher == Some(peer) {
                    live_entry.publisher = None;
                    live_entry.publisher_connected = false;
                    live_entry.publisher_stalled = false;
                    for viewer in &live_entry.viewers {
                        if let Some(v) = peers.get(viewer) {
                            v.notify
                                .send(MediaServerMessage::PublisherLeft { live_id: live });
                        }
                    }
                }
            }
            Role::Viewer => {
                self.metrics.viewers.fetch_sub(1, Relaxed);
                live_entry.viewers.remove(&peer);
            }
        }
        if live_entry.publisher.is_none() && live_entry.viewers.is_empty() {
            lives.remove(&live);
            self.metrics.rooms.fetch_sub(1, Relaxed);
        }
    }

    /// Rooms and peers currently registered (for tests and `/healthz`).
    pub fn counts(&self) -> (usize, usize) {
        let registry = self.registry();
        (registry.lives.len(), registry.peers.len())
    }

    /// Tells every publishing and watching session that the server is stopping (it
    /// sends `server_restarting`, then closes). Sessions without a peer yet just close
    /// with the process.
    pub fn announce_restart(&self, retry_after_ms: u64) {
        let registry = self.registry();
        for peer in registry.peers.values() {
            peer.notify
                .send(MediaServerMessage::ServerRestarting { retry_after_ms });
            peer.notify.close();
        }
    }

    /// Tells every worker to close its peers and stop.
    pub fn shutdown(&self) {
        for worker in &self.workers {
            // A worker that is already gone has nothing left to stop.
            let _ = worker.commands.send(Command::Shutdown);
        }
    }
}

/// The workers' core tunables from the settings.
pub fn core_config(settings: &MediaSettings) -> CoreConfig {
    CoreConfig {
        connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
        keyframe_interval: Duration::from_millis(settings.keyframe_interval_ms),
        stall_after: crate::sfu::STALL_AFTER,
        shed_after: Duration::from_millis(settings.shed_after_ms),
        worker_index: 0,
        shared_udp_port: settings.rtc_udp.is_shared(),
        tcp_addr: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::Rtc;
    use str0m::media::{Direction, MediaKind};
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    const LIVE: LiveId = LiveId(3);

    /// An engine whose workers are plain channels the test holds (or drops, to play a
    /// worker thread that died).
    fn engine(workers: usize) -> (Engine, Vec<Option<UnboundedReceiver<Command>>>) {
        let settings = MediaSettings::for_tests("engine-test-secret-0123456789abcdef", 40000, 2);
        let mut handles = Vec::new();
        let mut receivers = Vec::new();
        for k in 0..workers {
            let (tx, rx) = unbounded_channel();
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 40000 + k as u16));
            handles.push(WorkerHandle::new(
                tx,
                LocalCandidates {
                    worker: k,
                    udp: addr,
                    tcp: None,
                },
            ));
            receivers.push(Some(rx));
        }
        let metrics = Arc::new(Metrics::default());
        (
            Engine::new(&settings, metrics, handles, None).unwrap(),
            receivers,
        )
    }

    #[test]
    fn simulcast_offers_are_recognised() {
        let mut rtc = Rtc::builder().build(Instant::now());
        let mut api = rtc.sdp_api();
        let mut layers = str0m::media::Simulcast::new();
        for rid in ["q", "h", "f"] {
            layers.add_send_layer(str0m::media::SimulcastLayer::new(rid));
        }
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            None,
            None,
            Some(layers),
        );
        let sdp = api.apply().unwrap().0.to_sdp_string();
        assert!(offer_sends_simulcast(&sdp), "{sdp}");
        assert!(!offer_sends_simulcast(&offer(Role::Publisher)));
    }

    fn offer(role: Role) -> String {
        let mut rtc = Rtc::builder().build(Instant::now());
        let dir = match role {
            Role::Publisher => Direction::SendOnly,
            Role::Viewer => Direction::RecvOnly,
        };
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, dir, None, None, None);
        api.add_media(MediaKind::Video, dir, None, None, None);
        api.apply().unwrap().0.to_sdp_string()
    }

    /// Prepares and adds a peer; returns it, its worker, the add result and its notices.
    fn join(
        engine: &Engine,
        role: Role,
        before_add: impl FnOnce(usize),
    ) -> (PeerId, usize, Result<(), WorkerStopped>, SessionNotices) {
        let (peer, _, worker) = engine
            .prepare_peer(role, LIVE, &offer(role), Instant::now())
            .unwrap();
        before_add(worker);
        let id = peer.id;
        let (notify, notices) = notice_channel(engine.metrics.clone());
        let added = engine.add_peer(peer, worker, notify);
        (id, worker, added, notices)
    }

    /// Every count the registry keeps is back to zero.
    fn assert_empty(engine: &Engine) {
        assert_eq!(engine.counts(), (0, 0));
        let m = &engine.metrics;
        let gauges = [&m.rooms, &m.peers, &m.publishers, &m.viewers];
        assert!(gauges.iter().all(|g| g.load(Relaxed) == 0), "{m:?}");
        assert!(engine.workers.iter().all(|w| w.peers.load(Relaxed) == 0));
    }

    /// Whether the session was told to close (the engine does it synchronously).
    fn closed(notices: &SessionNotices) -> bool {
        use futures_util::FutureExt as _;
        notices.close.notified().now_or_never().is_some()
    }

    #[test]
    fn a_peer_handed_to_a_stopped_worker_is_forgotten() {
        let (engine, mut receivers) = engine(2);
        let (_, worker, added, notices) = join(&engine, Role::Viewer, |worker| {
            receivers[worker] = None;
        });
        assert!(added.is_err());
        assert_empty(&engine);
        assert!(closed(&notices), "the session is told to close");
        assert!(engine.workers[worker].stopped.load(Relaxed));
        // New peers go to the worker that still runs.
        let (_, other, added, _) = join(&engine, Role::Viewer, |_| {});
        assert!(added.is_ok());
        assert_ne!(other, worker);
        assert_eq!(engine.counts(), (1, 1));
        // With no worker left, peers are refused up front.
        receivers[other] = None;
        let refused = engine.prepare_peer(Role::Viewer, LIVE, &offer(Role::Viewer), Instant::now());
        assert!(matches!(refused, Err(PrepareError::Internal(_))));
    }

    #[test]
    fn candidates_and_removals_for_a_stopped_worker_clean_up() {
        let (engine, mut receivers) = engine(1);
        let (publisher, worker, added, publisher_notices) = join(&engine, Role::Publisher, |_| {});
        added.unwrap();
        let (viewer, _, added, viewer_notices) = join(&engine, Role::Viewer, |_| {});
        added.unwrap();
        assert_eq!(engine.counts(), (1, 2));
        // The worker dies with both peers on it.
        receivers[worker] = None;
        let candidate = str0m::Candidate::host(([127, 0, 0, 1], 5000).into(), "udp").unwrap();
        engine.remote_candidate(viewer, candidate);
        assert_eq!(engine.counts(), (1, 1), "the viewer is forgotten");
        assert!(closed(&viewer_notices));
        engine.remove_peer(publisher, RemoveReason::Left);
        assert_empty(&engine);
        // Left by itself: its session is already closing, no close signal needed.
        assert!(!closed(&publisher_notices));
    }

    #[test]
    fn a_replaced_publisher_on_a_stopped_worker_is_forgotten() {
        let (engine, mut receivers) = engine(2);
        let (old, old_worker, added, old_notices) = join(&engine, Role::Publisher, |_| {});
        added.unwrap();
        receivers[old_worker] = None;
        let (new, _, added, _) = join(&engine, Role::Publisher, |_| {});
        added.unwrap();
        assert!(closed(&old_notices));
        assert_eq!(engine.counts(), (1, 1));
        assert_eq!(engine.metrics.publishers.load(Relaxed), 1);
        assert_eq!(engine.workers[old_worker].peers.load(Relaxed), 0);
        let registry = engine.registry();
        assert!(!registry.peers.contains_key(&old));
        assert_eq!(registry.lives[&LIVE].publisher, Some(new));
    }

    #[tokio::test]
    async fn a_session_that_does_not_read_is_closed_not_queued_without_bound() {
        let metrics = Arc::new(Metrics::default());
        let (sender, mut session) = notice_channel(metrics.clone());
        let message = MediaServerMessage::PublisherLeft { live_id: LiveId(1) };
        for _ in 0..NOTICE_QUEUE {
            sender.send(message.clone());
        }
        assert_eq!(metrics.notice_overflows.load(Relaxed), 0);
        // Not closed yet.
        let closed = tokio::time::timeout(Duration::from_millis(10), session.close.notified());
        assert!(closed.await.is_err());
        // One more than the queue holds: dropped, counted, and the session told to close.
        for _ in 0..100 {
            sender.send(message.clone());
        }
        assert_eq!(metrics.notice_overflows.load(Relaxed), 100);
        let closed = tokio::time::timeout(Duration::from_millis(100), session.close.notified());
        assert!(closed.await.is_ok());
        // What was queued is still delivered in order, and nothing more.
        let mut queued = 0;
        while session.messages.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, NOTICE_QUEUE);
    }
}
