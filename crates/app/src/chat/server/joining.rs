//! Joining a room without waiting for the database in the chat task. A room not in
//! memory is loaded (owner, live, bans, the live's recent history) by a spawned task,
//! once however many sockets ask for it meanwhile; the result comes back as
//! [`Loaded`] and the waiting sockets are let in then, so a slow database delays those
//! joins and nothing else. Once loaded, a room keeps its history in memory (see
//! [`Room::history`](super::Room)), so later joins, a reconnect storm included, read
//! nothing from the database.

use privatehub_protocol::app_socket::{AppServerMessage, ChatMessage};

use super::loading::load_room;
use super::{ChatServer, ConnId, Room};
use crate::domain::Username;
use crate::error::InternalError;

/// A database read finished (see the module documentation).
pub(super) enum Loaded {
    Room {
        key: String,
        result: Result<Option<Box<Room>>, InternalError>,
    },
    /// A moderation write finished (see `moderation.rs`).
    Moderation(super::moderation::Moderated),
    /// A block of message ids (see `message_ids.rs`).
    MessageIds(Result<Vec<i64>, InternalError>),
    /// A room read again after a Redis outage (see `clustering.rs`).
    Resync {
        key: String,
        result: Result<Option<Box<Room>>, InternalError>,
    },
}

/// Sockets waiting for a room to load.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    pub conns: Vec<ConnId>,
    /// A live started or ended while the room loaded: what was read may be stale.
    pub stale: bool,
}

impl ChatServer {
    pub(super) fn join(&mut self, conn: ConnId, raw_channel: &str) {
        let Ok(channel) = Username::parse(raw_channel) else {
            self.deliver_unknown_channel(conn);
            return;
        };
        self.leave(conn);
        let key = channel.canonical();
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        state.joining = Some(key.clone());
        if self.rooms.contains_key(&key) {
            self.enter(conn, &key);
            return;
        }
        let waiting = self.rooms_loading.entry(key.clone()).or_default();
        waiting.conns.push(conn);
        if waiting.conns.len() == 1 {
            self.cluster_subscribe(&key);
            self.spawn_room_load(key, channel);
        }
    }

    fn spawn_room_load(&self, key: String, channel: Username) {
        let pool = self.pool.clone();
        let loaded = self.loaded_sender.clone();
        tokio::spawn(async move {
            let result = load_room(&pool, channel)
                .await
                .map(|room| room.map(Box::new));
            let _ = loaded.send(Loaded::Room { key, result });
        });
    }

    /// A live of `key` started or ended: a load in flight may have read the old state.
    pub(super) fn room_changed_while_loading(&mut self, key: &str) {
        if let Some(waiting) = self.rooms_loading.get_mut(key) {
            waiting.stale = true;
        }
    }

    pub(super) fn loaded(&mut self, loaded: Loaded) {
        match loaded {
            Loaded::Room { key, result } => self.room_loaded(key, result),
            Loaded::Moderation(moderated) => self.moderated(moderated),
            Loaded::MessageIds(result) => self.message_ids_fetched(result),
            Loaded::Resync { key, result } => self.resynced(&key, result),
        }
    }

    fn room_loaded(&mut self, key: String, result: Result<Option<Box<Room>>, InternalError>) {
        let mut waiting = self.rooms_loading.remove(&key).unwrap_or_default();
        if waiting.stale
            && let Ok(Some(room)) = &result
        {
            // Read again: the live event that arrived meanwhile must not be lost.
            let channel = room.channel.clone();
            waiting.stale = false;
            self.rooms_loading.insert(key.clone(), waiting);
            self.spawn_room_load(key, channel);
            return;
        }
        // Only those still waiting for this room (not gone, not joined elsewhere since).
        let still_waiting: Vec<ConnId> = waiting
            .conns
            .into_iter()
            .filter(|conn| {
                self.conns
                    .get(conn)
                    .is_some_and(|state| state.joining.as_deref() == Some(key.as_str()))
            })
            .collect();
        match result {
            Ok(Some(room)) => {
                // A live may have started or ended while it loaded: the room in memory
                // is the one kept up to date, so a room already there wins.
                self.rooms.entry(key.clone()).or_insert(*room);
                for conn in still_waiting {
                    self.enter(conn, &key);
                }
            }
            Ok(None) => {
                self.cluster_forget_room(&key, None);
                for conn in still_waiting {
                    self.stop_joining(conn);
                    self.deliver_unknown_channel(conn);
                }
            }
            Err(error) => {
                if !self.rooms.contains_key(&key) {
                    self.cluster_forget_room(&key, None);
                }
                tracing::error!(%error, "loading a chat room failed");
                for conn in still_waiting {
                    self.stop_joining(conn);
                    self.deliver_internal_error(conn);
                }
            }
        }
    }

    fn stop_joining(&mut self, conn: ConnId) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.joining = None;
        }
    }

    /// Lets `conn` into the loaded room `key`: a member (and counted) from now, with
    /// `live:state`, the history and the count.
    fn enter(&mut self, conn: ConnId, key: &str) {
        let (Some(state), Some(room)) = (self.conns.get_mut(&conn), self.rooms.get_mut(key)) else {
            return;
        };
        state.joining = None;
        state.room = Some(key.to_owned());
        let is_owner = state
            .user
            .as_ref()
            .is_some_and(|user| user.id == room.owner);
        if room.members.insert(conn) {
            room.by_worker = None;
            if !is_owner {
                room.add_viewer(&state.viewer);
            }
        }
        let channel = room.channel.to_string();
        let live = room.live.clone();
        self.deliver(
            conn,
            AppServerMessage::LiveState {
                channel,
                live: live.clone(),
                is_owner,
            },
        );
        self.record_count(key);
        let messages = match (&live, self.rooms.get(key)) {
            (Some(_), Some(room)) => room.recent_history(),
            _ => Vec::new(),
        };
        self.deliver_history(conn, key, messages);
    }

    /// `chat:history` then the count: the newcomer is up to date from here.
    fn deliver_history(&mut self, conn: ConnId, key: &str, messages: Vec<ChatMessage>) {
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let channel = room.channel.to_string();
        let count = room.viewer_count();
        self.deliver(
            conn,
            AppServerMessage::ChatHistory {
                channel: channel.clone(),
                messages,
            },
        );
        // The newcomer gets the count now; the others with the next push.
        self.deliver(conn, AppServerMessage::LiveViewers { channel, count });
    }
}
