//! The signed token the app hands a browser so the media server knows who may publish
//! or watch which live. HS256 JWT signed with the secret both services share
//! (`MEDIA_TOKEN_SECRET`). Signing and verification live here so both services use the
//! same code.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated between the app that signs and the media server that verifies.
const EXPIRY_LEEWAY_SECONDS: u64 = 5;
/// Longest lifetime a token may claim: the app's largest `MEDIA_TOKEN_TTL_SECONDS`. A
/// token claiming more was not issued by a correctly configured app.
const MAX_LIFETIME_SECONDS: u64 = 86_400;
/// Expected `iss` claim: refuses JWTs signed with the same secret for another purpose.
const ISSUER: &str = "privatehub-app";
/// Expected `aud` claim.
const AUDIENCE: &str = "privatehub-media";

/// Shortest accepted `MEDIA_TOKEN_SECRET`, in bytes: HS256 wants a 256-bit key.
pub const MIN_MEDIA_TOKEN_SECRET_BYTES: usize = 32;

/// Secrets printed in our example files or too obvious to be secret: anyone could sign
/// tokens with them. Compared ignoring case and surrounding spaces.
pub const PUBLISHED_EXAMPLE_SECRETS: &[&str] = &[
    "change-me-to-the-output-of-openssl-rand-hex-32",
    "changeme",
    "change-me",
    "secret",
    "password",
];

/// What is wrong with a `MEDIA_TOKEN_SECRET`, or `None` if it is usable. The message
/// reads after the variable name ("MEDIA_TOKEN_SECRET: ...") and says how to fix it.
pub fn media_token_secret_problem(secret: &str) -> Option<&'static str> {
    let secret = secret.trim();
    if PUBLISHED_EXAMPLE_SECRETS
        .iter()
        .any(|example| example.eq_ignore_ascii_case(secret))
    {
        return Some(
            "is a published example value, anyone could forge media tokens with it; \
             generate one with `openssl rand -hex 32` and set the same value in app.env and media.env",
        );
    }
    if secret.len() < MIN_MEDIA_TOKEN_SECRET_BYTES {
        return Some(
            "must be at least 32 bytes; generate one with `openssl rand -hex 32` \
             and set the same value in app.env and media.env",
        );
    }
    None
}

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

impl MediaRole {
    /// The role's name on the wire (`publish`, `watch`).
    pub fn as_str(self) -> &'static str {
        match self {
            MediaRole::Publish => "publish",
            MediaRole::Watch => "watch",
        }
    }
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
    /// Publish: the media server records the live (the creator's setting; tokens of
    /// versions before recordings lack it and mean yes).
    #[serde(default = "yes")]
    pub record: bool,
}

