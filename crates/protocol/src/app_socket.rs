//! JSON messages on the app's real-time WebSocket (`/ws` on the app): presence, joining a
//! channel's live room, chat and the viewer count.
//!
//! Every message is a JSON object whose `type` names the event with the original's
//! `noun:verb` spelling (`user:online`, `live:join`, `chat:message`, ...).
//!
//! A session goes like this:
//! 1. client `user:online`; server `user:online` with the signed-in username (or null);
//! 2. client `live:join` with a channel (the broadcaster's username); server answers
//!    `live:state` (the current live or none), `chat:history` (recent messages of the
//!    current live) and `live:viewers`;
//! 3. from then on: `chat:send` → `chat:message` to everyone in the room; `live:viewers`
//!    when someone joins or leaves (coalesced: at most one every 250 ms per room);
//!    `live:started` / `live:ended` as the broadcaster goes live or ends;
//!    `chat:deleted` when the broadcaster removes messages;
//! 4. client `live:leave` (or closing the socket) leaves the room.
//!
//! A socket is in at most one room at a time; `live:join` of another channel leaves the
//! previous one.

use serde::{Deserialize, Serialize};

use crate::LiveId;

/// Largest frame the app reads from a socket; larger frames close the socket.
pub const MAX_APP_SOCKET_MESSAGE_BYTES: usize = 8 * 1024;

/// Longest chat message, in characters (Unicode scalar values), after trimming.
pub const MAX_CHAT_MESSAGE_CHARS: usize = 500;

/// How many recent messages `chat:history` carries.
pub const CHAT_HISTORY_LENGTH: usize = 50;

/// Database id of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChatMessageId(pub i64);

/// Browser to app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum AppClientMessage {
    /// Announce presence; the server answers with who it thinks this socket is.
    #[serde(rename = "user:online")]
    UserOnline,
    /// Enter `channel`'s room (the broadcaster's username) to get its chat and count.
    #[serde(rename = "live:join")]
    LiveJoin { channel: String },
    /// Leave the current room.
    #[serde(rename = "live:leave")]
    LiveLeave,
    /// Post a chat message into the current room. Signed-in users only.
    #[serde(rename = "chat:send")]
    ChatSend { text: String },
    /// Broadcaster only: remove one message for everyone.
    #[serde(rename = "chat:delete")]
    ChatDelete { message_id: ChatMessageId },
    /// Broadcaster only: ban `username` from this channel's chat and remove their
    /// messages of the current live for everyone.
    #[serde(rename = "chat:ban")]
    ChatBan { username: String },
    /// Keep-alive; answered with `pong`.
    #[serde(rename = "ping")]
    Ping,
}

