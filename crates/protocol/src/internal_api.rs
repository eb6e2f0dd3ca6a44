//! The internal API between the app and the media server (`/internal/v1/...` on both).
//!
//! Both directions authenticate with a short-lived HS256 token signed with the secret
//! the services already share (`MEDIA_TOKEN_SECRET`), audience [`INTERNAL_AUDIENCE`]:
//! a media token cannot be replayed here, nor an internal token as a media token. The
//! token names its caller, so the app's endpoints accept only the media server and the
//! other way round, and the request path it was made for, so one seen in transit cannot
//! be replayed against another endpoint. Described with examples in `docs/protocol.md` ("Internal API").

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::media_token::{LiveId, MediaTokenError};

/// `aud` of every internal token.
pub const INTERNAL_AUDIENCE: &str = "privatehub-internal";
/// Lifetime of an internal token: each request signs a fresh one.
pub const INTERNAL_TOKEN_SECONDS: u64 = 60;
/// Clock skew tolerated between the two hosts.
const LEEWAY_SECONDS: u64 = 5;
/// Largest JSON body either side accepts on `/internal/`.
pub const MAX_INTERNAL_BODY_BYTES: usize = 64 * 1024;

/// Which service signed an internal token (its `iss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InternalCaller {
    #[serde(rename = "privatehub-app")]
    App,
    #[serde(rename = "privatehub-media")]
    Media,
}

#[derive(Debug, Serialize, Deserialize)]
struct InternalClaims {
    iss: InternalCaller,
    aud: String,
    iat: u64,
    exp: u64,
    /// The request path the token was made for (`/internal/v1/...`).
    path: String,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A fresh token for one request from `caller` to `path`.
pub fn issue_internal_token(
    caller: InternalCaller,
    secret: &[u8],
    path: &str,
) -> Result<String, MediaTokenError> {
    if secret.is_empty() {
        return Err(MediaTokenError::EmptySecret);
    }
    let now = now_unix();
    let claims = InternalClaims {
        iss: caller,
        aud: INTERNAL_AUDIENCE.to_owned(),
        iat: now,
        exp: now + INTERNAL_TOKEN_SECONDS,
        path: path.to_owned(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|error| MediaTokenError::Malformed(error.to_string()))
}

/// Checks an internal token from `expected` for a request to `path` (signature,
/// audience, issuer, path, expiry, and a lifetime no longer than an internal token's).
pub fn verify_internal_token(
    token: &str,
    secret: &[u8],
    expected: InternalCaller,
    path: &str,
) -> Result<(), MediaTokenError> {
    if secret.is_empty() {
        return Err(MediaTokenError::EmptySecret);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECONDS;
    validation.set_audience(&[INTERNAL_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<InternalClaims>(
        token,
        &DecodingKey::from_secret(secret),
        &validation,
    )
    .map_err(|error| match error.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => MediaTokenError::Expired,
        jsonwebtoken::errors::ErrorKind::InvalidSignature => MediaTokenError::BadSignature,
        _ => MediaTokenError::Malformed(error.to_string()),
    })?
    .claims;
    if claims.iss != expected {
        return Err(MediaTokenError::Malformed(
            "token from the wrong service".into(),
        ));
    }
    if claims.path != path {
        return Err(MediaTokenError::Malformed(
            "token made for another request".into(),
        ));
    }
    if claims.exp.saturating_sub(claims.iat) > INTERNAL_TOKEN_SECONDS + LEEWAY_SECONDS
        || claims.iat > now_unix() + LEEWAY_SECONDS
    {
        return Err(MediaTokenError::ImplausibleTimes(
            "not the lifetime of an internal token",
        ));
    }
    Ok(())
}

/// Database id of a user, as the internal API names it.
pub type UserIdNumber = i64;

/// Media → app, `POST /internal/v1/whip/authorize`: is this stream key valid? No side
/// effects.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipAuthorizeRequest {
    pub stream_key: String,
}

/// Answer to [`WhipAuthorizeRequest`] (200); 401 `invalid_stream_key` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhipAuthorized {
    pub user_id: UserIdNumber,
    pub username: String,
    /// Bumped by every rotation: a session holding an older one must end.
    pub key_generation: i64,
    /// The creator records their lives (absent from versions before recordings: yes).
    #[serde(default = "yes")]
    pub record: bool,
}

fn yes() -> bool {
    true
}

/// Media → app, `POST /internal/v1/whip/start`: the offer was accepted, start the
/// user's live (or return the current one). 401 `invalid_stream_key` if the key was
/// rotated since it was authorized.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipStartRequest {
    pub user_id: UserIdNumber,
    pub key_generation: i64,
}

/// Answer to [`WhipStartRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhipStarted {
    pub live_id: LiveId,
    pub title: String,
    /// The live was started by this request (false: it was already live).
    pub created: bool,
}

