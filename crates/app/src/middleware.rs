//! Cross-cutting HTTP layers: request logs, security headers, and the guarantee that
//! `/api` errors are always JSON.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Next};

use crate::error::json_error;
use crate::log_field::LogField;
use crate::routes::is_api_path;
use crate::settings::Settings;

/// One log line per request: method, path (no query string), status, duration.
pub async fn request_log(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.path().to_owned();
    let result = next.call(request).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(response) => {
            let status = response.status().as_u16();
            if response.status().is_server_error() {
                tracing::error!(%method, path = %LogField(&path), status, elapsed_ms, "request");
            } else {
                tracing::info!(%method, path = %LogField(&path), status, elapsed_ms, "request");
            }
        }
        Err(error) => {
            tracing::warn!(%method, path = %LogField(&path), %error, elapsed_ms, "request failed");
        }
    }
    result
}

/// Replaces any non-JSON error response under `/api` (405 from the router, payload
/// errors the framework answers itself) with the standard JSON error body.
pub async fn api_errors_as_json(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let is_api = is_api_path(request.path());
    let response = next.call(request).await?;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return Ok(response.map_into_left_body());
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such API endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this method is not allowed here"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        status if status.is_server_error() => ("internal", "internal server error"),
        _ => ("bad_request", "the request could not be understood"),
    };
    let replacement = json_error(status, code, message);
    Ok(response.into_response(replacement).map_into_right_body())
}

/// Security headers on every response. The CSP allows scripts, styles and
/// connections only to this site, plus connections to the media server
/// (HTTP and WebSocket) for the player and broadcaster, and media from it (the
/// replay page's `<video>` plays recordings the media server serves).
pub fn security_headers(settings: &Settings) -> DefaultHeaders {
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob: mediastream: {}; connect-src 'self' {} {} {}; font-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        settings.media_origin,
        settings.public_origin.websocket_origin(),
        settings.media_origin,
        settings.media_origin.websocket_origin(),
    );
    let mut headers = DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "same-origin"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((
            "Permissions-Policy",
            "camera=(self), microphone=(self), geolocation=()",
        ))
        .add(("Cross-Origin-Opener-Policy", "same-origin"));
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers = headers.add((header::CONTENT_SECURITY_POLICY, value));
    }
    headers
}
