//! Recordings of lives (replays): their ids, what the media server reports of them to the
//! app, and the signed, expiring replay URL token the app hands to players.
//!
//! The media server records and stores; the app knows which recordings exist only from
//! the media server's reports (`POST /internal/v1/recordings/sync`, every few seconds
//! while something changed), and a browser fetches one from the media server with a
//! replay token the app signed. See `docs/protocol.md` ("Recordings").

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::media_token::{LiveId, MediaTokenError};

/// Id of one recording: 32 lowercase hex digits (128 random bits), chosen by the media
/// server. Also its file name there, so nothing else is ever accepted as one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordingId(String);

/// Why a string is not a [`RecordingId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a recording id is 32 lowercase hexadecimal digits")]
pub struct BadRecordingId;

impl RecordingId {
    pub const LEN: usize = 32;

    pub fn parse(text: &str) -> Result<Self, BadRecordingId> {
        let valid = text.len() == Self::LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(RecordingId(text.to_owned()))
        } else {
            Err(BadRecordingId)
        }
    }

    /// An id from 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        RecordingId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RecordingId {
    type Error = BadRecordingId;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        RecordingId::parse(&text)
    }
}

impl From<RecordingId> for String {
    fn from(id: RecordingId) -> String {
        id.0
    }
}

impl std::fmt::Display for RecordingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file format of a recording, chosen by the live's video codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingContainer {
    /// VP8 (or no video) + Opus.
    Webm,
    /// H.264 + Opus, fragmented MP4.
    Mp4,
}

impl RecordingContainer {
    pub fn extension(self) -> &'static str {
        match self {
            RecordingContainer::Webm => "webm",
            RecordingContainer::Mp4 => "mp4",
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            RecordingContainer::Webm => "video/webm",
            RecordingContainer::Mp4 => "video/mp4",
        }
    }
}

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Being written; what is written so far plays.
    Recording,
    /// Closed with its duration and seek index: plays and seeks to the end.
    Finished,
    /// Stopped early by a write error (disk full): plays up to where it stopped.
    Stopped,
    /// Deleted on the media server (retention, or asked to): gone for good.
    Deleted,
}

/// What the media server knows of one recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingReport {
    pub id: RecordingId,
    pub live_id: LiveId,
    /// When its first packet was written, milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// Media time written so far (the whole length once finished).
    pub duration_ms: i64,
    pub bytes: u64,
    pub container: RecordingContainer,
    pub state: RecordingState,
}

/// Media → app, `POST /internal/v1/recordings/sync`: recordings that changed since the
/// last accepted sync (all of them after the media server starts).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsSyncRequest {
    pub recordings: Vec<RecordingReport>,
}

/// Most reports in one [`RecordingsSyncRequest`]; the rest go in the next one.
pub const MAX_RECORDINGS_PER_SYNC: usize = 200;

/// Answer to [`RecordingsSyncRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingsSyncResponse {
    /// Recordings their creator deleted in the app that the media server may still hold
    /// (repeated until a report says `deleted`).
    pub delete: Vec<RecordingId>,
}

/// App → media, `POST /internal/v1/recordings/delete`: delete these now (answer 204).
/// Also carried by every sync answer, so a call that fails is made good within seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsDeleteRequest {
    pub ids: Vec<RecordingId>,
}

/// `aud` of a replay token: neither a media token nor an internal token.
pub const REPLAY_AUDIENCE: &str = "privatehub-replay";
/// Longest a replay token may be valid (the app grants the video's length plus an hour).
pub const MAX_REPLAY_TOKEN_SECONDS: u64 = 48 * 3600;
const REPLAY_LEEWAY_SECONDS: u64 = 30;

/// The claims of a replay token: who may fetch which recording until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayClaims {
    /// The recording (`rec`).
    pub rec: RecordingId,
    pub iat: u64,
    pub exp: u64,
    pub aud: String,
}

