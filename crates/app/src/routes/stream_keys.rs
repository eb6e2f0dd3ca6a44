//! `/api/me/stream-key`: the signed-in user's WHIP stream key, shown and rotated.

use actix_web::{HttpResponse, web};
use privatehub_protocol::internal_api::EndPublishesRequest;

use super::json::StreamKeyJson;
use crate::auth::CurrentUser;
use crate::db::{self, stream_keys};
use crate::error::InternalError;
use crate::state::AppState;
use crate::stream_keys::StreamKey;

fn key_json(state: &AppState, key: &StreamKey) -> StreamKeyJson {
    StreamKeyJson {
        stream_key: key.expose().to_owned(),
        whip_url: format!("{}/whip", state.settings.media_public_url),
    }
}

/// The answer must never be cached by a browser or a proxy: it holds a secret.
fn no_store(body: StreamKeyJson) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// `GET /api/me/stream-key`: the caller's key, created on first request.
pub async fn show(
    state: web::Data<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<HttpResponse, InternalError> {
    let user_id = user.id;
    let (_, fresh) = state.stream_keys.generate(user_id);
    let now = db::now_unix();
    let stored = db::run(&state.pool, move |connection| {
        if let Some(stored) = stream_keys::find_by_user(connection, user_id)? {
            return Ok(stored);
        }
        stream_keys::insert_if_missing(connection, user_id, &fresh, now)
            .map_err(InternalError::from)
    })
    .await?;
    let key = state
        .stream_keys
        .open(user_id, &stored.key_sealed)
        .map_err(|error| InternalError(error.to_string()))?;
    Ok(no_store(key_json(&state, &key)))
}

/// `POST /api/me/stream-key/rotate`: a new key; the old one stops working at once and
/// the media server is told to end publishes still running with it.
pub async fn rotate(
    state: web::Data<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<HttpResponse, InternalError> {
    let user_id = user.id;
    let (key, sealed) = state.stream_keys.generate(user_id);
    let now = db::now_unix();
    let stored = db::run(&state.pool, move |connection| {
        stream_keys::rotate(connection, user_id, &sealed, now).map_err(InternalError::from)
    })
    .await?;
    tracing::info!(username = %user.username, generation = stored.generation, "stream key rotated");
    // The key is refused from now on; a publish already running is ended here, or at
    // the media server's next report (`whip/sync`) if it cannot be reached now.
    let request = EndPublishesRequest {
        user_id: user_id.0,
        key_generation: stored.generation,
    };
    match state
        .media_api
        .end_publishes(state.settings.media_token_secret_bytes(), &request)
        .await
    {
        Ok(0) => {}
        Ok(ended) => {
            tracing::info!(username = %user.username, ended, "publishes with the old stream key ended")
        }
        Err(error) => {
            tracing::warn!(%error, "cannot reach the media server to end publishes with the old key; its next report will")
        }
    }
    Ok(no_store(key_json(&state, &key)))
}
