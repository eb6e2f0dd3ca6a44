//! `/internal/v1/...`: the internal API the media server calls (see `docs/protocol.md`,
//! "Internal API" and "Recordings"). Authenticated by an internal token from the media
//! server, never by cookies, so these paths skip the CSRF check; nginx does not expose
//! them.

use std::future::{Ready, ready};
use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use privatehub_protocol::internal_api::{
    CurrentLive, InternalCaller, WhipAuthorizeRequest, WhipAuthorized, WhipEndedRequest,
    WhipEndedResponse, WhipStartRequest, WhipStarted, WhipSyncRequest, WhipSyncResponse,
    verify_internal_token,
};
use privatehub_protocol::recordings::{
    MAX_RECORDINGS_PER_SYNC, RecordingsSyncRequest, RecordingsSyncResponse,
};

use crate::db::lives::LiveSource;
use crate::db::users::UserId;
use crate::db::{self, lives, recordings, stream_keys, users};
use crate::domain::LiveTitle;
use crate::error::{InternalError, json_error};
use crate::routes::lives::{LiveError, begin_live, current_live_of, finish_live};
use crate::state::AppState;
use crate::stream_keys::lookup_hash;

/// Why an internal request was refused.
#[derive(Debug, thiserror::Error)]
pub enum InternalApiError {
    #[error("missing or invalid internal token")]
    Unauthenticated,
    #[error("invalid stream key")]
    InvalidStreamKey,
    #[error(
        "the live was taken over in the browser or just ended on the site: stop streaming in OBS, or wait a minute"
    )]
    TakenOver,
    #[error("at most {MAX_RECORDINGS_PER_SYNC} recordings per sync")]
    TooManyRecordings,
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl ResponseError for InternalApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            InternalApiError::Unauthenticated | InternalApiError::InvalidStreamKey => {
                StatusCode::UNAUTHORIZED
            }
            InternalApiError::TakenOver => StatusCode::CONFLICT,
            InternalApiError::TooManyRecordings => StatusCode::BAD_REQUEST,
            InternalApiError::Live(inner) => inner.status_code(),
            InternalApiError::Internal(inner) => inner.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            InternalApiError::Unauthenticated => {
                json_error(self.status_code(), "unauthenticated", &self.to_string())
            }
            InternalApiError::InvalidStreamKey => {
                json_error(self.status_code(), "invalid_stream_key", &self.to_string())
            }
            InternalApiError::TakenOver => {
                json_error(self.status_code(), "live_taken_over", &self.to_string())
            }
            InternalApiError::TooManyRecordings => {
                json_error(self.status_code(), "too_many_recordings", &self.to_string())
            }
            InternalApiError::Live(inner) => inner.error_response(),
            InternalApiError::Internal(inner) => inner.error_response(),
        }
    }
}

impl From<diesel::result::Error> for InternalApiError {
    fn from(error: diesel::result::Error) -> Self {
        InternalApiError::Internal(error.into())
    }
}

/// A request carrying a valid internal token from the media server.
pub struct FromMediaServer;

impl FromRequest for FromMediaServer {
    type Error = InternalApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let verdict = (|| {
            let state = request.app_data::<web::Data<AppState>>()?;
            let header = request
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)?
                .to_str()
                .ok()?;
            let token = header.strip_prefix("Bearer ")?;
            verify_internal_token(
                token.trim(),
                state.settings.media_token_secret_bytes(),
                InternalCaller::Media,
                request.path(),
            )
            .ok()
        })();
        ready(
            verdict
                .map(|()| FromMediaServer)
                .ok_or(InternalApiError::Unauthenticated),
        )
    }
}

/// `POST /internal/v1/whip/authorize`: who owns this stream key. No side effects.
pub async fn whip_authorize(
    _caller: FromMediaServer,
    state: web::Data<AppState>,
    body: web::Json<WhipAuthorizeRequest>,
) -> Result<HttpResponse, InternalApiError> {
    let presented = body.into_inner().stream_key;
    let hash = lookup_hash(&presented);
    let found = db::run(&state.pool, move |connection| {
        let Some((stored, username)) = stream_keys::find_by_hash(connection, &hash)? else {
            return Ok(None);
        };
        let record = users::find_by_id(connection, UserId(stored.user_id))?
            .is_some_and(|user| user.record_lives);
        Ok::<_, InternalError>(Some((stored, username, record)))
    })
    .await?;
    let Some((stored, username, record)) = found else {
        return Err(InternalApiError::InvalidStreamKey);
    };
    // The hash found the row; the key itself is what must match, in constant time.
    let user = UserId(stored.user_id);
    let key = match state.stream_keys.open(user, &stored.key_sealed) {
        Ok(key) => key,
        Err(error) => {
            // The client can do nothing but get a new key: say so, as for any bad key.
            tracing::error!(%error, user_id = user.0, "a stored stream key cannot be opened; the user must rotate it");
            return Err(InternalApiError::InvalidStreamKey);
        }
    };
    if !key.matches(&presented) {
        return Err(InternalApiError::InvalidStreamKey);
    }
    Ok(HttpResponse::Ok().json(WhipAuthorized {
        record,
        user_id: user.0,
        username: username.to_string(),
        key_generation: stored.generation,
    }))
}