/// App to browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AppServerMessage {
    /// Who this socket belongs to; `null` for a signed-out visitor (who may watch but
    /// not chat).
    #[serde(rename = "user:online")]
    UserOnline { username: Option<String> },
    /// Sent on `live:join`: the channel's current live, if any, and whether this socket
    /// belongs to the channel's owner (who may moderate).
    #[serde(rename = "live:state")]
    LiveState {
        channel: String,
        live: Option<LiveSummary>,
        is_owner: bool,
    },
    /// Recent messages of the current live, oldest first. Sent on join and when a live
    /// starts (then empty).
    #[serde(rename = "chat:history")]
    ChatHistory {
        channel: String,
        messages: Vec<ChatMessage>,
    },
    /// A new message in the room. It is shown before it is saved; its sender gets
    /// `chat:stored` once it is.
    #[serde(rename = "chat:message")]
    ChatMessage { message: ChatMessage },
    /// To the sender only: the message is in the database (it survives a restart and
    /// will be in the history).
    #[serde(rename = "chat:stored")]
    ChatStored { message_id: ChatMessageId },
    /// Messages removed by the broadcaster (one delete, or all of a banned user's).
    #[serde(rename = "chat:deleted")]
    ChatDeleted {
        channel: String,
        message_ids: Vec<ChatMessageId>,
    },
    /// `username` can no longer post in `channel`.
    #[serde(rename = "chat:banned")]
    ChatBanned { channel: String, username: String },
    /// Viewers of the channel's live right now (sockets in the room, the broadcaster's
    /// own not counted).
    #[serde(rename = "live:viewers")]
    LiveViewers { channel: String, count: u32 },
    /// The broadcaster went live.
    #[serde(rename = "live:started")]
    LiveStarted { channel: String, live: LiveSummary },
    /// The broadcaster ended the live.
    #[serde(rename = "live:ended")]
    LiveEnded { channel: String, live_id: LiveId },
    /// A request was refused. The socket stays open; `retry_after_ms` is set for
    /// `rate_limited`.
    #[serde(rename = "error")]
    Error {
        code: AppSocketErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// The chat message the error is about (`not_stored`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<ChatMessageId>,
    },
    /// Reply to `ping`.
    #[serde(rename = "pong")]
    Pong,
    /// The app is stopping (a restart or an upgrade); the socket closes right after.
    /// Reconnect after a short random delay (`retry_after_ms` suggests the earliest).
    #[serde(rename = "server:restarting")]
    ServerRestarting { retry_after_ms: u64 },
}

/// A live as the socket describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSummary {
    pub live_id: LiveId,
    pub title: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: i64,
}

/// One chat message. `text` is plain text: clients must render it as text, never HTML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: ChatMessageId,
    pub channel: String,
    pub live_id: LiveId,
    pub username: String,
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
}

