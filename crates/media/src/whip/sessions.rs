//! WHIP and WHEP sessions: the HTTP resources (`/whip/session/{id}`,
//! `/whep/session/{id}`) behind a `Location`, each owning one peer, and the task that
//! follows the peer's notices to decide what its end means.
//!
//! A WHIP session ends in one of four ways: `DELETE` (the live ends now), revoked by the
//! app (stream key rotated, live ended there: the live ends now), replaced by a newer
//! publisher of the same live (the live goes on), or its connection lost: then it waits
//! `MEDIA_WHIP_GRACE_SECONDS` for any publisher of the live to come back (OBS posts
//! again) before the live ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use privatehub_protocol::LiveId;
use privatehub_protocol::MediaServerMessage;
use privatehub_protocol::internal_api::{WhipEndReason, WhipSessionReport};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;

use crate::AppState;
use crate::engine::SessionNotices;
use crate::limits::SocketSlot;
use crate::sfu::{PeerId, RemoveReason};

/// Attempts at telling the app a WHIP live ended (its report loop is the backstop).
const ENDED_ATTEMPTS: u32 = 3;

/// The unguessable id in a session URL: 128 random bits, hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        SessionId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A path segment, if it has the shape of an id.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| SessionId(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who a WHIP session publishes for, as the app authorized it.
#[derive(Clone)]
pub struct WhipPublisher {
    pub user_id: i64,
    pub username: String,
    pub key_generation: i64,
    /// The stream key, to check `PATCH`/`DELETE` come from the same client.
    pub key: SecretString,
}

#[derive(Clone)]
pub enum SessionKind {
    Whip(WhipPublisher),
    Whep,
}

/// Why a session was stopped from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Deleted,
    Revoked,
}

pub struct SessionEntry {
    pub kind: SessionKind,
    pub live: LiveId,
    pub peer: PeerId,
    pub etag: String,
    /// Trickled candidates taken so far (`PATCH`).
    pub candidates: usize,
    stop: Arc<Notify>,
    stop_reason: Arc<Mutex<Option<StopReason>>>,
}

/// Every WHIP and WHEP session of this media server.
#[derive(Default)]
pub struct HttpSessions {
    sessions: Mutex<HashMap<SessionId, SessionEntry>>,
}

/// A new session's parts, handed to [`HttpSessions::insert`].
pub struct NewSession {
    pub id: SessionId,
    pub kind: SessionKind,
    pub live: LiveId,
    pub peer: PeerId,
    pub etag: String,
}

impl HttpSessions {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, SessionEntry>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers the session and starts the task that follows its peer.
    pub fn insert(
        state: Arc<AppState>,
        session: NewSession,
        notices: SessionNotices,
        slot: SocketSlot,
    ) {
        let stop = Arc::new(Notify::new());
        let stop_reason = Arc::new(Mutex::new(None));
        state.http_sessions.lock().insert(
            session.id.clone(),
            SessionEntry {
                kind: session.kind.clone(),
                live: session.live,
                peer: session.peer,
                etag: session.etag,
                candidates: 0,
                stop: stop.clone(),
                stop_reason: stop_reason.clone(),
            },
        );
        tokio::spawn(follow_session(
            state,
            session.id,
            session.kind,
            session.live,
            notices,
            (stop, stop_reason),
            slot,
        ));
    }

    /// Stops a session from our side; false if there is no such session.
    pub fn stop(&self, id: &SessionId, reason: StopReason) -> bool {
        let sessions = self.lock();
        let Some(entry) = sessions.get(id) else {
            return false;
        };
        signal_stop(entry, reason);
        true
    }

    /// Stops every WHIP session matching `filter`; returns how many.
    pub fn stop_whip_where(
        &self,
        reason: StopReason,
        filter: impl Fn(&WhipPublisher, LiveId) -> bool,
    ) -> usize {
        let sessions = self.lock();
        let mut stopped = 0;
        for entry in sessions.values() {
            if let SessionKind::Whip(publisher) = &entry.kind
                && filter(publisher, entry.live)
            {
                signal_stop(entry, reason);
                stopped += 1;
            }
        }
        stopped
    }

