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

/// How long a DELETE waits for the DTLS close its client sent just before it (UDP and
/// TCP race; OBS's "Stop Streaming" closes, then deletes).
const DTLS_CLOSE_RACE: std::time::Duration = std::time::Duration::from_millis(500);

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

    /// Stops every session matching `filter`; returns how many.
    pub fn stop_where(&self, reason: StopReason, filter: impl Fn(&SessionEntry) -> bool) -> usize {
        let sessions = self.lock();
        let mut stopped = 0;
        for entry in sessions.values().filter(|entry| filter(entry)) {
            signal_stop(entry, reason);
            stopped += 1;
        }
        stopped
    }

    /// Stops every WHIP session matching `filter`; returns how many.
    pub fn stop_whip_where(
        &self,
        reason: StopReason,
        filter: impl Fn(&WhipPublisher, LiveId) -> bool,
    ) -> usize {
        self.stop_where(reason, |entry| match &entry.kind {
            SessionKind::Whip(publisher) => filter(publisher, entry.live),
            SessionKind::Whep => false,
        })
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
    /// The engine dropped the peer (`None`: no reason was given).
    Lost(Option<RemoveReason>),
    /// WHEP: the live's publisher left and none came back within the grace period.
    LiveGone,
}

fn stop_reason_of(stop_reason: &Mutex<Option<StopReason>>) -> StopReason {
    stop_reason
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .unwrap_or(StopReason::Deleted)
}