/// Why a WHIP publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhipEndReason {
    /// The client sent `DELETE`.
    Deleted,
    /// The connection was lost and no publisher came back within the grace period.
    ConnectionLost,
    /// The app withdrew it (stream key rotated, or the live ended in the app).
    Revoked,
    /// The live was started for an offer that then failed (nothing was published).
    SetupFailed,
}

/// Media → app, `POST /internal/v1/whip/ended`: end this live if it is still the
/// user's current one. Answer: [`WhipEndedResponse`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipEndedRequest {
    pub user_id: UserIdNumber,
    pub live_id: LiveId,
    pub reason: WhipEndReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhipEndedResponse {
    /// False when the live had already ended (or another one is current).
    pub ended: bool,
}

/// One WHIP publish the media server holds (publishing, or within its grace period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipSessionReport {
    pub user_id: UserIdNumber,
    pub live_id: LiveId,
    pub key_generation: i64,
}

/// Media → app every few seconds, `POST /internal/v1/whip/sync`: every WHIP publish
/// held now. The app ends WHIP-started lives nobody reports (a media server that
/// crashed), and answers which sessions must end (key rotated, live ended in the app).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipSyncRequest {
    pub sessions: Vec<WhipSessionReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhipSyncResponse {
    /// Lives whose WHIP sessions must end now.
    pub revoked: Vec<LiveId>,
}

/// Media → app, `GET /internal/v1/lives/{username}`: the user's current live, for WHEP.
/// 404 `not_live` or `user_not_found` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentLive {
    pub live_id: LiveId,
    pub username: String,
    pub title: String,
}

/// App → media, `POST /internal/v1/publishers/end`: end every WHIP publish of this user
/// holding a key generation older than `key_generation` (the key was rotated).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndPublishesRequest {
    pub user_id: UserIdNumber,
    pub key_generation: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndPublishesResponse {
    pub ended: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_caller() {
        let path = "/internal/v1/whip/sync";
        let token = issue_internal_token(InternalCaller::Media, b"secret", path).unwrap();
        assert_eq!(
            verify_internal_token(&token, b"secret", InternalCaller::Media, path),
            Ok(())
        );
        assert!(verify_internal_token(&token, b"secret", InternalCaller::App, path).is_err());
        assert!(
            verify_internal_token(
                &token,
                b"secret",
                InternalCaller::Media,
                "/internal/v1/whip/start"
            )
            .is_err(),
            "a token replayed against another endpoint"
        );
        assert_eq!(
            verify_internal_token(&token, b"other", InternalCaller::Media, path),
            Err(MediaTokenError::BadSignature)
        );
    }

    #[test]
    fn media_tokens_are_not_internal_tokens() {
        let claims = crate::MediaTokenClaims::new(
            LiveId(1),
            "alice",
            "alice",
            crate::MediaRole::Publish,
            now_unix(),
            60,
        );
        let media = crate::issue_media_token(&claims, b"secret").unwrap();
        assert!(verify_internal_token(&media, b"secret", InternalCaller::App, "/").is_err());
        let internal = issue_internal_token(InternalCaller::App, b"secret", "/").unwrap();
        assert!(crate::verify_media_token(&internal, b"secret").is_err());
    }
}
