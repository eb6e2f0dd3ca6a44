//! The app's HTTP API bodies (`docs/protocol.md`, "HTTP API"): what `/api/…` takes
//! and answers, and the one error envelope every API error uses. The app converts its
//! domain and database types into these at the edge.

use serde::{Deserialize, Serialize};

use crate::media_token::MediaRole;
use crate::recordings::{RecordingContainer, RecordingId, RecordingState};
use crate::turn_credentials::IceServer;

/// `POST /api/auth/signup` and `/api/auth/login`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    pub username: String,
    pub password: String,
}

/// `POST /api/lives/start`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartLiveRequest {
    #[serde(default)]
    pub title: Option<String>,
}

/// `GET /api/users/{username}/lives?limit=N`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub limit: Option<u16>,
}

/// A signed-in user as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserJson {
    pub username: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A live, current or past.
#[derive(Debug, Serialize, Deserialize)]
pub struct LiveJson {
    pub id: i64,
    pub username: String,
    pub title: String,
    pub started_at: String,
    /// Present once the live has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Watching now (0 once ended).
    pub viewers: u32,
    pub peak_viewers: u32,
}

/// `POST /api/lives/{username}/token`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MediaTokenJson {
    pub token: String,
    /// The media server's URL as browsers reach it (`MEDIA_PUBLIC_URL`).
    pub media_url: String,
    pub live_id: i64,
    pub role: MediaRole,
    pub expires_at: String,
    /// For `RTCPeerConnection`'s `iceServers`: the TURN relay with a credential minted
    /// for this token (empty without `TURN_URLS`).
    pub ice_servers: Vec<IceServer>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HealthJson {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `ok` or `unreachable`.
    pub database: String,
    /// With `REDIS_URL` only: `ok` or `unreachable`. An instance without Redis still
    /// serves (alone), so it does not make `status` unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

/// `GET /api/me/stream-key` and `POST /api/me/stream-key/rotate`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamKeyJson {
    pub stream_key: String,
    /// What to paste into OBS as the WHIP server.
    pub whip_url: String,
}

/// Every API error: `{"error":{"code","message"}}` with a 4xx/5xx status.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiErrorEnvelope {
    pub error: ApiError,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, for programs (`invalid_username`, `rate_limited`…).
    pub code: String,
    /// For people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_envelope_has_the_documented_shape() {
        let envelope = ApiErrorEnvelope {
            error: ApiError {
                code: "rate_limited".into(),
                message: "Slow down.".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&envelope).unwrap(),
            r#"{"error":{"code":"rate_limited","message":"Slow down."}}"#
        );
    }

    #[test]
    fn unknown_fields_in_requests_are_refused() {
        assert!(serde_json::from_str::<StartLiveRequest>(r#"{"title":"x","admin":true}"#).is_err());
    }
}

/// `PUT /api/account/recording`: whether the creator's lives are recorded (replays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettingRequest {
    pub enabled: bool,
}

/// Answer of `PUT /api/account/recording`: the setting now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSettingJson {
    pub enabled: bool,
}

/// `GET /api/videos/{id}`: a recording to play, where to fetch it, and its live's chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayChatJson {
    pub id: i64,
    pub username: String,
    pub body: String,
    pub sent_at_ms: i64,
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_setting_request_allows_one_boolean_field() {
        let read = |text| serde_json::from_str::<RecordingSettingRequest>(text).ok();
        assert_eq!(
            read(r#"{"enabled":false}"#),
            Some(RecordingSettingRequest { enabled: false })
        );
        for bad in [
            r#"{}"#,
            r#"{"enabled":"yes"}"#,
            r#"{"enabled":1}"#,
            r#"{"enabled":null}"#,
            r#"{"enabled":true,"admin":true}"#,
        ] {
            assert_eq!(read(bad), None, "{bad}");
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
            serde_json::to_value(&video).unwrap(),
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
    }
}
