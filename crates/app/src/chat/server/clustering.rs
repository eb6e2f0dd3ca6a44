//! This instance's rooms when several instances share them (`crate::cluster`): what
//! happens here is published, what happens on another instance is applied here as if
//! it had (but not published again). Alone (no `REDIS_URL`) every call is a no-op.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use privatehub_protocol::app_socket::{AppServerMessage, ChatMessageId};

use super::counting::ViewerKey;
use super::joining::Loaded;
use super::loading::load_room;
use super::{ChatServer, Room};
use crate::auth::session::SessionKey;
use crate::cluster::{ClusterCommand, ClusterReport, RoomEvent};
use crate::db::users::UserId;
use crate::error::InternalError;

impl ChatServer {
    fn cluster_send(&self, command: ClusterCommand) {
        if let Some(cluster) = &self.cluster {
            let _ = cluster.send(command);
        }
    }

    pub(super) fn publish(&self, key: &str, event: RoomEvent) {
        self.cluster_send(ClusterCommand::Publish {
            key: key.to_owned(),
            event,
        });
    }

    /// Events of room `key` start arriving (before it loads, so none is missed).
    pub(super) fn cluster_subscribe(&self, key: &str) {
        self.cluster_send(ClusterCommand::Subscribe {
            key: key.to_owned(),
        });
    }

    /// The room is gone here: no more events, and its viewers here are none.
    pub(super) fn cluster_forget_room(&self, key: &str, live: Option<LiveId>) {
        self.cluster_send(ClusterCommand::Unsubscribe {
            key: key.to_owned(),
        });
        if let Some(live) = live {
            self.cluster_send(ClusterCommand::Forget { live });
        }
    }

    /// The live ended: this instance's viewers of it are none.
    pub(super) fn cluster_forget_live(&self, live: LiveId) {
        self.cluster_send(ClusterCommand::Forget { live });
    }

    /// A log-out here: the other instances close the session's sockets too.
    pub(super) fn cluster_session_ended(&self, session: &SessionKey) {
        self.cluster_send(ClusterCommand::SessionEnded {
            session: session.as_str().to_owned(),
        });
    }

    pub(super) fn cluster_chat_sent(&self, user: UserId) {
        self.cluster_send(ClusterCommand::ChatSent { user });
    }

    /// When another instance counted the user past the shared chat limit, how long
    /// they must wait.
    pub(super) fn shared_chat_wait(&mut self, user: UserId, now: Instant) -> Option<Duration> {
        let until = *self.shared_chat_limits.get(&user)?;
        if until <= now {
            self.shared_chat_limits.remove(&user);
            return None;
        }
        Some(until - now)
    }

    /// Sends the viewer sets of rooms whose viewers changed (once per count tick).
    pub(super) fn sync_viewer_sets(&mut self) {
        if self.cluster.is_none() {
            return;
        }
        let mut changed = Vec::new();
        for room in self.rooms.values_mut() {
            if !room.viewers_dirty {
                continue;
            }
            room.viewers_dirty = false;
            if let Some(live) = &room.live {
                let viewers = room
                    .viewers
                    .keys()
                    .map(|viewer| shared_viewer_key(viewer, &self.instance))
                    .collect();
                changed.push((live.live_id, viewers));
            }
        }
        for (live, viewers) in changed {
            self.cluster_send(ClusterCommand::Viewers { live, viewers });
        }
    }

    pub(super) fn cluster_report(&mut self, report: ClusterReport) {
        match report {
            ClusterReport::Room { key, event } => {
                self.metrics
                    .cluster_room_events
                    .fetch_add(1, Ordering::Relaxed);
                self.remote_event(&key, event);
            }
            ClusterReport::Viewers { live, count } => {
                let key = self
                    .rooms
                    .iter_mut()
                    .find(|(_, room)| room.live_id() == Some(live))
                    .map(|(key, room)| {
                        room.cluster_count = Some(count);
                        key.clone()
                    });
                if let Some(key) = key {
                    self.record_count(&key);
                }
            }
            ClusterReport::ChatLimited { user, retry_after } => {
                self.metrics
                    .cluster_chat_limits
                    .fetch_add(1, Ordering::Relaxed);
                self.shared_chat_limits
                    .insert(user, Instant::now() + retry_after);
            }
            ClusterReport::SessionEnded { session } => {
                self.end_session(&SessionKey::from_stored_hash(session));
            }
            ClusterReport::Resynced => self.resync_rooms(),
            ClusterReport::Disconnected => {
                let keys: Vec<String> = self.rooms.keys().cloned().collect();
                for key in keys {
                    if let Some(room) = self.rooms.get_mut(&key) {
                        room.cluster_count = None;
                    }
                    self.record_count(&key);
                }
            }
        }
    }

