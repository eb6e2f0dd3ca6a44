//! A room's recent chat in memory: what a newcomer gets as `chat:history`. Loaded with
//! the room, then kept up to date by the chat task itself as messages are shown,
//! deleted or lost, so it always matches what the members saw, and joins read nothing
//! from the database.

use std::collections::VecDeque;

use privatehub_protocol::app_socket::{CHAT_HISTORY_LENGTH, ChatMessage, ChatMessageId};

use super::Room;

/// Messages kept: twice what a newcomer gets, so deletions still leave a full history.
pub(super) const KEPT_HISTORY: usize = 2 * CHAT_HISTORY_LENGTH;

impl Room {
    /// The last [`CHAT_HISTORY_LENGTH`] messages of the current live, oldest first.
    pub(super) fn recent_history(&self) -> Vec<ChatMessage> {
        let skip = self.history.len().saturating_sub(CHAT_HISTORY_LENGTH);
        self.history.iter().skip(skip).cloned().collect()
    }

    /// A message shown to the room, kept in the order shown.
    pub(super) fn remember(&mut self, message: ChatMessage) {
        self.history.push_back(message);
        while self.history.len() > KEPT_HISTORY {
            self.history.pop_front();
        }
    }

    /// Messages deleted, withdrawn or lost.
    pub(super) fn forget(&mut self, ids: &[ChatMessageId]) {
        self.history.retain(|message| !ids.contains(&message.id));
    }
}

/// History as loaded from the database (newest last), trimmed to what is kept.
pub(super) fn loaded_history(messages: Vec<ChatMessage>) -> VecDeque<ChatMessage> {
    let skip = messages.len().saturating_sub(KEPT_HISTORY);
    messages.into_iter().skip(skip).collect()
}