/// Follows the peer's notices until its end, then decides what that end means.
async fn follow_session(
    state: Arc<AppState>,
    id: SessionId,
    kind: SessionKind,
    live: LiveId,
    mut notices: SessionNotices,
    (stop, stop_reason): (Arc<Notify>, Arc<Mutex<Option<StopReason>>>),
    slot: SocketSlot,
) {
    let grace = state.settings.whip_grace;
    let mut outcome = watch_peer(&mut notices, &stop, &stop_reason, grace).await;
    if outcome == Outcome::Stopped(StopReason::Deleted)
        && closed_within(&mut notices, DTLS_CLOSE_RACE).await
    {
        // "Stop Streaming": the client's DTLS close was still on its way when its DELETE
        // arrived. Read as closed first, so the live ends at once.
        outcome = Outcome::Lost(notices.removed_because());
        if outcome == Outcome::Lost(Some(RemoveReason::DtlsClosed)) {
            signal_stop_again(&stop, &stop_reason);
        }
    }
    let peer = state.http_sessions.lock().get(&id).map(|entry| entry.peer);
    if let Some(peer) = peer {
        match outcome {
            Outcome::Stopped(StopReason::Revoked) | Outcome::LiveGone => {
                state.engine.remove_peer(peer, RemoveReason::Revoked);
            }
            Outcome::Stopped(StopReason::Deleted) => {
                state.engine.remove_peer(peer, RemoveReason::Left);
            }
            _ => {}
        }
    }
    let SessionKind::Whip(publisher) = kind else {
        state.http_sessions.lock().remove(&id);
        drop(slot);
        return;
    };
    let reason = match outcome {
        Outcome::Stopped(StopReason::Revoked) => Some(WhipEndReason::Revoked),
        Outcome::Replaced | Outcome::Restarting | Outcome::LiveGone => None,
        // A DELETE while connected: OBS sends one before it reconnects (and its "Stop
        // Streaming" closes the connection first), so it gets the grace period too.
        Outcome::Stopped(StopReason::Deleted) => {
            wait_out_grace(&state, live, &publisher, grace, &stop, &stop_reason, false).await
        }
        // The client closed its connection: a DELETE now means the end.
        Outcome::Lost(Some(RemoveReason::DtlsClosed)) => {
            wait_out_grace(&state, live, &publisher, grace, &stop, &stop_reason, true).await
        }
        Outcome::Lost(_) => {
            wait_out_grace(&state, live, &publisher, grace, &stop, &stop_reason, false).await
        }
    };
    state.http_sessions.lock().remove(&id);
    drop(slot);
    let Some(reason) = reason else {
        tracing::debug!(live = %live, ?outcome, "WHIP session over; the live goes on");
        return;
    };
    // A publisher that took over meanwhile (any way in) keeps the live.
    if reason != WhipEndReason::Revoked && live_is_published(&state, live, &id) {
        tracing::debug!(live = %live, "WHIP session over; another publisher holds the live");
        return;
    }
    tracing::info!(live = %live, username = %publisher.username, ?reason, "WHIP publish ended; ending the live");
    // Its WHEP players go too (browser viewers are told by the app).
    state
        .http_sessions
        .stop_where(StopReason::Revoked, |entry| {
            matches!(entry.kind, SessionKind::Whep) && entry.live == live
        });
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

/// Whether the engine drops the session's peer within `limit` (notices drained meanwhile).
async fn closed_within(notices: &mut SessionNotices, limit: std::time::Duration) -> bool {
    let closed = async {
        loop {
            tokio::select! {
                message = notices.messages.recv() => if message.is_none() { return },
                () = notices.close.notified() => return,
            }
        }
    };
    tokio::time::timeout(limit, closed).await.is_ok()
}

/// Re-arms the stop signal (the DELETE that was consumed) for the grace wait to see.
fn signal_stop_again(stop: &Notify, stop_reason: &Mutex<Option<StopReason>>) {
    stop_reason
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert(StopReason::Deleted);
    stop.notify_one();
}

/// Whether the live has a publisher other than session `except`: in the engine, or a
/// WHIP session of it still within its own grace period.
fn live_is_published(state: &AppState, live: LiveId, except: &SessionId) -> bool {
    state.engine.has_publisher(live)
        || state.http_sessions.lock().iter().any(|(id, entry)| {
            id != except && entry.live == live && matches!(entry.kind, SessionKind::Whip(_))
        })
}

/// The notices of the session's peer until it ends one way or another.
async fn watch_peer(
    notices: &mut SessionNotices,
    stop: &Notify,
    stop_reason: &Mutex<Option<StopReason>>,
    grace: std::time::Duration,
) -> Outcome {
    let mut restarting = false;
    // WHEP: the engine keeps viewers of a live whose publisher left; a player must not
    // hold its peer on a live that ended, so it goes once no publisher came back.
    let mut publisher_gone_at: Option<tokio::time::Instant> = None;
    loop {
        let gone = publisher_gone_at;
        tokio::select! {
            biased;
            () = stop.notified() => return Outcome::Stopped(stop_reason_of(stop_reason)),
            () = async {
                match gone {
                    Some(at) => tokio::time::sleep_until(at + grace).await,
                    None => std::future::pending().await,
                }
            } => return Outcome::LiveGone,
            message = notices.messages.recv() => match message {
                Some(MediaServerMessage::Replaced { .. }) => return Outcome::Replaced,
                Some(MediaServerMessage::ServerRestarting { .. }) => restarting = true,
                Some(MediaServerMessage::PublisherLeft { .. }) => {
                    publisher_gone_at.get_or_insert_with(tokio::time::Instant::now);
                }
                Some(MediaServerMessage::PublisherJoined { .. }) => publisher_gone_at = None,
                Some(_) => {}
                None => break,
            },
            () = notices.close.notified() => break,
        }
    }
    if restarting {
        Outcome::Restarting
    } else {
        Outcome::Lost(notices.removed_because())
    }
}

/// Waits up to the grace period for the live to be published again. `None`: it was
/// (or the session was replaced meanwhile); else why the live should end. A `DELETE`
/// meanwhile ends it at once only when `delete_ends` (the client had closed its
/// connection); a revocation always does.
async fn wait_out_grace(
    state: &AppState,
    live: LiveId,
    publisher: &WhipPublisher,
    grace: std::time::Duration,
    stop: &Notify,
    stop_reason: &Mutex<Option<StopReason>>,
    delete_ends: bool,
) -> Option<WhipEndReason> {
    // Still reported to the app meanwhile, so its sweep leaves the live alone.
    tracing::info!(live = %live, username = %publisher.username, ?grace, "WHIP publisher gone; waiting for it to come back");
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            () = stop.notified() => match stop_reason_of(stop_reason) {
                StopReason::Revoked => return Some(WhipEndReason::Revoked),
                StopReason::Deleted if delete_ends => return Some(WhipEndReason::Deleted),
                // OBS's DELETE before its reconnect: keep waiting for the reconnect.
                StopReason::Deleted => {}
            },
        }
    }
    if state.engine.has_publisher(live) {
        None
    } else {
        Some(WhipEndReason::ConnectionLost)
    }
}
