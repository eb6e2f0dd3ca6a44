//! What the chat server and the cluster link tell each other: closed enums across the
//! task boundary. What instances tell each other is `privatehub_protocol::cluster`.

use std::time::Duration;

use privatehub_protocol::LiveId;
pub use privatehub_protocol::cluster::{RoomEnvelope, RoomEvent};

use crate::db::users::UserId;

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
    /// Redis is away: the counts of other instances are unknown until it returns.
    Disconnected,
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
