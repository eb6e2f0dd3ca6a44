//! The HTTP API's JSON bodies: every request and response type the app serializes
//! lives here, converted from domain/database types at the edge.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::db::lives::Live;
use crate::db::users::User;

/// `POST /api/auth/signup` and `/api/auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    pub username: String,
    pub password: String,
}

/// `POST /api/lives/start`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartLiveRequest {
    #[serde(default)]
    pub title: Option<String>,
}

/// `GET /api/users/{username}/lives?limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub limit: Option<u16>,
}

/// A signed-in user as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserJson {
    pub username: String,
    pub created_at: String,
}

impl From<&User> for UserJson {
    fn from(user: &User) -> Self {
        UserJson {
            username: user.username.to_string(),
            created_at: rfc3339(user.created_at),
        }
    }
}

/// A live, current or past.
#[derive(Debug, Serialize)]
pub struct LiveJson {
    pub id: i64,
    pub username: String,
    pub title: String,
    pub started_at: String,
    /// Present once the live has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Watching now (0 once ended).
    pub viewers: u32,
    pub peak_viewers: u32,
}

impl LiveJson {
    pub fn new(live: &Live, viewers: u32) -> LiveJson {
        LiveJson {
            id: live.id.0,
            username: live.username.to_string(),
            title: live.title.clone(),
            started_at: rfc3339(live.started_at),
            ended_at: live.ended_at.map(rfc3339),
            viewers,
            peak_viewers: live.peak_viewers.max(viewers),
        }
    }
}

/// `POST /api/lives/{username}/token`.
#[derive(Debug, Serialize)]
pub struct MediaTokenJson {
    pub token: String,
    /// The media server's URL as browsers reach it (`MEDIA_PUBLIC_URL`).
    pub media_url: String,
    pub live_id: i64,
    /// `publish` or `watch`.
    pub role: privatehub_protocol::MediaRole,
    pub expires_at: String,
    /// For `RTCPeerConnection`'s `iceServers`: the TURN relay with a credential minted
    /// for this token (empty without `TURN_URLS`).
    pub ice_servers: Vec<privatehub_protocol::IceServer>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize)]
pub struct HealthJson {
    pub status: &'static str,
    pub database: &'static str,
}

/// Unix seconds as RFC 3339 UTC (`2026-11-25T12:00:00Z`).
pub fn rfc3339(unix_seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_072_000), "2025-11-25T12:00:00Z");
    }
}

/// `GET /api/me/stream-key` and `POST /api/me/stream-key/rotate`.
#[derive(Debug, Serialize)]
pub struct StreamKeyJson {
    pub stream_key: String,
    /// What to paste into OBS as the WHIP server.
    pub whip_url: String,
}