    /// Reads every room again: what other instances did while Redis was away (messages,
    /// bans, lives) is in the database.
    fn resync_rooms(&mut self) {
        for (key, room) in &mut self.rooms {
            room.viewers_dirty = true;
            let pool = self.pool.clone();
            let loaded = self.loaded_sender.clone();
            let key = key.clone();
            let channel = room.channel.clone();
            tokio::spawn(async move {
                let result = load_room(&pool, channel)
                    .await
                    .map(|room| room.map(Box::new));
                let _ = loaded.send(Loaded::Resync { key, result });
            });
        }
    }

    /// Takes the database's view of a room after an outage, keeping its members and the
    /// messages shown here but not yet stored, and gives every member the history again.
    pub(super) fn resynced(&mut self, key: &str, result: Result<Option<Box<Room>>, InternalError>) {
        let stored = match result {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "reading a chat room again after a Redis outage failed");
                return;
            }
        };
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        match (room.live_id(), stored.live.clone()) {
            (current, Some(live)) if current != Some(live.live_id) => {
                self.apply_live_started(key, live);
            }
            (Some(current), None) => self.apply_live_ended(key, current),
            _ => {}
        }
        let unsaved: Vec<_> = self
            .pending
            .values()
            .filter(|pending| pending.room == key && !pending.withdrawn)
            .map(|pending| pending.message.clone())
            .collect();
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        room.banned.extend(stored.banned.iter().copied());
        room.history = stored.history.clone();
        let mut unsaved = unsaved;
        unsaved.retain(|message| !room.history.iter().any(|kept| kept.id == message.id));
        unsaved.sort_by_key(|message| (message.sent_at_ms, message.id));
        for message in unsaved {
            room.remember(message);
        }
        let channel = room.channel.to_string();
        let messages = room.recent_history();
        if room.live.is_some() {
            self.broadcast(key, AppServerMessage::ChatHistory { channel, messages });
        }
    }

    fn remote_event(&mut self, key: &str, event: RoomEvent) {
        if !self.rooms.contains_key(key) {
            // A room loading now may have read the state before this event.
            self.room_changed_while_loading(key);
            return;
        }
        match event {
            RoomEvent::ChatMessage { message, .. } => {
                let Some(room) = self.rooms.get_mut(key) else {
                    return;
                };
                if room.live_id() != Some(message.live_id) {
                    return;
                }
                room.remember(message.clone());
                self.broadcast(key, AppServerMessage::ChatMessage { message });
            }
            RoomEvent::ChatDeleted {
                live_id,
                message_ids,
            } => {
                if self.rooms.get(key).and_then(Room::live_id) == Some(live_id) {
                    self.broadcast_deleted(key, message_ids);
                }
            }
            RoomEvent::ChatBanned {
                live_id,
                user_id,
                username,
            } => {
                let user = UserId(user_id);
                let Some(room) = self.rooms.get_mut(key) else {
                    return;
                };
                room.banned.insert(user);
                let channel = room.channel.to_string();
                // Messages of theirs sent here and not yet stored go too, everywhere.
                let withdrawn: Vec<ChatMessageId> = self.withdraw_pending_of(live_id, user);
                if !withdrawn.is_empty() {
                    self.broadcast_deleted(key, withdrawn.clone());
                    self.publish(
                        key,
                        RoomEvent::ChatDeleted {
                            live_id,
                            message_ids: withdrawn,
                        },
                    );
                }
                self.broadcast(key, AppServerMessage::ChatBanned { channel, username });
            }
            RoomEvent::LiveStarted { live } => self.apply_live_started(key, live),
            RoomEvent::LiveEnded { live_id } => self.apply_live_ended(key, live_id),
        }
    }
}

impl Room {
    pub(super) fn live_id(&self) -> Option<LiveId> {
        self.live.as_ref().map(|live| live.live_id)
    }
}

/// How a viewer is named in the shared sets: the same client gets the same name on
/// every instance; a socket without an address is unique to its instance.
fn shared_viewer_key(viewer: &ViewerKey, instance: &str) -> String {
    match viewer {
        ViewerKey::Session(session) => format!("s:{}", session.as_str()),
        ViewerKey::Network(network) => format!("n:{network}"),
        ViewerKey::Socket(conn) => format!("c:{instance}:{conn:?}"),
    }
}
