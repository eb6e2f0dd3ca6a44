//! `/api/videos/{id}`: a recording of a past live (a replay) to play, with the chat of
//! its live, and its deletion by its creator.
//!
//! The file itself is served by the media server: the answer carries its URL there with
//! a replay token the app signs (`privatehub_protocol::recordings`), valid for the
//! video's length plus an hour; the page fetches the answer again before it expires.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use privatehub_protocol::recordings::{
    MAX_REPLAY_TOKEN_SECONDS, RecordingId, RecordingsDeleteRequest, issue_replay_token,
};

use crate::auth::CurrentUser;
use crate::db::recordings::{CreatorDeletion, Recording};
use crate::db::{self, chat, recordings};
use crate::error::{InternalError, json_error};
use crate::settings::Settings;
use crate::state::AppState;
use privatehub_protocol::app_api::{ReplayChatJson, VideoJson};

/// How long a replay URL outlives the video's length: time to pause, seek and re-watch.
const REPLAY_URL_SLACK_SECONDS: u64 = 3600;
/// The chat beside a replay starts this long before the recording and ends this long
/// after it.
const CHAT_MARGIN_MS: i64 = 5_000;
/// Most chat messages sent with a replay.
const MAX_REPLAY_CHAT: i64 = 5_000;

/// Why a videos request failed.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// Malformed id, no such recording, or deleted.
    #[error("no such video")]
    NotFound,
    /// Only its creator may delete a video.
    #[error("only the creator of this video can delete it")]
    NotOwner,
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl ResponseError for VideoError {
    fn status_code(&self) -> StatusCode {
        match self {
            VideoError::NotFound => StatusCode::NOT_FOUND,
            VideoError::NotOwner => StatusCode::FORBIDDEN,
            VideoError::Internal(inner) => inner.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            VideoError::NotFound => "video_not_found",
            VideoError::NotOwner => "not_owner",
            VideoError::Internal(inner) => return inner.error_response(),
        };
        json_error(self.status_code(), code, &self.to_string())
    }
}

impl From<diesel::result::Error> for VideoError {
    fn from(error: diesel::result::Error) -> Self {
        VideoError::Internal(error.into())
    }
}

/// `GET /api/videos/{id}`: the video, a fresh URL to play it, and its live's chat.
pub async fn get_one(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, VideoError> {
    let id = RecordingId::parse(&path).map_err(|_| VideoError::NotFound)?;
    let (recording, messages) = db::run(&state.pool, move |connection| {
        let recording = recordings::find_visible(connection, &id)?.ok_or(VideoError::NotFound)?;
        let messages = chat::messages_between(
            connection,
            recording.live_id,
            recording.started_at_ms.saturating_sub(CHAT_MARGIN_MS),
            recording
                .started_at_ms
                .saturating_add(recording.duration_ms)
                .saturating_add(CHAT_MARGIN_MS),
            MAX_REPLAY_CHAT,
        )?;
        Ok::<_, VideoError>((recording, messages))
    })
    .await?;
    let (url, url_expires_at) = replay_url(&state.settings, &recording, now_unix()?)?;
    let body = VideoJson {
        id: recording.id,
        username: recording.username.to_string(),
        title: recording.title,
        started_at_ms: recording.started_at_ms,
        duration_ms: recording.duration_ms,
        state: recording.state,
        container: recording.container,
        mime_type: recording.container.mime_type().to_owned(),
        url,
        url_expires_at,
        chat: messages
            .into_iter()
            .map(|message| ReplayChatJson {
                id: message.id,
                username: message.username,
                body: message.body,
                sent_at_ms: message.sent_at_ms,
            })
            .collect(),
    };
    // The URL carries a token: no cache may keep it.
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body))
}

/// `DELETE /api/videos/{id}`: its creator deletes it. It is gone from the app at once;
/// the media server is asked to delete the file now, and by every sync answer until it
/// reports it deleted.
pub async fn delete(
    state: web::Data<AppState>,
    CurrentUser(user): CurrentUser,
    path: web::Path<String>,
) -> Result<HttpResponse, VideoError> {
    let id = RecordingId::parse(&path).map_err(|_| VideoError::NotFound)?;
    let creator = user.id;
    let now_ms = db::now_unix().saturating_mul(1000);
    let deleted = id.clone();
    let outcome = db::run(&state.pool, move |connection| {
        recordings::delete_by_creator(connection, &deleted, creator, now_ms)
            .map_err(InternalError::from)
    })
    .await?;
    match outcome {
        CreatorDeletion::Deleted => {}
        CreatorDeletion::NotFound => return Err(VideoError::NotFound),
        CreatorDeletion::NotOwner => return Err(VideoError::NotOwner),
    }
    tracing::info!(username = %user.username, recording = %id, "video deleted by its creator");
    let request = RecordingsDeleteRequest { ids: vec![id] };
    if let Err(error) = state
        .media_api
        .delete_recordings(state.settings.media_token_secret_bytes(), &request)
        .await
    {
        tracing::warn!(%error, "cannot reach the media server to delete a recording; the next sync answer asks again");
    }
    Ok(HttpResponse::NoContent().finish())
}

/// The recording's URL on the media server with a replay token, and when the token
/// expires (Unix seconds): the video's length plus [`REPLAY_URL_SLACK_SECONDS`].
pub fn replay_url(
    settings: &Settings,
    recording: &Recording,
    now_unix: u64,
) -> Result<(String, u64), InternalError> {
    let length = u64::try_from(recording.duration_ms.max(0))
        .unwrap_or(0)
        .div_ceil(1000);
    let ttl = length
        .saturating_add(REPLAY_URL_SLACK_SECONDS)
        .min(MAX_REPLAY_TOKEN_SECONDS);
    let token = issue_replay_token(
        &recording.id,
        settings.media_token_secret_bytes(),
        now_unix,
        ttl,
    )
    .map_err(|error| InternalError(format!("replay token: {error}")))?;
    let url = format!(
        "{}/recordings/{}.{}?token={token}",
        settings.media_http_base(),
        recording.id,
        recording.container.extension()
    );
    Ok((url, now_unix + ttl))
}

fn now_unix() -> Result<u64, InternalError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .map_err(|error| InternalError(format!("clock: {error}")))
}
