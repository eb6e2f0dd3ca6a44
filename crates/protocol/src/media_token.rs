//! The signed token the app hands a browser so the media server knows who may publish
//! or watch which live. HS256 JWT signed with the secret both services share
//! (`MEDIA_TOKEN_SECRET`). Signing and verification live here so both services use the
//! same code.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated between the app that signs and the media server that verifies.
const EXPIRY_LEEWAY_SECONDS: u64 = 5;
/// Expected `iss` claim: refuses JWTs signed with the same secret for another purpose.
const ISSUER: &str = "privatehub-app";
/// Expected `aud` claim.
const AUDIENCE: &str = "privatehub-media";

/// Database id of a live (one broadcast session). The media server keys rooms by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LiveId(pub i64);

impl std::fmt::Display for LiveId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the bearer of a media token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaRole {
    /// Send camera and microphone into the live. Only the live's owner gets this.
    Publish,
    /// Receive the live's tracks.
    Watch,
}

/// The claims inside a media token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaTokenClaims {
    /// The live this token is for.
    pub live_id: LiveId,
    /// Username of the live's owner (the broadcaster).
    pub channel: String,
    /// Who holds the token: a username, or `anon:<random>` for a signed-out viewer.
    pub sub: String,
    /// Publish or watch.
    pub role: MediaRole,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Always [`ISSUER`].
    #[serde(default)]
    pub iss: String,
    /// Always [`AUDIENCE`].
    #[serde(default)]
    pub aud: String,
}

impl MediaTokenClaims {
    /// Claims valid from `now_unix` for `ttl_seconds`.
    pub fn new(
        live_id: LiveId,
        channel: impl Into<String>,
        subject: impl Into<String>,
        role: MediaRole,
        now_unix: u64,
        ttl_seconds: u64,
    ) -> Self {
        MediaTokenClaims {
            live_id,
            channel: channel.into(),
            sub: subject.into(),
            role,
            iat: now_unix,
            exp: now_unix + ttl_seconds,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        }
    }
}

/// Why a media token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaTokenError {
    /// The token's lifetime is over.
    #[error("the media token has expired")]
    Expired,
    /// The signature does not match the shared secret (forged, or secrets differ).
    #[error("the media token signature is invalid")]
    BadSignature,
    /// Not a JWT, wrong algorithm, or missing/invalid claims.
    #[error("the media token is malformed: {0}")]
    Malformed(String),
    /// The secret is empty; refusing to sign or verify with it.
    #[error("the media token secret is empty")]
    EmptySecret,
}

/// Signs `claims` with `secret` (HS256).
pub fn issue_media_token(
    claims: &MediaTokenClaims,
    secret: &[u8],
) -> Result<String, MediaTokenError> {
    if secret.is_empty() {
        return Err(MediaTokenError::EmptySecret);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|error| MediaTokenError::Malformed(error.to_string()))
}

/// Checks signature, algorithm, issuer, audience and expiry against the system clock.
pub fn verify_media_token(token: &str, secret: &[u8]) -> Result<MediaTokenClaims, MediaTokenError> {
    if secret.is_empty() {
        return Err(MediaTokenError::EmptySecret);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = EXPIRY_LEEWAY_SECONDS;
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<MediaTokenClaims>(token, &DecodingKey::from_secret(secret), &validation)
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => MediaTokenError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => MediaTokenError::BadSignature,
            _ => MediaTokenError::Malformed(error.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_unix() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(now: u64, ttl: u64) -> MediaTokenClaims {
        MediaTokenClaims::new(LiveId(7), "alice", "bob", MediaRole::Watch, now, ttl)
    }

    #[test]
    fn round_trip_keeps_every_claim() {
        let original = claims(now_unix(), 60);
        let token = issue_media_token(&original, b"secret").unwrap();
        assert_eq!(verify_media_token(&token, b"secret").unwrap(), original);
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        let token = issue_media_token(&claims(now_unix(), 60), b"secret").unwrap();
        assert_eq!(
            verify_media_token(&token, b"other"),
            Err(MediaTokenError::BadSignature)
        );
    }

    #[test]
    fn expired_token_is_refused() {
        let token = issue_media_token(&claims(now_unix() - 3600, 60), b"secret").unwrap();
        assert_eq!(
            verify_media_token(&token, b"secret"),
            Err(MediaTokenError::Expired)
        );
    }

    #[test]
    fn tampered_role_is_refused() {
        let token = issue_media_token(&claims(now_unix(), 60), b"secret").unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        // Re-encode the payload with role=publish but keep the old signature.
        let forged = MediaTokenClaims {
            role: MediaRole::Publish,
            ..claims(now_unix(), 60)
        };
        let forged_token = issue_media_token(&forged, b"attacker").unwrap();
        parts[1] = forged_token.split('.').nth(1).unwrap().to_owned();
        assert_eq!(
            verify_media_token(&parts.join("."), b"secret"),
            Err(MediaTokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_and_empty_secret_are_refused() {
        assert!(matches!(
            verify_media_token("not-a-jwt", b"secret"),
            Err(MediaTokenError::Malformed(_))
        ));
        assert_eq!(
            issue_media_token(&claims(now_unix(), 60), b""),
            Err(MediaTokenError::EmptySecret)
        );
    }

    #[test]
    fn token_for_another_audience_is_refused() {
        let mut other = claims(now_unix(), 60);
        other.aud = "someone-else".into();
        let token = issue_media_token(&other, b"secret").unwrap();
        assert!(matches!(
            verify_media_token(&token, b"secret"),
            Err(MediaTokenError::Malformed(_))
        ));
    }
}
