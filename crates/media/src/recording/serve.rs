//! `GET`/`HEAD /recordings/{id}.{ext}?token=…`: a recording's file, to the holder of a
//! replay token the app signed for it (range requests for seeking, by actix-files);
//! and `POST /internal/v1/recordings/delete`, the app's call when a creator deletes one.
//! A deleted recording's URLs stop working at once: the file and its index entry are gone.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use privatehub_protocol::internal_api::{InternalCaller, verify_internal_token};
use privatehub_protocol::recordings::{RecordingId, RecordingsDeleteRequest, verify_replay_token};
use secrecy::ExposeSecret;

use super::RecorderInput;
use crate::AppState;

fn refused(status: actix_web::http::StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({"error": {"code": code, "message": message}}))
}

fn not_found() -> HttpResponse {
    refused(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such recording",
    )
}

/// The `token` query parameter, if any.
fn token_of(request: &HttpRequest) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
        .ok()?
        .get("token")
        .cloned()
}

pub async fn recording_file(
    request: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> HttpResponse {
    let Some(recorder) = state.recorder.as_ref() else {
        return not_found();
    };
    let Some((id, extension)) = name.split_once('.') else {
        return not_found();
    };
    let Ok(id) = RecordingId::parse(id) else {
        return not_found();
    };
    let Some(token) = token_of(&request) else {
        return refused(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a replay URL needs its token",
        );
    };
    let secret = state.settings.token_secret.expose_secret().as_bytes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if let Err(error) = verify_replay_token(&token, secret, &id, now) {
        return refused(
            actix_web::http::StatusCode::FORBIDDEN,
            "forbidden",
            &format!("this replay URL is not valid: {error}"),
        );
    }
    let Some(report) = recorder.catalog.servable(&id) else {
        return not_found();
    };
    if extension != report.container.extension() {
        return not_found();
    }
    let path = recorder.catalog.media_path(&id, report.container);
    let file = match actix_files::NamedFile::open_async(&path).await {
        Ok(file) => file,
        Err(_) => return not_found(),
    };
    let mut response = file
        .set_content_type(
            report
                .container
                .mime_type()
                .parse()
                .expect("a valid MIME type"),
        )
        .disable_content_disposition()
        .into_response(&request);
    // Private to the token's holder; a recording in progress grows, so no long caching.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60"),
    );
    response
}

/// `POST /internal/v1/recordings/delete` (app → media).
pub async fn delete_recordings(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RecordingsDeleteRequest>,
) -> HttpResponse {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    let secret = state.settings.token_secret.expose_secret().as_bytes();
    if verify_internal_token(token.trim(), secret, InternalCaller::App, request.path()).is_err() {
        return refused(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing or invalid internal token",
        );
    }
    let ids = body.into_inner().ids;
    if let Some(recorder) = state.recorder.as_ref() {
        // Gone from the index at once, so no URL serves it while the file is removed.
        recorder.forget(&ids);
        recorder.offer(RecorderInput::Delete(ids));
    }
    HttpResponse::NoContent().finish()
}