fn yes() -> bool {
    true
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
            record: true,
        }
    }

    /// The same claims with recording switched on or off.
    pub fn with_record(mut self, record: bool) -> Self {
        self.record = record;
        self
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
    /// Validly signed, but its times are impossible for a token the app issued: issued
    /// in the future, or valid for longer than the app ever grants.
    #[error("the media token's validity period is not plausible: {0}")]
    ImplausibleTimes(&'static str),
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

/// Checks signature, algorithm, issuer, audience and expiry against the system clock,
/// and that `iat`/`exp` describe a token the app could have issued.
pub fn verify_media_token(token: &str, secret: &[u8]) -> Result<MediaTokenClaims, MediaTokenError> {
    let claims = decode_media_token(token, secret)?;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    check_times(&claims, now_unix)?;
    Ok(claims)
}

/// `exp` itself is checked by `jsonwebtoken`; this refuses what a signer with a sane
/// clock and TTL would never produce (a leaked secret or a misconfigured signer).
fn check_times(claims: &MediaTokenClaims, now_unix: u64) -> Result<(), MediaTokenError> {
    let latest_iat = now_unix.saturating_add(EXPIRY_LEEWAY_SECONDS);
    let longest = MAX_LIFETIME_SECONDS + EXPIRY_LEEWAY_SECONDS;
    if claims.iat > latest_iat {
        return Err(MediaTokenError::ImplausibleTimes("issued in the future"));
    }
    if claims.exp < claims.iat {
        return Err(MediaTokenError::ImplausibleTimes(
            "expires before it was issued",
        ));
    }
    if claims.exp - claims.iat > longest {
        return Err(MediaTokenError::ImplausibleTimes(
            "valid for longer than 24 hours",
        ));
    }
    if claims.exp > now_unix.saturating_add(longest) {
        return Err(MediaTokenError::ImplausibleTimes(
            "expires more than 24 hours from now",
        ));
    }
    Ok(())
}

fn decode_media_token(token: &str, secret: &[u8]) -> Result<MediaTokenClaims, MediaTokenError> {
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

    fn verify_claims(claims: &MediaTokenClaims) -> Result<MediaTokenClaims, MediaTokenError> {
        verify_media_token(&issue_media_token(claims, b"secret").unwrap(), b"secret")
    }

    #[test]
    fn tokens_issued_in_the_future_are_refused() {
        let now = now_unix();
        // Within the clock-skew leeway: accepted.
        assert!(verify_claims(&claims(now + EXPIRY_LEEWAY_SECONDS, 60)).is_ok());
        assert_eq!(
            verify_claims(&claims(now + 60, 60)),
            Err(MediaTokenError::ImplausibleTimes("issued in the future"))
        );
    }

    #[test]
    fn lifetimes_beyond_the_apps_maximum_are_refused() {
        let now = now_unix();
        // The app's longest TTL (MEDIA_TOKEN_TTL_SECONDS=86400) is accepted.
        assert!(verify_claims(&claims(now, MAX_LIFETIME_SECONDS)).is_ok());
        assert!(verify_claims(&claims(now, MAX_LIFETIME_SECONDS + EXPIRY_LEEWAY_SECONDS)).is_ok());
        let century = 100 * 365 * 86_400;
        assert_eq!(
            verify_claims(&claims(now, century)),
            Err(MediaTokenError::ImplausibleTimes(
                "valid for longer than 24 hours"
            ))
        );
        assert!(matches!(
            verify_claims(&claims(
                now,
                MAX_LIFETIME_SECONDS + EXPIRY_LEEWAY_SECONDS + 1
            )),
            Err(MediaTokenError::ImplausibleTimes(_))
        ));
        // An old `iat` does not buy a far `exp`.
        let mut stretched = claims(now - 3600, 60);
        stretched.exp = now + 2 * MAX_LIFETIME_SECONDS;
        assert!(matches!(
            verify_claims(&stretched),
            Err(MediaTokenError::ImplausibleTimes(_))
        ));
        let mut backwards = claims(now, 60);
        backwards.iat = now + 2;
        backwards.exp = now + 1;
        assert_eq!(
            verify_claims(&backwards),
            Err(MediaTokenError::ImplausibleTimes(
                "expires before it was issued"
            ))
        );
    }

    #[test]
    fn check_times_bounds_exp_against_now() {
        let now = 1_000_000;
        let far = MediaTokenClaims {
            iat: now + 5,
            exp: now + 5 + MAX_LIFETIME_SECONDS + EXPIRY_LEEWAY_SECONDS,
            ..claims(now, 60)
        };
        assert_eq!(
            check_times(&far, now),
            Err(MediaTokenError::ImplausibleTimes(
                "expires more than 24 hours from now"
            ))
        );
        assert_eq!(check_times(&far, now + 5), Ok(()));
    }

    #[test]
    fn short_and_example_secrets_have_a_problem() {
        let message = |secret: &str| media_token_secret_problem(secret).unwrap_or("");
        assert!(message("").contains("at least 32 bytes"));
        assert!(message("changeme").contains("example"));
        assert!(message("secret").contains("example"));
        assert!(message(&"x".repeat(31)).contains("at least 32 bytes"));
        assert!(
            message("change-me-to-the-output-of-openssl-rand-hex-32").contains("example"),
            "the value in deploy/*.env.example"
        );
        assert!(message("  CHANGE-ME-to-the-output-of-openssl-rand-hex-32 ").contains("example"));
        assert!(message(&"x".repeat(31)).contains("openssl rand -hex 32"));
        assert_eq!(media_token_secret_problem(&"x".repeat(32)), None);
        assert_eq!(
            media_token_secret_problem(
                "3f9a1c0e5b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf0246a"
            ),
            None
        );
    }
}
