//! JSON messages on the media server's signaling WebSocket (`/ws`).
//!
//! Publish: client sends [`MediaClientMessage::Publish`] with a sendonly audio+video
//! offer; server replies [`MediaServerMessage::Answer`]. Watch: client sends
//! [`MediaClientMessage::Watch`] with a recvonly audio+video offer; server replies
//! `Answer`, then `PublisherJoined`/`PublisherLeft` as the broadcaster comes and goes
//! (and `PublisherStalled`/`PublisherResumed` when its video stops and restarts).
//! Every message is a JSON object with a `type` field in snake_case.

use serde::{Deserialize, Serialize};

use crate::LiveId;

/// Largest signaling message the media server reads; larger frames are refused with
/// [`MediaErrorCode::MessageTooLarge`] and the socket is closed.
pub const MAX_SIGNALING_MESSAGE_BYTES: usize = 64 * 1024;

/// `RTCSessionDescriptionInit`: `{"type":"offer","sdp":"v=0..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: SdpKind,
    pub sdp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdpKind {
    Offer,
    Answer,
}

/// Browser (or bot) to media server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MediaClientMessage {
    /// Start publishing into the token's live. Replaces any current publisher of it.
    Publish {
        token: String,
        offer: SessionDescription,
    },
    /// Start watching the token's live.
    Watch {
        token: String,
        offer: SessionDescription,
    },
    /// A trickled ICE candidate (`RTCIceCandidateInit.candidate`). Optional: the server
    /// is ICE-lite and learns the client's address from its STUN checks.
    Candidate { candidate: String },
    /// Leave cleanly; the server frees the peer at once.
    Leave,
    /// Keep-alive; answered with `Pong`.
    Ping,
    /// Watch: the quality menu's choice, `"auto"` (the default: follow the bandwidth) or
    /// a layer's `rid` from [`MediaServerMessage::Quality`] (kept until `"auto"`).
    Quality { layer: String },
}

/// Longest `rid` accepted in [`MediaClientMessage::Quality`] (RFC 8851 allows 255, str0m
/// keeps 8).
pub const MAX_RID_CHARS: usize = 8;

/// Name of the one layer of a publisher that sends no simulcast, in
/// [`MediaServerMessage::Quality`].
pub const SINGLE_LAYER: &str = "single";

/// One simulcast layer of the live, as the quality menu shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityLayer {
    /// The layer's rid ([`SINGLE_LAYER`] without simulcast).
    pub rid: String,
    /// Picture size from its last keyframe, when known (VP8).
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// Measured bitrate, kbit/s.
    pub kbps: u64,
}

/// Media server to browser (or bot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaServerMessage {
    /// The answer to a `Publish` or `Watch` offer.
    Answer {
        answer: SessionDescription,
        live_id: LiveId,
        /// Watch: the server estimates this viewer's bandwidth and picks its simulcast
        /// layer by itself (it does when the live's publisher sent layers at the time).
        #[serde(default)]
        adaptive: bool,
    },
    /// To viewers: a broadcaster is (again) sending into this live. `simulcast`: it
    /// sends several layers; a viewer whose answer was not `adaptive` can watch again
    /// to get layers chosen for its bandwidth.
    PublisherJoined {
        live_id: LiveId,
        #[serde(default)]
        simulcast: bool,
    },
    /// To viewers: the broadcaster's connection went away. Viewers stay connected and
    /// resume receiving when it comes back.
    PublisherLeft { live_id: LiveId },
    /// To a publisher: a newer publish for the same live took over; this one is closed.
    Replaced { live_id: LiveId },
    /// To viewers: the broadcaster is still connected but its video stopped arriving
    /// (str0m reported the stream paused, or no frame for about 2 s). Show "stalled";
    /// `PublisherResumed` follows when frames come back.
    PublisherStalled { live_id: LiveId },
    /// To viewers: after `PublisherStalled`, the broadcaster's video frames arrive again.
    PublisherResumed { live_id: LiveId },
    /// To a viewer: its video quality, on every change and every couple of seconds.
    Quality {
        /// The live's layers, lowest first.
        layers: Vec<QualityLayer>,
        /// The rid forwarded now (`null` while waiting for a keyframe or paused).
        current: Option<String>,
        /// The rid to be forwarded (switched to at its next keyframe); `null` with
        /// `paused`, or before a layer is chosen.
        target: Option<String>,
        /// `"auto"` or the rid the viewer picked.
        choice: String,
        /// The server's estimate of the viewer's downstream bandwidth, kbit/s.
        estimate_kbps: Option<u64>,
        /// Video is paused because the link cannot carry even the lowest layer; audio
        /// goes on, and video resumes by itself when the link recovers.
        paused: bool,
        adaptive: bool,
    },
    /// Reply to `Ping`.
    Pong,
    /// The media server is stopping (a restart or an upgrade); the socket closes right
    /// after. Publish or watch again after `retry_after_ms` plus a random spread.
    ServerRestarting { retry_after_ms: u64 },
    /// Something was wrong with a request. `close` tells whether the server is closing
    /// the socket after this message.
    Error {
        code: MediaErrorCode,
        message: String,
        close: bool,
    },
}

