//! PENDING MOVE to `privatehub_protocol::app_api`: the HTTP bodies of replays and of the
//! recording setting, kept here until they move into the protocol crate (the one crate
//! that derives the wire types, which `crates/testkit/tests/architecture.rs` checks).
//! Until then they have no serde derives: [`RecordingSettingRequest::from_object`] and
//! the `to_json` methods are their hand-written (de)serialization, with the exact shapes
//! the derives will give:
//!
//! ```text
//! #[derive(Debug, Serialize, Deserialize)] #[serde(deny_unknown_fields)]
//! pub struct RecordingSettingRequest { pub enabled: bool }
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct RecordingSettingJson { pub enabled: bool }
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct VideoJson { id: RecordingId, username, title: String, started_at_ms: i64,
//!     duration_ms: i64, state: RecordingState, container: RecordingContainer,
//!     mime_type: String, url: String, url_expires_at: u64, chat: Vec<ReplayChatJson> }
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct ReplayChatJson { id: i64, username: String, body: String, sent_at_ms: i64 }
//! ```
//!
//! When they move: derive, delete this module, and import them in `routes/json.rs`.

use privatehub_protocol::recordings::{RecordingContainer, RecordingId, RecordingState};
use serde_json::{Map, Value, json};

/// `PUT /api/account/recording`: `{"enabled": bool}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettingRequest {
    pub enabled: bool,
}

impl RecordingSettingRequest {
    /// Reads the request object as `#[serde(deny_unknown_fields)]` would: `enabled` is
    /// required and a boolean, and no other field is allowed.
    pub fn from_object(object: &Map<String, Value>) -> Result<Self, String> {
        if let Some(unknown) = object.keys().find(|key| *key != "enabled") {
            return Err(format!("unknown field `{unknown}`, expected `enabled`"));
        }
        match object.get("enabled") {
            Some(Value::Bool(enabled)) => Ok(RecordingSettingRequest { enabled: *enabled }),
            Some(_) => Err("`enabled` must be true or false".to_owned()),
            None => Err("missing field `enabled`".to_owned()),
        }
    }
}

/// Answer of `PUT /api/account/recording`: the setting now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettingJson {
    pub enabled: bool,
}

impl RecordingSettingJson {
    pub fn to_json(&self) -> Value {
        json!({ "enabled": self.enabled })
    }
}

/// `GET /api/videos/{id}`: a recording to play, where to fetch it, and its live's chat.
#[derive(Debug, Clone)]
pub struct VideoJson {
    pub id: RecordingId,
    /// The creator.
    pub username: String,
    /// The live's title.
    pub title: String,
    /// When the recording's first packet was written, Unix milliseconds.
    pub started_at_ms: i64,
    /// Its length (so far, while `state` is `recording`).
    pub duration_ms: i64,
    pub state: RecordingState,
    pub container: RecordingContainer,
    /// For `<source type>`: `video/webm` or `video/mp4`.
    pub mime_type: String,
    /// The file on the media server with a replay token in its query.
    pub url: String,
    /// When the token in `url` expires, Unix seconds: fetch this again before then.
    pub url_expires_at: u64,
    /// The live's chat over the recording (from 5 s before to 5 s after), oldest first.
    pub chat: Vec<ReplayChatJson>,
}

/// One chat message beside a replay.
#[derive(Debug, Clone)]
pub struct ReplayChatJson {
    pub id: i64,
    pub username: String,
    pub body: String,
    pub sent_at_ms: i64,
}

impl VideoJson {
    pub fn to_json(&self) -> Value {
        let chat: Vec<Value> = self
            .chat
            .iter()
            .map(|message| {
                json!({
                    "id": message.id,
                    "username": message.username,
                    "body": message.body,
                    "sent_at_ms": message.sent_at_ms,
                })
            })
            .collect();
        json!({
            "id": self.id,
            "username": self.username,
            "title": self.title,
            "started_at_ms": self.started_at_ms,
            "duration_ms": self.duration_ms,
            "state": self.state,
            "container": self.container,
            "mime_type": self.mime_type,
            "url": self.url,
            "url_expires_at": self.url_expires_at,
            "chat": chat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_setting_request_is_read_as_the_derive_will_read_it() {
        let read = |text| RecordingSettingRequest::from_object(&object(text));
        assert_eq!(
            read(r#"{"enabled":false}"#),
            Ok(RecordingSettingRequest { enabled: false })
        );
        assert_eq!(
            read(r#"{"enabled":true}"#),
            Ok(RecordingSettingRequest { enabled: true })
        );
        for bad in [
            r#"{}"#,
            r#"{"enabled":"yes"}"#,
            r#"{"enabled":1}"#,
            r#"{"enabled":null}"#,
            r#"{"enabled":true,"admin":true}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_video_has_the_documented_shape() {
        let video = VideoJson {
            id: RecordingId::parse(&"ab".repeat(16)).unwrap(),
            username: "alice".into(),
            title: "Sunday show".into(),
            started_at_ms: 1_764_590_700_000,
            duration_ms: 3_723_000,
            state: RecordingState::Finished,
            container: RecordingContainer::Mp4,
            mime_type: "video/mp4".into(),
            url: "https://sfu.example/recordings/x.mp4?token=t".into(),
            url_expires_at: 1_764_598_023,
            chat: vec![ReplayChatJson {
                id: 7,
                username: "bob".into(),
                body: "<b>hi</b>".into(),
                sent_at_ms: 1_764_590_701_000,
            }],
        };
        assert_eq!(
            video.to_json(),
            json!({
                "id": "ab".repeat(16),
                "username": "alice",
                "title": "Sunday show",
                "started_at_ms": 1_764_590_700_000_i64,
                "duration_ms": 3_723_000,
                "state": "finished",
                "container": "mp4",
                "mime_type": "video/mp4",
                "url": "https://sfu.example/recordings/x.mp4?token=t",
                "url_expires_at": 1_764_598_023,
                "chat": [{"id": 7, "username": "bob", "body": "<b>hi</b>", "sent_at_ms": 1_764_590_701_000_i64}],
            })
        );
        assert_eq!(
            RecordingSettingJson { enabled: true }.to_json(),
            json!({"enabled": true})
        );
    }
}