/// `POST /internal/v1/whip/start`: the user's live, started now if it is not live,
/// titled from their last live. Refused if the key was rotated after `authorize`.
pub async fn whip_start(
    _caller: FromMediaServer,
    state: web::Data<AppState>,
    body: web::Json<WhipStartRequest>,
) -> Result<HttpResponse, InternalApiError> {
    let request = body.into_inner();
    let user = UserId(request.user_id);
    let (stored, last_title, current) = db::run(&state.pool, move |connection| {
        let stored = stream_keys::find_by_user(connection, user)?;
        let title = lives::last_title(connection, user)?;
        let current = lives::find_current_by_user(connection, user)?.map(|live| live.id);
        Ok::<_, InternalError>((stored, title, current))
    })
    .await?;
    if stored.is_none_or(|stored| stored.generation != request.key_generation) {
        return Err(InternalApiError::InvalidStreamKey);
    }
    if state.whip_lives.is_held(user, current, Instant::now()) {
        return Err(InternalApiError::TakenOver);
    }
    let username = user_name(&state, user).await?;
    let title = last_title
        .and_then(|title| LiveTitle::parse(&title).ok())
        .unwrap_or_else(|| LiveTitle::default_for(&username));
    let (live, created) = begin_live(&state, user, title, LiveSource::Whip).await?;
    state.whip_lives.reported(live.id, Instant::now());
    Ok(HttpResponse::Ok().json(WhipStarted {
        live_id: live.id,
        title: live.title,
        created,
    }))
}

async fn user_name(state: &AppState, user: UserId) -> Result<String, InternalApiError> {
    let found = db::run(&state.pool, move |connection| {
        crate::db::users::find_by_id(connection, user).map_err(InternalError::from)
    })
    .await?;
    found
        .map(|user| user.username.to_string())
        .ok_or(InternalApiError::InvalidStreamKey)
}

/// `POST /internal/v1/whip/ended`: the WHIP publish of this live ended for good.
pub async fn whip_ended(
    _caller: FromMediaServer,
    state: web::Data<AppState>,
    body: web::Json<WhipEndedRequest>,
) -> Result<HttpResponse, InternalApiError> {
    let request = body.into_inner();
    let ended = finish_live(&state, UserId(request.user_id), Some(request.live_id)).await?;
    state.whip_lives.forget(request.live_id);
    if ended.is_some() {
        tracing::info!(live_id = %request.live_id, reason = ?request.reason, "WHIP publish ended the live");
    }
    Ok(HttpResponse::Ok().json(WhipEndedResponse {
        ended: ended.is_some(),
    }))
}

/// `POST /internal/v1/whip/sync`: every WHIP publish the media server holds. Answers
/// the ones that must end: key rotated since, or the live is no longer current.
pub async fn whip_sync(
    _caller: FromMediaServer,
    state: web::Data<AppState>,
    body: web::Json<WhipSyncRequest>,
) -> Result<HttpResponse, InternalApiError> {
    let sessions = body.into_inner().sessions;
    let now = Instant::now();
    for session in &sessions {
        state.whip_lives.reported(session.live_id, now);
    }
    let revoked = db::run(&state.pool, move |connection| {
        let mut revoked = Vec::new();
        for session in sessions {
            let user = UserId(session.user_id);
            let generation = stream_keys::find_by_user(connection, user)?.map(|k| k.generation);
            let current = lives::find_current_by_user(connection, user)?.map(|l| l.id);
            if generation != Some(session.key_generation) || current != Some(session.live_id) {
                revoked.push(session.live_id);
            }
        }
        Ok::<_, InternalError>(revoked)
    })
    .await?;
    Ok(HttpResponse::Ok().json(WhipSyncResponse { revoked }))
}

/// `POST /internal/v1/recordings/sync`: recordings that changed on the media server.
/// Stores them (a report of a live unknown here is skipped) and answers the recordings
/// their creators deleted that the media server has not reported deleted yet.
pub async fn recordings_sync(
    _caller: FromMediaServer,
    state: web::Data<AppState>,
    body: web::Json<RecordingsSyncRequest>,
) -> Result<HttpResponse, InternalApiError> {
    let reports = body.into_inner().recordings;
    if reports.len() > MAX_RECORDINGS_PER_SYNC {
        return Err(InternalApiError::TooManyRecordings);
    }
    let now_ms = db::now_unix().saturating_mul(1000);
    let limit = i64::try_from(MAX_RECORDINGS_PER_SYNC).unwrap_or(i64::MAX);
    let (skipped, delete) = db::run(&state.pool, move |connection| {
        let skipped = recordings::store_reports(connection, &reports, now_ms)?;
        let delete = recordings::pending_deletions(connection, limit)?;
        Ok::<_, InternalError>((skipped, delete))
    })
    .await?;
    for report in skipped {
        tracing::warn!(recording = %report.id, live_id = %report.live_id, "a recording of a live this app does not know: skipped");
    }
    Ok(HttpResponse::Ok().json(RecordingsSyncResponse { delete }))
}

/// `GET /internal/v1/lives/{username}`: the user's current live (for WHEP).
pub async fn current_live(
    _caller: FromMediaServer,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, InternalApiError> {
    let live = current_live_of(&state, &path).await?;
    Ok(HttpResponse::Ok().json(CurrentLive {
        live_id: live.id,
        username: live.username.to_string(),
        title: live.title,
    }))
}
