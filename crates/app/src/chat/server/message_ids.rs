//! Where chat message ids come from. They are given by the chat server, not by the
//! insert, so a message is shown (and can be deleted) before it is saved.
//!
//! Alone on SQLite the next id is one past the highest stored. Instances sharing a
//! PostgreSQL database take ids from its sequence instead, a block at a time fetched
//! ahead by a spawned task, so no two instances ever give the same id and the chat
//! task never waits for the database.

use std::collections::VecDeque;

use super::ChatServer;
use super::joining::Loaded;
use crate::db;
use crate::error::InternalError;

/// Ids fetched at once from the sequence.
pub const MESSAGE_ID_BLOCK: usize = 64;

/// How the server's ids start (see the module documentation).
#[derive(Debug, Clone)]
pub enum MessageIdSource {
    /// One past this highest stored id, counting up.
    After(i64),
    /// From the database's sequence, starting with these.
    Sequence(Vec<i64>),
}

pub(super) enum MessageIds {
    Counter(i64),
    Sequence {
        ready: VecDeque<i64>,
        fetching: bool,
    },
}

impl MessageIds {
    pub(super) fn new(source: MessageIdSource) -> MessageIds {
        match source {
            MessageIdSource::After(last) => MessageIds::Counter(last + 1),
            MessageIdSource::Sequence(first) => MessageIds::Sequence {
                ready: first.into(),
                fetching: false,
            },
        }
    }

    /// The id the next message gets, without taking it.
    pub(super) fn peek(&self) -> Option<i64> {
        match self {
            MessageIds::Counter(next) => Some(*next),
            MessageIds::Sequence { ready, .. } => ready.front().copied(),
        }
    }

    /// Takes the id [`MessageIds::peek`] showed.
    pub(super) fn take(&mut self) {
        match self {
            MessageIds::Counter(next) => *next += 1,
            MessageIds::Sequence { ready, .. } => {
                ready.pop_front();
            }
        }
    }
}

impl ChatServer {
    /// Fetches the next block when half of the ids fetched are used.
    pub(super) fn top_up_message_ids(&mut self) {
        let MessageIds::Sequence { ready, fetching } = &mut self.message_ids else {
            return;
        };
        if *fetching || ready.len() > MESSAGE_ID_BLOCK / 2 {
            return;
        }
        *fetching = true;
        let pool = self.pool.clone();
        let loaded = self.loaded_sender.clone();
        tokio::spawn(async move {
            let result = db::run(&pool, |connection| {
                db::chat::reserve_message_ids(connection, MESSAGE_ID_BLOCK)
                    .map_err(InternalError::from)
            })
            .await;
            let _ = loaded.send(Loaded::MessageIds(result));
        });
    }

    pub(super) fn message_ids_fetched(&mut self, result: Result<Vec<i64>, InternalError>) {
        let MessageIds::Sequence { ready, fetching } = &mut self.message_ids else {
            return;
        };
        *fetching = false;
        match result {
            Ok(ids) => ready.extend(ids),
            Err(error) => {
                // Tried again with the next message; meanwhile messages are refused as
                // not stored, which they could not be anyway.
                tracing::warn!(%error, "fetching chat message ids failed");
            }
        }
    }
}
