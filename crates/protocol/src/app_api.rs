//! The app's HTTP API bodies (`docs/protocol.md`, "HTTP API"): what `/api/…` takes
//! and answers, and the one error envelope every API error uses. The app converts its
//! domain and database types into these at the edge.

use serde::{Deserialize, Serialize};

use crate::media_token::MediaRole;
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
