//! The HTTP edge of WHIP and WHEP: error answers, CORS, the per-client limits, and
//! reading headers and bodies within their limits.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use crate::AppState;
use crate::limits::{ClientAddress, SocketSlot};

/// Suggested wait before retrying a refused or failed request.
const RETRY_AFTER_SECONDS: &str = "5";
/// Headers a browser client must be able to read.
const EXPOSED_HEADERS: &str = "Location, ETag, Link, Accept-Patch, Retry-After";

/// An error answer: status, a stable code, a message for humans.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: &str) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "invalid_stream_key", message)
    }

    pub fn not_found() -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "no such session")
    }

    pub fn unavailable(message: &str) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.code)
    }
}

impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        match self.status {
            StatusCode::UNAUTHORIZED => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response.json(serde_json::json!({
            "error": {"code": self.code, "message": self.message}
        }))
    }
}

/// The allowed origin to echo for this request, `*`, or `None` (not allowed).
fn allowed_origin(request_origin: Option<&str>, allowed: &[String]) -> Option<String> {
    if allowed.iter().any(|o| o == "*") {
        return Some("*".to_owned());
    }
    let origin = request_origin?.trim_end_matches('/');
    allowed
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
        .then(|| origin.to_owned())
}

/// Middleware: refuses requests from origins not allowed, and adds the CORS headers to
/// every answer (errors included, so a browser client can read the status).
pub async fn cors(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = request.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(request).await.map(|r| r.map_into_boxed_body());
    };
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let allowed = allowed_origin(origin.as_deref(), &state.settings.whip_whep_origins);
    if origin.is_some() && allowed.is_none() {
        let problem = Problem::new(StatusCode::FORBIDDEN, "forbidden", "origin not allowed");
        return Ok(request
            .into_response(actix_web::ResponseError::error_response(&problem))
            .map_into_boxed_body());
    }
    let mut response = next.call(request).await?.map_into_boxed_body();
    if let Some(allowed) = allowed
        && let Ok(value) = HeaderValue::from_str(&allowed)
    {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        if allowed != "*" {
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    Ok(response)
}

/// `OPTIONS`: the CORS preflight and WHIP's discovery request.
pub async fn preflight(request: HttpRequest) -> HttpResponse {
    let session = request.match_info().get("id").is_some();
    let methods = if session {
        "PATCH, DELETE, OPTIONS"
    } else {
        "POST, OPTIONS"
    };
    let mut response = HttpResponse::NoContent();
    response
        .insert_header((header::ALLOW, methods))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, methods))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type, If-Match",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"));
    if session {
        response.insert_header(("Accept-Patch", "application/trickle-ice-sdpfrag"));
    } else {
        response.insert_header(("Accept-Post", "application/sdp"));
    }
    response.finish()
}

pub async fn endpoint_method_not_allowed() -> HttpResponse {
    method_not_allowed(
        "POST, OPTIONS",
        "this is a WHIP/WHEP endpoint: POST an SDP offer (paste the URL into OBS or a WHEP player)",
    )
}

pub async fn session_method_not_allowed() -> HttpResponse {
    method_not_allowed(
        "PATCH, DELETE, OPTIONS",
        "a session accepts PATCH and DELETE",
    )
}

fn method_not_allowed(allow: &'static str, message: &str) -> HttpResponse {
    let problem = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    let mut response = actix_web::ResponseError::error_response(&problem);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Counts the request against the client's limits (the same as `/ws` sockets); the
/// slot is held for the session's lifetime.
pub fn admit(request: &HttpRequest, state: &AppState) -> Result<SocketSlot, Problem> {
    let client = ClientAddress::of_http_request(request, state.settings.trust_proxy_headers);
    state
        .socket_limiter
        .try_open(client, Instant::now())
        .map_err(|refused| {
            state
                .metrics
                .whip_whep_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                refused.message(),
            )
        })
}

pub fn require_content_type(request: &HttpRequest, expected: &str) -> Result<(), Problem> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be {expected}"),
        ))
    }
}

/// The bearer token of the request, if it has one.
pub fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 256)
        .then_some(token)
}

/// Reads a text body of at most `limit` bytes.
pub async fn read_text(mut payload: web::Payload, limit: usize) -> Result<String, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read",
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body.to_vec()).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
            "the body is not UTF-8 text",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_echoed_only_when_allowed() {
        let any = vec!["*".to_owned()];
        let site = vec!["https://site.example".to_owned()];
        assert_eq!(allowed_origin(None, &any).as_deref(), Some("*"));
        assert_eq!(
            allowed_origin(Some("https://site.example/"), &site).as_deref(),
            Some("https://site.example")
        );
        assert_eq!(allowed_origin(Some("https://evil.example"), &site), None);
        assert_eq!(allowed_origin(None, &site), None);
    }
}