/// Machine-readable reason in [`MediaServerMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MediaErrorCode {
    /// Not JSON, or JSON of the wrong shape.
    MalformedMessage,
    /// A `type` this server does not know.
    UnknownMessageType,
    /// A message that makes no sense now (a second offer, a candidate before an offer).
    WrongState,
    /// Frame larger than [`MAX_SIGNALING_MESSAGE_BYTES`], or a binary frame.
    MessageTooLarge,
    /// Token missing, forged or malformed.
    InvalidToken,
    /// Token expired: fetch a new one from the app.
    TokenExpired,
    /// Token valid but does not allow this (a watch token used to publish).
    Forbidden,
    /// The SDP offer could not be parsed or accepted.
    InvalidSdp,
    /// Too many messages or connections from this client.
    RateLimited,
    /// The server is at its configured peer limit.
    ServerFull,
    /// The server failed; nothing the client did.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_message_wire_format() {
        let json = r#"{"type":"publish","token":"t","offer":{"type":"offer","sdp":"v=0"}}"#;
        let message: MediaClientMessage = serde_json::from_str(json).unwrap();
        assert_eq!(
            message,
            MediaClientMessage::Publish {
                token: "t".into(),
                offer: SessionDescription {
                    kind: SdpKind::Offer,
                    sdp: "v=0".into()
                }
            }
        );
        assert_eq!(serde_json::to_string(&message).unwrap(), json);
    }

    #[test]
    fn server_messages_wire_format() {
        let error = MediaServerMessage::Error {
            code: MediaErrorCode::TokenExpired,
            message: "expired".into(),
            close: true,
        };
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"type":"error","code":"token_expired","message":"expired","close":true}"#
        );
        assert_eq!(
            serde_json::to_string(&MediaServerMessage::PublisherLeft { live_id: LiveId(3) })
                .unwrap(),
            r#"{"type":"publisher_left","live_id":3}"#
        );
    }

    #[test]
    fn stall_messages_wire_format() {
        let stalled = MediaServerMessage::PublisherStalled { live_id: LiveId(7) };
        let resumed = MediaServerMessage::PublisherResumed { live_id: LiveId(7) };
        assert_eq!(
            serde_json::to_string(&stalled).unwrap(),
            r#"{"type":"publisher_stalled","live_id":7}"#
        );
        assert_eq!(
            serde_json::to_string(&resumed).unwrap(),
            r#"{"type":"publisher_resumed","live_id":7}"#
        );
        assert_eq!(
            serde_json::from_str::<MediaServerMessage>(
                r#"{"type":"publisher_stalled","live_id":7}"#
            )
            .unwrap(),
            stalled
        );
        assert_eq!(
            serde_json::from_str::<MediaServerMessage>(
                r#"{"type":"publisher_resumed","live_id":7}"#
            )
            .unwrap(),
            resumed
        );
    }

    #[test]
    fn unknown_type_and_unknown_fields_are_refused() {
        assert!(serde_json::from_str::<MediaClientMessage>(r#"{"type":"nope"}"#).is_err());
        assert!(
            serde_json::from_str::<MediaClientMessage>(
                r#"{"type":"watch","token":"t","offer":{"type":"offer","sdp":""},"x":1}"#
            )
            .is_err()
        );
    }
}
