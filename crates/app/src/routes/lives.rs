//! `/api/lives/*` and `/api/users/{username}/lives`: going live, ending, listing,
//! history, and media tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use privatehub_protocol::app_socket::LiveSummary;
use privatehub_protocol::{LiveId, MediaRole, MediaTokenClaims, issue_media_token};
use rand::RngCore;

use super::json::{HistoryQuery, MediaTokenJson, StartLiveRequest, live_json, rfc3339};
use crate::auth::{CurrentUser, MaybeUser};
use crate::db::lives::LiveSource;
use crate::db::users::UserId;
use crate::db::{self, lives, users};
use crate::domain::{LiveTitle, LiveTitleError, Username};
use crate::error::{InternalError, JsonObject, json_error};
use crate::settings::hex;
use crate::state::AppState;
use privatehub_protocol::app_api::LiveJson;

/// Default and largest page of `GET /api/users/{username}/lives`.
const HISTORY_DEFAULT_LIMIT: u16 = 20;
const HISTORY_MAX_LIMIT: u16 = 100;

/// Why a lives request failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The title breaks the rules.
    #[error("{0}")]
    InvalidTitle(#[from] LiveTitleError),
    /// No account has this name.
    #[error("no such user")]
    UserNotFound,
    /// The user exists but is not live now.
    #[error("this user is not live")]
    NotLive,
    /// `stop` while not live.
    #[error("you are not live")]
    AlreadyStopped,
    /// `limit` outside 1..=100.
    #[error("limit must be between 1 and {HISTORY_MAX_LIMIT}")]
    InvalidLimit,
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl ResponseError for LiveError {
    fn status_code(&self) -> StatusCode {
        match self {
            LiveError::InvalidTitle(_) | LiveError::InvalidLimit => StatusCode::BAD_REQUEST,
            LiveError::UserNotFound | LiveError::NotLive => StatusCode::NOT_FOUND,
            LiveError::AlreadyStopped => StatusCode::CONFLICT,
            LiveError::Internal(inner) => inner.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            LiveError::InvalidTitle(_) => "invalid_title",
            LiveError::InvalidLimit => "invalid_query",
            LiveError::UserNotFound => "user_not_found",
            LiveError::NotLive | LiveError::AlreadyStopped => "not_live",
            LiveError::Internal(inner) => return inner.error_response(),
        };
        json_error(self.status_code(), code, &self.to_string())
    }
}

/// `POST /api/lives/start` `{"title"?}`: 201 with the new live, or 200 with the
/// current one if already live (the title is then left unchanged).
pub async fn start(
    state: web::Data<AppState>,
    CurrentUser(user): CurrentUser,
    body: JsonObject<StartLiveRequest>,
) -> Result<HttpResponse, LiveError> {
    let title = match body
        .into_inner()
        .title
        .filter(|title| !title.trim().is_empty())
    {
        Some(raw) => LiveTitle::parse(&raw)?,
        None => LiveTitle::default_for(user.username.as_str()),
    };
    let (live, created) = begin_live(&state, user.id, title, LiveSource::Browser).await?;
    let body = live_json(&live, state.viewers.current(live.id));
    if created {
        Ok(HttpResponse::Created().json(body))
    } else {
        Ok(HttpResponse::Ok().json(body))
    }
}

/// Starts the user's live (or returns the current one, now owned by `source`) and,
/// when it is new, opens its chat room and tells the home pages.
pub(crate) async fn begin_live(
    state: &AppState,
    user_id: UserId,
    title: LiveTitle,
    source: LiveSource,
) -> Result<(lives::Live, bool), InternalError> {
    let now = db::now_unix();
    let (live, created) = db::run(&state.pool, move |connection| {
        lives::start_or_get_current(connection, user_id, &title, source, now)
            .map_err(InternalError::from)
    })
    .await?;
    if !created && live.source == LiveSource::Whip && source == LiveSource::Browser {
        state.whip_lives.hold_while_current(user_id, live.id);
    }
    if created {
        tracing::info!(username = %live.username, live_id = %live.id, ?source, "live started");
        state.chat.live_started(
            live.username.clone(),
            LiveSummary {
                live_id: live.id,
                title: live.title.clone(),
                started_at_ms: live.started_at.saturating_mul(1000),
            },
        );
    }
    Ok((live, created))
}

/// `POST /api/lives/stop`: ends the caller's live; 409 `not_live` if there is none.
pub async fn stop(
    state: web::Data<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<HttpResponse, LiveError> {
    let live = finish_live(&state, user.id, None)
        .await?
        .ok_or(LiveError::AlreadyStopped)?;
    if live.source == LiveSource::Whip {
        // OBS, cut off by the end, would reconnect and start a new live at once.
        state
            .whip_lives
            .hold_after_end(user.id, std::time::Instant::now());
    }
    Ok(HttpResponse::Ok().json(live_json(&live, 0)))
}

/// Ends the user's current live (only if it is `only`, when given): records its peak
/// audience, closes its chat room, tells the home pages. `None` if nothing was ended.
pub(crate) async fn finish_live(
    state: &AppState,
    user_id: UserId,
    only: Option<LiveId>,
) -> Result<Option<lives::Live>, InternalError> {
    let viewers = state.viewers.clone();
    let now = db::now_unix();
    let ended = db::run(&state.pool, move |connection| {
        // Peek at the id first so the in-memory peak is written with the row.
        let Some(current) = lives::find_current_by_user(connection, user_id)? else {
            return Ok(None);
        };
        if only.is_some_and(|only| only != current.id) {
            return Ok(None);
        }
        let peak = viewers.peak(current.id);
        lives::end_current(connection, user_id, peak, now).map_err(InternalError::from)
    })
    .await?;
    if let Some(live) = &ended {
        state
            .whip_lives
            .live_ended(user_id, live.id, std::time::Instant::now());
        state.viewers.finish(live.id);
        state.chat.live_ended(live.username.clone(), live.id);
        tracing::info!(username = %live.username, live_id = %live.id, "live ended");
    }
    Ok(ended)
}

/// `GET /api/lives`: everyone live now, newest first.
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, LiveError> {
    let current = db::run(&state.pool, |connection| {
        lives::list_current(connection).map_err(InternalError::from)
    })
    .await?;
    let body: Vec<LiveJson> = current
        .iter()
        .map(|live| live_json(live, state.viewers.current(live.id)))
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/lives/{username}`: that user's current live.
pub async fn get_one(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, LiveError> {
    let live = current_live_of(&state, &path).await?;
    Ok(HttpResponse::Ok().json(live_json(&live, state.viewers.current(live.id))))
}

/// `POST /api/lives/{username}/token`: a media token for that user's current live,
/// `publish` for its owner, `watch` for everyone else (signed in or not).
pub async fn token(
    state: web::Data<AppState>,
    MaybeUser(viewer): MaybeUser,
    path: web::Path<String>,
) -> Result<HttpResponse, LiveError> {
    let live = current_live_of(&state, &path).await?;
    let (subject, role, record) = match &viewer {
        Some(viewer) if viewer.id == live.user_id => {
            // The browser publishes (again, e.g. after a network drop): the live is its,
            // so the sweep of WHIP lives no media server reports leaves it alone.
            if live.source == LiveSource::Whip {
                state.whip_lives.hold_while_current(live.user_id, live.id);
                let id = live.id;
                db::run(&state.pool, move |connection| {
                    lives::set_source(connection, id, LiveSource::Browser)
                        .map_err(InternalError::from)
                })
                .await?;
            }
            // The media server records the live unless its owner turned that off.
            (
                viewer.username.to_string(),
                MediaRole::Publish,
                viewer.record_lives,
            )
        }
        Some(viewer) => (viewer.username.to_string(), MediaRole::Watch, false),
        None => {
            let mut bytes = [0u8; 8];
            rand::rng().fill_bytes(&mut bytes);
            (format!("anon:{}", hex(&bytes)), MediaRole::Watch, false)
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| InternalError(format!("clock: {error}")))?
        .as_secs();
    let settings = &state.settings;
    let claims = MediaTokenClaims::new(
        live.id,
        live.username.as_str(),
        subject,
        role,
        now,
        settings.media_token_ttl.as_secs(),
    )
    .with_record(record);
    let token = issue_media_token(&claims, settings.media_token_secret_bytes())
        .map_err(|error| InternalError(format!("media token: {error}")))?;
    // The label lands in coturn's log: the role and live, not who the viewer is. coturn
    // counts `user-quota` per label, so each token's is its own.
    let ice_servers = settings.turn.as_ref().map_or_else(Vec::new, |turn| {
        let mut tag = [0u8; 4];
        rand::rng().fill_bytes(&mut tag);
        let label = format!("{}-live{}-{}", role.as_str(), live.id.0, hex(&tag));
        turn.ice_servers(&label, now)
    });
    Ok(HttpResponse::Ok().json(MediaTokenJson {
        token,
        media_url: settings.media_public_url.clone(),
        live_id: live.id.0,
        role,
        expires_at: rfc3339(i64::try_from(claims.exp).unwrap_or(i64::MAX)),
        ice_servers,
    }))
}

/// `GET /api/users/{username}/lives?limit=N`: the user's past lives, newest first.
pub async fn history(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, LiveError> {
    let limit = query.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
    if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
        return Err(LiveError::InvalidLimit);
    }
    let username = Username::parse(&path).map_err(|_| LiveError::UserNotFound)?;
    let past = db::run(&state.pool, move |connection| {
        let user =
            users::find_by_username(connection, &username)?.ok_or(LiveError::UserNotFound)?;
        Ok::<_, LiveError>(lives::list_past_by_user(
            connection,
            user.id,
            i64::from(limit),
        )?)
    })
    .await?;
    let body: Vec<LiveJson> = past.iter().map(|live| live_json(live, 0)).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// The current live of `raw_username`, distinguishing unknown users from offline ones.
pub(crate) async fn current_live_of(
    state: &AppState,
    raw_username: &str,
) -> Result<lives::Live, LiveError> {
    let username = Username::parse(raw_username).map_err(|_| LiveError::UserNotFound)?;
    db::run(&state.pool, move |connection| {
        if let Some(live) = lives::find_current_by_username(connection, &username)? {
            return Ok(live);
        }
        if users::username_exists(connection, &username)? {
            Err(LiveError::NotLive)
        } else {
            Err(LiveError::UserNotFound)
        }
    })
    .await
}

impl From<diesel::result::Error> for LiveError {
    fn from(error: diesel::result::Error) -> Self {
        LiveError::Internal(error.into())
    }
}