/// Machine-readable reason in [`AppServerMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AppSocketErrorCode {
    /// Not JSON, or JSON of the wrong shape.
    MalformedMessage,
    /// Chat needs a signed-in user.
    NotSignedIn,
    /// `chat:*` before `live:join`.
    NotJoined,
    /// The channel has no live now, so there is no chat to post in.
    NotLive,
    /// No such channel (broadcaster's username).
    UnknownChannel,
    /// `chat:ban` of a username that does not exist.
    UnknownUser,
    /// Empty (or only whitespace) message.
    EmptyMessage,
    /// Longer than [`MAX_CHAT_MESSAGE_CHARS`].
    MessageTooLong,
    /// Sending too fast; wait `retry_after_ms`.
    RateLimited,
    /// The broadcaster banned this user from the chat.
    Banned,
    /// Moderation by someone who is not the broadcaster.
    Forbidden,
    /// The message to delete does not exist (or is already gone).
    UnknownMessage,
    /// The server failed; nothing the client did.
    Internal,
    /// A message was shown to the room but could not be saved (the database stayed
    /// unavailable); it is withdrawn (`chat:deleted`) and the sender may send it again.
    /// Also sent, without a `message_id`, when the save queue is full.
    NotStored,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ChatMessage {
        ChatMessage {
            id: ChatMessageId(12),
            channel: "alice".into(),
            live_id: LiveId(3),
            username: "bob".into(),
            text: "<b>hi</b>".into(),
            sent_at_ms: 1_700_000_000_000,
        }
    }

    /// `check(value, expected JSON)`: serializes, compares, and parses back.
    fn check_server(value: AppServerMessage, expected: &str) {
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, expected);
        assert_eq!(
            serde_json::from_str::<AppServerMessage>(&json).unwrap(),
            value
        );
    }

    fn check_client(json: &str, expected: AppClientMessage) {
        assert_eq!(
            serde_json::from_str::<AppClientMessage>(json).unwrap(),
            expected
        );
        assert_eq!(serde_json::to_string(&expected).unwrap(), json);
    }

    #[test]
    fn client_messages_wire_format() {
        check_client(r#"{"type":"user:online"}"#, AppClientMessage::UserOnline);
        check_client(
            r#"{"type":"live:join","channel":"alice"}"#,
            AppClientMessage::LiveJoin {
                channel: "alice".into(),
            },
        );
        check_client(r#"{"type":"live:leave"}"#, AppClientMessage::LiveLeave);
        check_client(
            r#"{"type":"chat:send","text":"hello"}"#,
            AppClientMessage::ChatSend {
                text: "hello".into(),
            },
        );
        check_client(
            r#"{"type":"chat:delete","message_id":12}"#,
            AppClientMessage::ChatDelete {
                message_id: ChatMessageId(12),
            },
        );
        check_client(
            r#"{"type":"chat:ban","username":"bob"}"#,
            AppClientMessage::ChatBan {
                username: "bob".into(),
            },
        );
        check_client(r#"{"type":"ping"}"#, AppClientMessage::Ping);
    }

    #[test]
    fn server_messages_wire_format() {
        check_server(
            AppServerMessage::UserOnline { username: None },
            r#"{"type":"user:online","username":null}"#,
        );
        check_server(
            AppServerMessage::LiveState {
                channel: "alice".into(),
                live: Some(LiveSummary {
                    live_id: LiveId(3),
                    title: "Hi".into(),
                    started_at_ms: 5,
                }),
                is_owner: false,
            },
            r#"{"type":"live:state","channel":"alice","live":{"live_id":3,"title":"Hi","started_at_ms":5},"is_owner":false}"#,
        );
        check_server(
            AppServerMessage::ChatMessage { message: message() },
            r#"{"type":"chat:message","message":{"id":12,"channel":"alice","live_id":3,"username":"bob","text":"<b>hi</b>","sent_at_ms":1700000000000}}"#,
        );
        check_server(
            AppServerMessage::ChatHistory {
                channel: "alice".into(),
                messages: vec![],
            },
            r#"{"type":"chat:history","channel":"alice","messages":[]}"#,
        );
        check_server(
            AppServerMessage::ChatDeleted {
                channel: "alice".into(),
                message_ids: vec![ChatMessageId(1), ChatMessageId(2)],
            },
            r#"{"type":"chat:deleted","channel":"alice","message_ids":[1,2]}"#,
        );
        check_server(
            AppServerMessage::ChatBanned {
                channel: "alice".into(),
                username: "bob".into(),
            },
            r#"{"type":"chat:banned","channel":"alice","username":"bob"}"#,
        );
        check_server(
            AppServerMessage::LiveViewers {
                channel: "alice".into(),
                count: 2,
            },
            r#"{"type":"live:viewers","channel":"alice","count":2}"#,
        );
        check_server(
            AppServerMessage::LiveEnded {
                channel: "alice".into(),
                live_id: LiveId(3),
            },
            r#"{"type":"live:ended","channel":"alice","live_id":3}"#,
        );
        check_server(
            AppServerMessage::Error {
                code: AppSocketErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after_ms: Some(1500),
                message_id: None,
            },
            r#"{"type":"error","code":"rate_limited","message":"slow down","retry_after_ms":1500}"#,
        );
        check_server(
            AppServerMessage::Error {
                code: AppSocketErrorCode::NotSignedIn,
                message: "sign in".into(),
                retry_after_ms: None,
                message_id: None,
            },
            r#"{"type":"error","code":"not_signed_in","message":"sign in"}"#,
        );
        check_server(AppServerMessage::Pong, r#"{"type":"pong"}"#);
        check_server(
            AppServerMessage::ServerRestarting {
                retry_after_ms: 1000,
            },
            r#"{"type":"server:restarting","retry_after_ms":1000}"#,
        );
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        for json in [
            r#"{"type":"nope"}"#,
            r#"{"type":"chat:send"}"#,
            r#"{"type":"chat:send","text":"x","extra":1}"#,
            r#"{"type":"chat:delete","message_id":"x"}"#,
            r#"{"text":"x"}"#,
            "not json",
        ] {
            assert!(
                serde_json::from_str::<AppClientMessage>(json).is_err(),
                "{json}"
            );
        }
    }
}
