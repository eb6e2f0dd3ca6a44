//! The HTTP API's JSON bodies: the types are `privatehub_protocol::app_api`'s (the one
//! crate that derives the wire types); here, their conversions from the app's database
//! types.

use privatehub_protocol::app_api::{LiveJson, UserJson};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::db::lives::Live;
use crate::db::users::User;

pub use privatehub_protocol::app_api::{
    CredentialsRequest, HealthJson, HistoryQuery, MediaTokenJson, StartLiveRequest, StreamKeyJson,
};

/// A signed-in user as the API shows it.
pub fn user_json(user: &User) -> UserJson {
    UserJson {
        username: user.username.to_string(),
        created_at: rfc3339(user.created_at),
    }
}

/// A live, current or past, with its viewers now.
pub fn live_json(live: &Live, viewers: u32) -> LiveJson {
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
