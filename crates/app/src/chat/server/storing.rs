//! Messages between being shown and being saved: what the writer reports back, the
//! history a newcomer gets while some are still pending, and deletions of messages
//! that are not in the database yet.

use std::collections::HashMap;

use privatehub_protocol::LiveId;
use privatehub_protocol::app_socket::{
    AppServerMessage, AppSocketErrorCode, ChatMessage, ChatMessageId,
};

use super::{ChatServer, ConnId};
use crate::chat::writer::WriteOutcome;
use crate::db::users::UserId;
use crate::db::{self, chat};
use crate::error::InternalError;

/// A message shown to its room whose write has not been reported yet.
pub(super) struct PendingMessage {
    pub sender: ConnId,
    /// Key of the room it was posted in.
    pub room: String,
    pub author: UserId,
    pub message: ChatMessage,
    /// Deleted by the broadcaster (or its author banned) before it was saved: once
    /// stored it is marked deleted in the database too.
    pub withdrawn: bool,
}

impl ChatServer {
    pub(super) fn write_outcome(&mut self, outcome: WriteOutcome) {
        match outcome {
            WriteOutcome::Stored(ids) => {
                for id in ids {
                    let Some(pending) = self.pending.remove(&id) else {
                        continue;
                    };
                    if pending.withdrawn {
                        self.delete_stored_later(pending.message.live_id, id);
                    }
                    self.deliver(
                        pending.sender,
                        AppServerMessage::ChatStored { message_id: id },
                    );
                }
            }
            WriteOutcome::NotStored { ids, .. } => {
                let mut withdrawn: HashMap<String, Vec<ChatMessageId>> = HashMap::new();
                for id in ids {
                    let Some(pending) = self.pending.remove(&id) else {
                        continue;
                    };
                    if !pending.withdrawn {
                        withdrawn.entry(pending.room).or_default().push(id);
                    }
                    self.deliver(
                        pending.sender,
                        AppServerMessage::Error {
                            code: AppSocketErrorCode::NotStored,
                            message:
                                "Your message could not be saved and was removed. Send it again."
                                    .into(),
                            retry_after_ms: None,
                            message_id: Some(id),
                        },
                    );
                }
                for (room, ids) in withdrawn {
                    self.broadcast_deleted(&room, ids);
                }
            }
        }
    }

    /// Withdraws a pending message; `false` if `id` is not pending in `live`.
    pub(super) fn withdraw_pending(&mut self, live: LiveId, id: ChatMessageId) -> bool {
        match self.pending.get_mut(&id) {
            Some(pending) if pending.message.live_id == live && !pending.withdrawn => {
                pending.withdrawn = true;
                true
            }
            _ => false,
        }
    }

    /// Withdraws the pending messages of `author` in `live`; returns their ids.
    pub(super) fn withdraw_pending_of(
        &mut self,
        live: LiveId,
        author: UserId,
    ) -> Vec<ChatMessageId> {
        self.pending
            .iter_mut()
            .filter(|(_, pending)| {
                pending.author == author && pending.message.live_id == live && !pending.withdrawn
            })
            .map(|(id, pending)| {
                pending.withdrawn = true;
                *id
            })
            .collect()
    }

    /// Marks a message deleted that was withdrawn while its write was pending.
    fn delete_stored_later(&self, live: LiveId, id: ChatMessageId) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let now_ms = super::now_unix_ms();
            let result = db::run(&pool, move |connection| {
                chat::delete_message(connection, live, id.0, now_ms).map_err(InternalError::from)
            })
            .await;
            if let Err(error) = result {
                tracing::error!(%error, "deleting a withdrawn chat message failed");
            }
        });
    }
}
