//! CSRF defence (OWASP "verifying origin with standard headers"): every
//! state-changing request must carry an `Origin` header equal to `APP_PUBLIC_URL`'s
//! origin, or, when the browser sent no `Origin`, a `Referer` on that origin. A
//! request with neither is refused. Safe methods (GET, HEAD, OPTIONS) pass.
//! Together with `SameSite=Lax` session cookies this blocks cross-site writes.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};

use crate::domain::Origin;
use crate::error::json_error;
use crate::state::AppState;

/// Why a state-changing request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    /// Neither `Origin` nor `Referer` was sent.
    #[error("state-changing requests must carry an Origin or Referer header")]
    MissingOrigin,
    /// `Origin` (or `Referer`) names another site, or is `null`/unparsable.
    #[error("the request's origin does not match this site")]
    OriginMismatch,
}

impl ResponseError for CsrfError {
    fn status_code(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            CsrfError::MissingOrigin => "csrf_origin_missing",
            CsrfError::OriginMismatch => "csrf_origin_mismatch",
        };
        json_error(self.status_code(), code, &self.to_string())
    }
}

/// The decision, without any I/O.
pub fn check_origin(
    method: &Method,
    origin: Option<&str>,
    referer: Option<&str>,
    expected: &Origin,
) -> Result<(), CsrfError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let claimed = match (origin, referer) {
        (Some(origin), _) => origin,
        (None, Some(referer)) => referer,
        (None, None) => return Err(CsrfError::MissingOrigin),
    };
    match Origin::parse_url(claimed) {
        Ok(claimed) if &claimed == expected => Ok(()),
        _ => Err(CsrfError::OriginMismatch),
    }
}

/// Middleware (`middleware::from_fn`) applying [`check_origin`] to every request.
pub async fn csrf_middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let verdict = {
        let expected = request
            .app_data::<web::Data<AppState>>()
            .map(|state| state.settings.public_origin.clone());
        let header_text = |name| {
            request
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap_or("\u{0}"))
        };
        match expected {
            // Token-authenticated server-to-server calls: no cookie, nothing to forge.
            Some(_) if crate::routes::is_internal_path(request.path()) => Ok(()),
            Some(expected) => check_origin(
                request.method(),
                header_text(header::ORIGIN),
                header_text(header::REFERER),
                &expected,
            ),
            None => Err(CsrfError::OriginMismatch),
        }
    };
    match verdict {
        Ok(()) => next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(error) => {
            tracing::warn!(method = %request.method(), path = %crate::log_field::LogField(request.path()), %error, "refused by the CSRF check");
            Ok(request
                .into_response(error.error_response())
                .map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Origin {
        Origin::parse_url("https://privatehub.example").unwrap()
    }

    #[test]
    fn table() {
        let post = Method::POST;
        type Case<'a> = (
            &'a Method,
            Option<&'a str>,
            Option<&'a str>,
            Result<(), CsrfError>,
        );
        let cases: &[Case<'_>] = &[
            (&Method::GET, None, None, Ok(())),
            (&post, Some("https://privatehub.example"), None, Ok(())),
            (&post, Some("https://PRIVATEHUB.example:443"), None, Ok(())),
            (
                &post,
                None,
                Some("https://privatehub.example/alice/start-live"),
                Ok(()),
            ),
            (&post, None, None, Err(CsrfError::MissingOrigin)),
            (
                &post,
                Some("https://evil.example"),
                None,
                Err(CsrfError::OriginMismatch),
            ),
            (
                &post,
                Some("http://privatehub.example"),
                None,
                Err(CsrfError::OriginMismatch),
            ),
            (&post, Some("null"), None, Err(CsrfError::OriginMismatch)),
            // A present but wrong Origin is not rescued by a good Referer.
            (
                &post,
                Some("https://evil.example"),
                Some("https://privatehub.example/"),
                Err(CsrfError::OriginMismatch),
            ),
            (
                &post,
                None,
                Some("https://privatehub.example.evil.example/"),
                Err(CsrfError::OriginMismatch),
            ),
            (&Method::DELETE, None, None, Err(CsrfError::MissingOrigin)),
        ];
        for (method, origin, referer, expected) in cases {
            assert_eq!(
                &check_origin(method, *origin, *referer, &site()),
                expected,
                "{method} origin={origin:?} referer={referer:?}"
            );
        }
    }
}
