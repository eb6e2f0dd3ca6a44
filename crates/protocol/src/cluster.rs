//! What app instances tell each other through Redis when several share one site
//! (`REDIS_URL`): the payloads of the pub/sub channels. Each carries the id of the
//! instance that published it, so an instance skips its own.
//!
//! Channels: `privatehub:room:{channel}` ([`RoomEnvelope`], per room),
//! `privatehub:chat-limits` ([`LimitNotice`]), `privatehub:whip` ([`WhipEnvelope`]) and
//! `privatehub:sessions-ended` ([`SessionEnvelope`]).

use serde::{Deserialize, Serialize};

use crate::LiveId;
use crate::app_socket::{ChatMessage, ChatMessageId, LiveSummary};

/// A change to a room that every instance with members in it applies.
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

/// A [`RoomEvent`] and the instance that published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEnvelope {
    pub from: String,
    pub event: RoomEvent,
}

/// A user filled the chat window shared by the instances: refuse their messages for
/// `retry_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitNotice {
    pub user_id: i64,
    pub retry_after_ms: u64,
}

/// A change to what the app knows of WHIP publishes: the media server reports to one
/// instance, and `whip/start` may reach any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WhipEvent {
    Reported { live_id: LiveId },
    Forget { live_id: LiveId },
    HoldWhileCurrent { user_id: i64, live_id: LiveId },
    HoldFor { user_id: i64, ms: u64 },
    LiveEnded { user_id: i64, live_id: LiveId },
}

/// A [`WhipEvent`] and the instance that published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhipEnvelope {
    pub from: String,
    pub event: WhipEvent,
}

/// A session that logged out (its stored token hash, never the token): every instance
/// closes its sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnvelope {
    pub from: String,
    pub session: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_their_tags() {
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
        let whip = WhipEnvelope {
            from: "b2".into(),
            event: WhipEvent::HoldFor {
                user_id: 1,
                ms: 60_000,
            },
        };
        let json = serde_json::to_string(&whip).unwrap();
        assert!(json.contains("\"type\":\"hold_for\""), "{json}");
        assert_eq!(serde_json::from_str::<WhipEnvelope>(&json).unwrap(), whip);
    }
}
