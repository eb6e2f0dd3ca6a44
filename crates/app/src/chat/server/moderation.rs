//! The broadcaster's moderation of their chat: deleting one message, banning a user
//! (whose messages of the current live disappear for everyone).

use privatehub_protocol::LiveId;
use privatehub_protocol::app_socket::{AppServerMessage, AppSocketErrorCode, ChatMessageId};

use super::joining::Loaded;
use super::{ChatServer, ConnId, Refusal, internal, not_joined, now_unix_ms, refusal};
use crate::cluster::RoomEvent;
use crate::db::users::{self, User};
use crate::db::{self, chat};
use crate::domain::Username;
use crate::error::InternalError;

/// What a ban's write found: the user, and the ids of their messages it deleted (`None`:
/// the owner tried to ban themselves); `None` if there is no such user.
type BanOutcome = Option<(User, Option<Vec<i64>>)>;

/// A moderation write finished; applied by [`ChatServer::moderated`].
pub(super) enum Moderated {
    Deleted {
        conn: ConnId,
        key: String,
        message_id: ChatMessageId,
        result: Result<bool, InternalError>,
    },
    Banned {
        conn: ConnId,
        key: String,
        live: LiveId,
        result: Result<BanOutcome, InternalError>,
    },
}

impl ChatServer {
    pub(super) fn chat_delete(
        &mut self,
        conn: ConnId,
        message_id: ChatMessageId,
    ) -> Result<(), Refusal> {
        let (key, live) = self.moderated_room(conn)?;
        // Not saved yet: withdrawn now, marked deleted once the writer stores it.
        if self.withdraw_pending(live, message_id) {
            self.broadcast_deleted(&key, vec![message_id]);
            self.publish_deleted(&key, live, vec![message_id]);
            return Ok(());
        }
        let now_ms = now_unix_ms();
        let pool = self.pool.clone();
        let loaded = self.loaded_sender.clone();
        tokio::spawn(async move {
            let result = db::run(&pool, move |connection| {
                chat::delete_message(connection, live, message_id.0, now_ms)
                    .map_err(InternalError::from)
            })
            .await;
            let _ = loaded.send(Loaded::Moderation(Moderated::Deleted {
                conn,
                key,
                message_id,
                result,
            }));
        });
        Ok(())
    }

    pub(super) fn chat_ban(&mut self, conn: ConnId, raw_username: &str) -> Result<(), Refusal> {
        let (key, live) = self.moderated_room(conn)?;
        let owner = self
            .rooms
            .get(&key)
            .map(|room| room.owner)
            .ok_or_else(not_joined)?;
        let username = Username::parse(raw_username).map_err(|_| unknown_user())?;
        let now_ms = now_unix_ms();
        let pool = self.pool.clone();
        let loaded = self.loaded_sender.clone();
        tokio::spawn(async move {
            let result = db::run(&pool, move |connection| {
                let Some(user) = users::find_by_username(connection, &username)? else {
                    return Ok(None);
                };
                if user.id == owner {
                    return Ok(Some((user, None)));
                }
                let ids = chat::ban_user(connection, owner, user.id, Some(live), now_ms)?;
                Ok::<_, InternalError>(Some((user, Some(ids))))
            })
            .await;
            let _ = loaded.send(Loaded::Moderation(Moderated::Banned {
                conn,
                key,
                live,
                result,
            }));
        });
        Ok(())
    }

    pub(super) fn moderated(&mut self, moderated: Moderated) {
        let (conn, outcome) = match moderated {
            Moderated::Deleted {
                conn,
                key,
                message_id,
                result,
            } => {
                let live = self.rooms.get(&key).and_then(|room| room.live_id());
                let outcome = self.deleted(&key, message_id, result);
                if let (Ok(()), Some(live)) = (&outcome, live) {
                    self.publish_deleted(&key, live, vec![message_id]);
                }
                (conn, outcome)
            }
            Moderated::Banned {
                conn,
                key,
                live,
                result,
            } => (conn, self.banned(&key, live, result)),
        };
        if let Err((code, message, _)) = outcome {
            self.deliver_error(conn, code, message, None);
        }
    }

    fn deleted(
        &mut self,
        key: &str,
        message_id: ChatMessageId,
        result: Result<bool, InternalError>,
    ) -> Result<(), Refusal> {
        let deleted = result.map_err(|error| {
            tracing::error!(%error, "deleting a chat message failed");
            internal()
        })?;
        if !deleted {
            return Err(refusal(
                AppSocketErrorCode::UnknownMessage,
                "That message does not exist or was already removed.",
            ));
        }
        self.broadcast_deleted(key, vec![message_id]);
        Ok(())
    }

    fn banned(
        &mut self,
        key: &str,
        live: LiveId,
        result: Result<BanOutcome, InternalError>,
    ) -> Result<(), Refusal> {
        let outcome = result.map_err(|error| {
            tracing::error!(%error, "banning a chat user failed");
            internal()
        })?;
        let (banned, ids) = outcome.ok_or_else(unknown_user)?;
        let ids =
            ids.ok_or_else(|| refusal(AppSocketErrorCode::Forbidden, "You cannot ban yourself."))?;
        let Some(room) = self.rooms.get_mut(key) else {
            return Ok(());
        };
        room.banned.insert(banned.id);
        let channel = room.channel.to_string();
        let mut ids: Vec<ChatMessageId> = ids.into_iter().map(ChatMessageId).collect();
        ids.extend(self.withdraw_pending_of(live, banned.id));
        self.broadcast_deleted(key, ids.clone());
        self.publish_deleted(key, live, ids);
        self.publish(
            key,
            RoomEvent::ChatBanned {
                live_id: live,
                user_id: banned.id.0,
                username: banned.username.to_string(),
            },
        );
        self.broadcast(
            key,
            AppServerMessage::ChatBanned {
                channel,
                username: banned.username.to_string(),
            },
        );
        Ok(())
    }

    /// The room `conn` moderates (it must be the owner's) and its current live.
    pub(super) fn moderated_room(&self, conn: ConnId) -> Result<(String, LiveId), Refusal> {
        let (user, key) = self.member(conn)?;
        let room = self.rooms.get(&key).ok_or_else(not_joined)?;
        if room.owner != user.id {
            return Err(refusal(
                AppSocketErrorCode::Forbidden,
                "Only the broadcaster can moderate this chat.",
            ));
        }
        let live = room
            .live
            .as_ref()
            .ok_or_else(|| refusal(AppSocketErrorCode::NotLive, "This channel is not live."))?;
        Ok((key, live.live_id))
    }

    pub(super) fn broadcast_deleted(&mut self, key: &str, message_ids: Vec<ChatMessageId>) {
        if message_ids.is_empty() {
            return;
        }
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        room.forget(&message_ids);
        let channel = room.channel.to_string();
        self.broadcast(
            key,
            AppServerMessage::ChatDeleted {
                channel,
                message_ids,
            },
        );
    }
}

impl ChatServer {
    fn publish_deleted(&self, key: &str, live: LiveId, message_ids: Vec<ChatMessageId>) {
        if !message_ids.is_empty() {
            self.publish(
                key,
                RoomEvent::ChatDeleted {
                    live_id: live,
                    message_ids,
                },
            );
        }
    }
}

fn unknown_user() -> Refusal {
    refusal(AppSocketErrorCode::UnknownUser, "There is no such user.")
}