/// Signs a replay token for `recording`, valid from `now_unix` for `ttl_seconds`
/// (capped at [`MAX_REPLAY_TOKEN_SECONDS`]).
pub fn issue_replay_token(
    recording: &RecordingId,
    secret: &[u8],
    now_unix: u64,
    ttl_seconds: u64,
) -> Result<String, MediaTokenError> {
    if secret.is_empty() {
        return Err(MediaTokenError::EmptySecret);
    }
    let claims = ReplayClaims {
        rec: recording.clone(),
        iat: now_unix,
        exp: now_unix + ttl_seconds.min(MAX_REPLAY_TOKEN_SECONDS),
        aud: REPLAY_AUDIENCE.to_owned(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|error| MediaTokenError::Malformed(error.to_string()))
}

/// Checks a replay token (signature, audience, expiry, plausible lifetime) and that it
/// was made for `recording`.
pub fn verify_replay_token(
    token: &str,
    secret: &[u8],
    recording: &RecordingId,
    now_unix: u64,
) -> Result<(), MediaTokenError> {
    if secret.is_empty() {
        return Err(MediaTokenError::EmptySecret);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.set_audience(&[REPLAY_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    let claims =
        jsonwebtoken::decode::<ReplayClaims>(token, &DecodingKey::from_secret(secret), &validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => MediaTokenError::BadSignature,
                _ => MediaTokenError::Malformed(error.to_string()),
            })?
            .claims;
    if claims.exp <= now_unix {
        return Err(MediaTokenError::Expired);
    }
    if claims.iat > now_unix + REPLAY_LEEWAY_SECONDS
        || claims.exp.saturating_sub(claims.iat) > MAX_REPLAY_TOKEN_SECONDS + REPLAY_LEEWAY_SECONDS
    {
        return Err(MediaTokenError::ImplausibleTimes(
            "not the lifetime of a replay token",
        ));
    }
    if &claims.rec != recording {
        return Err(MediaTokenError::Malformed(
            "token made for another recording".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-enough-length-000000";

    fn id(c: char) -> RecordingId {
        RecordingId::parse(&c.to_string().repeat(32)).unwrap()
    }

    #[test]
    fn ids_are_exactly_32_lowercase_hex_digits() {
        assert!(RecordingId::parse(&"0123456789abcdef".repeat(2)).is_ok());
        for bad in [
            "",
            "../../etc/passwd",
            &"A".repeat(32),
            &"a".repeat(31),
            &"a".repeat(33),
            &format!("{}/", "a".repeat(31)),
            &format!("{}.", "a".repeat(31)),
        ] {
            assert_eq!(RecordingId::parse(bad), Err(BadRecordingId), "{bad}");
        }
        assert_eq!(
            RecordingId::from_random([0xab; 16]).as_str(),
            "ab".repeat(16)
        );
        assert!(serde_json::from_str::<RecordingId>("\"../x\"").is_err());
    }

    #[test]
    fn a_replay_token_opens_its_recording_only_until_it_expires() {
        let token = issue_replay_token(&id('a'), SECRET, 1_000, 60).unwrap();
        assert_eq!(verify_replay_token(&token, SECRET, &id('a'), 1_030), Ok(()));
        assert_eq!(
            verify_replay_token(&token, SECRET, &id('a'), 1_060),
            Err(MediaTokenError::Expired)
        );
        assert!(verify_replay_token(&token, SECRET, &id('b'), 1_030).is_err());
        assert_eq!(
            verify_replay_token(
                &token,
                b"another-secret-of-enough-length-0000",
                &id('a'),
                1_030
            ),
            Err(MediaTokenError::BadSignature)
        );
        assert!(verify_replay_token("not.a.token", SECRET, &id('a'), 1_030).is_err());
    }

    #[test]
    fn media_and_internal_tokens_are_not_replay_tokens() {
        let claims = crate::MediaTokenClaims::new(
            LiveId(1),
            "alice",
            "alice",
            crate::MediaRole::Watch,
            1_000,
            60,
        );
        let media = crate::issue_media_token(&claims, SECRET).unwrap();
        assert!(verify_replay_token(&media, SECRET, &id('a'), 1_030).is_err());
    }

    #[test]
    fn lifetimes_are_capped() {
        let token = issue_replay_token(&id('a'), SECRET, 1_000, u64::MAX / 4).unwrap();
        let far = 1_000 + MAX_REPLAY_TOKEN_SECONDS + 1;
        assert_eq!(
            verify_replay_token(&token, SECRET, &id('a'), far),
            Err(MediaTokenError::Expired)
        );
    }
}
