//! What app instances tell each other about a room, and what the cluster link reports
//! to this instance's chat server: closed enums across the task boundary.

use std::time::Duration;

use privatehub_protocol::LiveId;
use privatehub_protocol::app_socket::{ChatMessage, ChatMessageId, LiveSummary};
use serde::{Deserialize, Serialize};

use crate::db::users::UserId;

/// A change to a room that every instance with members in it applies. Published on the
/// room's Redis channel (see [`room_channel`]) by the instance where it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomEvent {
    /// A message was shown to the room (it is being stored by the sender's instance).
    ChatMessage {
        message: ChatMessage,
        author: i64,
    },
    /// Messages the broadcaster deleted, or a banned user's.
    ChatDeleted {
        live_id: LiveId,
        message_ids: Vec<ChatMessageId>,
    },
    /// The broadcaster banned a user: their pending messages go too.
    ChatBanned {
        live_id: LiveId,
        user_id: i64,
        username: String,
    },
    LiveStarted {
        live: LiveSummary,
    },
    LiveEnded {
        live_id: LiveId,
    },
}

/// A [`RoomEvent`] with the instance that published it (instances skip their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEnvelope {
    pub from: String,
    pub event: RoomEvent,
}

/// What the chat server asks of the cluster link. It never waits for an answer.
#[derive(Debug, Clone)]
pub enum ClusterCommand {
    /// This instance has members in the room `key` (a canonical channel name).
    Subscribe {
        key: String,
    },
    /// It has none any more.
    Unsubscribe {
        key: String,
    },
    Publish {
        key: String,
        event: RoomEvent,
    },
    /// This instance's viewers of `live` now (replaces the previous set; empty forgets).
    Viewers {
        live: LiveId,
        viewers: Vec<String>,
    },
    /// The room of `live` is gone here, or the live ended.
    Forget {
        live: LiveId,
    },
    /// A user posted here: counted against the limit shared by all instances.
    ChatSent {
        user: UserId,
    },
    /// A session logged out here (its stored token hash): its sockets everywhere close.
    SessionEnded {
        session: String,
    },
}

/// What the cluster link tells the chat server.
#[derive(Debug, Clone)]
pub enum ClusterReport {
    /// Another instance changed a room this one has members in.
    Room { key: String, event: RoomEvent },
    /// A live's viewer count over all instances.
    Viewers { live: LiveId, count: u32 },
    /// The user reached the shared chat limit on some instance.
    ChatLimited { user: UserId, retry_after: Duration },
    /// A session logged out on another instance.
    SessionEnded { session: String },
    /// Redis is back after an outage: events of the meantime were missed, so rooms
    /// are read again from the database.
    Resynced,
}

/// The Redis channel of a room's events.
pub fn room_channel(key: &str) -> String {
    format!("privatehub:room:{key}")
}

/// The room key of a channel name from [`room_channel`].
pub fn room_key(channel: &str) -> Option<&str> {
    channel.strip_prefix("privatehub:room:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_events_round_trip_and_channels_map_back_to_keys() {
        let envelope = RoomEnvelope {
            from: "a1".into(),
            event: RoomEvent::ChatBanned {
                live_id: LiveId(7),
                user_id: 3,
                username: "troll".into(),
            },
        };
        let json = serde_json::to_string(&envelope).unwrap();
        assert!(json.contains("\"type\":\"chat_banned\""), "{json}");
        assert_eq!(
            serde_json::from_str::<RoomEnvelope>(&json).unwrap(),
            envelope
        );
        assert_eq!(room_key(&room_channel("alice")), Some("alice"));
        assert_eq!(room_key("other:alice"), None);
    }
}
