//! The media engine: the handle the signaling sessions use to create and remove peers,
//! and the registry of lives (who publishes, who watches, on which worker).
//!
//! The registry is behind one mutex that is only taken on joins, leaves and connection
//! state changes, never on the packet path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use privatehub_protocol::{LiveId, MediaServerMessage};
use str0m::Candidate;
use str0m::change::SdpAnswer;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender, UnboundedSender, channel};

use crate::config::MediaSettings;
use crate::metrics::Metrics;
use crate::sfu::{
    Command, CoreConfig, CoreOutput, NewPeer, OfferError, PeerId, RemoveReason, Role, RtcTemplate,
    SdpProblem,
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
    metrics: Arc<Metrics>,
}

/// The session's end of a [`NoticeSender`].
pub struct SessionNotices {
    pub messages: Receiver<MediaServerMessage>,
    pub close: Arc<Notify>,
}

/// A new session's notice queue.
pub fn notice_channel(metrics: Arc<Metrics>) -> (NoticeSender, SessionNotices) {
    let (messages, receiver) = channel(NOTICE_QUEUE);
    let close = Arc::new(Notify::new());
    (
        NoticeSender {
            messages,
            close: close.clone(),
            metrics,
        },
        SessionNotices {
            messages: receiver,
            close,
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
    pub rtc_addr: SocketAddr,
    pub peers: AtomicUsize,
}

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
    viewers: HashSet<PeerId>,
}

struct PeerEntry {
    live: LiveId,
    role: Role,
    worker: usize,
    notify: NoticeSender,
}

/// Shared state of the running media server.
pub struct Engine {
    pub metrics: Arc<Metrics>,
    pub workers: Vec<WorkerHandle>,
    max_peers: usize,
    max_viewers_per_live: usize,
    registry: Mutex<Registry>,
    next_peer: AtomicU64,
    next_generation: AtomicU64,
    template: RtcTemplate,
}

impl Engine {
    pub fn new(
        settings: &MediaSettings,
        metrics: Arc<Metrics>,
        workers: Vec<WorkerHandle>,
    ) -> anyhow::Result<Self> {
        let template = RtcTemplate::generate()?;
        Ok(Engine {
            metrics,
            workers,
            max_peers: settings.max_peers,
            max_viewers_per_live: settings.max_viewers_per_live,
            registry: Mutex::new(Registry::default()),
            next_peer: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            template,
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
        {
            let registry = self.registry();
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
        let worker = self.least_loaded_worker();
        self.workers[worker].peers.fetch_add(1, Relaxed);
        let rtc_addr = self.workers[worker].rtc_addr;
        let (rtc, answer, local_ufrag) = self
            .template
            .accept_offer(rtc_addr, offer_sdp, offered_at)
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
        };
        Ok((new_peer, answer, worker))
    }

    fn least_loaded_worker(&self) -> usize {
        self.workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.peers.load(Relaxed))
            .map_or(0, |(k, _)| k)
    }

    /// Registers a prepared peer (whose worker place [`Engine::prepare_peer`] reserved)
    /// and hands it to its worker. A publisher replaces the
    /// live's current publisher, which is told `replaced` and removed.
    pub fn add_peer(&self, new_peer: NewPeer, worker: usize, notify: NoticeSender) {
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
                self.metrics.publishers.fetch_add(1, Relaxed);
            }
            Role::Viewer => {
                entry.viewers.insert(id);
                if entry.publisher_connected {
                    notify.send(MediaServerMessage::PublisherJoined { live_id: live });
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
            let _ = self.workers[old_entry.worker]
                .commands
                .send(Command::RemovePeer {
                    peer: old,
                    reason: RemoveReason::Replaced,
                });
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
        drop(registry);
        let _ = self.workers[worker]
            .commands
            .send(Command::AddPeer(Box::new(new_peer)));
    }

    /// Asks the peer's worker to remove it (the registry is updated when it reports back).
    pub fn remove_peer(&self, peer: PeerId, reason: RemoveReason) {
        let worker = self.registry().peers.get(&peer).map(|p| p.worker);
        if let Some(worker) = worker {
            let _ = self.workers[worker]
                .commands
                .send(Command::RemovePeer { peer, reason });
        }
    }

    /// A trickled ICE candidate from the client.
    pub fn remote_candidate(&self, peer: PeerId, candidate: Candidate) {
        let worker = self.registry().peers.get(&peer).map(|p| p.worker);
        if let Some(worker) = worker {
            let _ = self.workers[worker]
                .commands
                .send(Command::RemoteCandidate { peer, candidate });
        }
    }

    /// Connection state reports from the workers.
    pub fn on_core_output(&self, output: &CoreOutput) {
        match output {
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
                            v.notify
                                .send(MediaServerMessage::PublisherJoined { live_id: *live });
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
            CoreOutput::Removed {
                peer, live, reason, ..
            } => {
                let mut registry = self.registry();
                let Some(entry) = registry.peers.remove(peer) else {
                    return;
                };
                self.workers[entry.worker].peers.fetch_sub(1, Relaxed);
                self.metrics.peers.fetch_sub(1, Relaxed);
                if *reason != RemoveReason::Left {
                    entry.notify.close();
                }
                let Registry { lives, peers } = &mut *registry;
                let Some(live_entry) = lives.get_mut(live) else {
                    return;
                };
                match entry.role {
                    Role::Publisher => {
                        self.metrics.publishers.fetch_sub(1, Relaxed);
                        if live_entry.publisher == Some(*peer) {
                            live_entry.publisher = None;
                            live_entry.publisher_connected = false;
                            live_entry.publisher_stalled = false;
                            for viewer in &live_entry.viewers {
                                if let Some(v) = peers.get(viewer) {
                                    v.notify
                                        .send(MediaServerMessage::PublisherLeft { live_id: *live });
                                }
                            }
                        }
                    }
                    Role::Viewer => {
                        self.metrics.viewers.fetch_sub(1, Relaxed);
                        live_entry.viewers.remove(peer);
                    }
                }
                if live_entry.publisher.is_none() && live_entry.viewers.is_empty() {
                    lives.remove(live);
                    self.metrics.rooms.fetch_sub(1, Relaxed);
                }
                let _ = entry.live;
            }
            _ => {}
        }
    }

    /// Rooms and peers currently registered (for tests and `/healthz`).
    pub fn counts(&self) -> (usize, usize) {
        let registry = self.registry();
        (registry.lives.len(), registry.peers.len())
    }

    /// Tells every worker to close its peers and stop.
    pub fn shutdown(&self) {
        for worker in &self.workers {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
