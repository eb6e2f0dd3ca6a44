//! Loading a room's state and recent history from the database.

use std::collections::{HashMap, HashSet};

use privatehub_protocol::app_socket::{ChatMessage, ChatMessageId, LiveSummary};

use super::Room;
use super::history::{KEPT_HISTORY, loaded_history};
use crate::db::{self, DbPool, chat, lives, users};
use crate::domain::Username;
use crate::error::InternalError;

/// The channel's owner, current live with its recent history, and bans; `None` if
/// there is no such user.
pub(super) async fn load_room(
    pool: &DbPool,
    channel: Username,
) -> Result<Option<Room>, InternalError> {
    db::run(pool, move |connection| {
        let Some(owner) = users::find_by_username(connection, &channel)? else {
            return Ok(None);
        };
        let live = lives::find_current_by_user(connection, owner.id)?;
        let banned = chat::banned_users(connection, owner.id)?;
        let channel = owner.username.to_string();
        let history = match &live {
            Some(live) => chat::recent_messages(connection, live.id, KEPT_HISTORY as i64)?
                .into_iter()
                .map(|message| ChatMessage {
                    id: ChatMessageId(message.id),
                    channel: channel.clone(),
                    live_id: message.live_id,
                    username: message.username,
                    text: message.body,
                    sent_at_ms: message.sent_at_ms,
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Some(Room {
            channel: owner.username.clone(),
            owner: owner.id,
            stored_peak: live.as_ref().map_or(0, |live| live.peak_viewers),
            unstored_peak: live.as_ref().map_or(0, |live| live.peak_viewers),
            live: live.map(|live| LiveSummary {
                live_id: live.id,
                title: live.title,
                started_at_ms: live.started_at.saturating_mul(1000),
            }),
            members: HashSet::new(),
            by_worker: None,
            history: loaded_history(history),
            banned: banned.into_iter().collect(),
            viewers: HashMap::new(),
            sent_count: None,
            cluster_count: None,
            // A room with a live sends its (possibly empty) viewer set at once, so the
            // cluster link reads the live's count for it.
            viewers_dirty: true,
        }))
    })
    .await
}