    /// Every WHIP publish held now (publishing, or within its grace period).
    pub fn whip_reports(&self) -> Vec<WhipSessionReport> {
        self.lock()
            .values()
            .filter_map(|entry| match &entry.kind {
                SessionKind::Whip(publisher) => Some(WhipSessionReport {
                    user_id: publisher.user_id,
                    live_id: entry.live,
                    key_generation: publisher.key_generation,
                }),
                SessionKind::Whep => None,
            })
            .collect()
    }
}

fn signal_stop(entry: &SessionEntry, reason: StopReason) {
    let mut slot = entry
        .stop_reason
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    slot.get_or_insert(reason);
    entry.stop.notify_one();
}

/// Whether `presented` is the publisher's key (constant time).
pub fn same_key(publisher: &WhipPublisher, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    publisher
        .key
        .expose_secret()
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}

/// How a session's peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stopped(StopReason),
    Replaced,
    Restarting,
    Lost,
}

async fn follow_session(
    state: Arc<AppState>,
    id: SessionId,
    kind: SessionKind,
    live: LiveId,
    notices: SessionNotices,
    (stop, stop_reason): (Arc<Notify>, Arc<Mutex<Option<StopReason>>>),
    slot: SocketSlot,
) {
    let SessionNotices {
        messages: mut notices,
        close,
    } = notices;
    let mut restarting = false;
    let outcome = loop {
        tokio::select! {
            biased;
            () = stop.notified() => {
                let reason = stop_reason
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .unwrap_or(StopReason::Deleted);
                break Outcome::Stopped(reason);
            }
            message = notices.recv() => match message {
                Some(MediaServerMessage::Replaced { .. }) => break Outcome::Replaced,
                Some(MediaServerMessage::ServerRestarting { .. }) => restarting = true,
                Some(_) => {}
                None => break if restarting { Outcome::Restarting } else { Outcome::Lost },
            },
            () = close.notified() => break if restarting { Outcome::Restarting } else { Outcome::Lost },
        }
    };
    let peer = state.http_sessions.lock().get(&id).map(|entry| entry.peer);
    if let (Outcome::Stopped(reason), Some(peer)) = (outcome, peer) {
        let remove = match reason {
            StopReason::Deleted => RemoveReason::Left,
            StopReason::Revoked => RemoveReason::Revoked,
        };
        state.engine.remove_peer(peer, remove);
    }
    let SessionKind::Whip(publisher) = kind else {
        state.http_sessions.lock().remove(&id);
        drop(slot);
        return;
    };
    let reason = match outcome {
        Outcome::Stopped(StopReason::Deleted) => Some(WhipEndReason::Deleted),
        Outcome::Stopped(StopReason::Revoked) => Some(WhipEndReason::Revoked),
        Outcome::Replaced | Outcome::Restarting => None,
        Outcome::Lost => {
            // Still reported to the app meanwhile, so its sweep leaves the live alone.
            tracing::info!(live = %live, username = %publisher.username, grace = ?state.settings.whip_grace, "WHIP publisher lost; waiting for it to come back");
            let stopped = tokio::select! {
                () = tokio::time::sleep(state.settings.whip_grace) => false,
                () = stop.notified() => true,
            };
            if !stopped && state.engine.has_publisher(live) {
                None
            } else if stopped {
                Some(WhipEndReason::Deleted)
            } else {
                Some(WhipEndReason::ConnectionLost)
            }
        }
    };
    state.http_sessions.lock().remove(&id);
    drop(slot);
    let Some(reason) = reason else {
        tracing::debug!(live = %live, ?outcome, "WHIP session over; the live goes on");
        return;
    };
    // A publisher that took over meanwhile keeps the live.
    if reason == WhipEndReason::ConnectionLost && state.engine.has_publisher(live) {
        return;
    }
    tracing::info!(live = %live, username = %publisher.username, ?reason, "WHIP publish ended; ending the live");
    for attempt in 1..=ENDED_ATTEMPTS {
        match state.app_api.ended(publisher.user_id, live, reason).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, attempt, live = %live, "cannot tell the app a WHIP live ended");
                tokio::time::sleep(std::time::Duration::from_secs(2 * u64::from(attempt))).await;
            }
        }
    }
}
