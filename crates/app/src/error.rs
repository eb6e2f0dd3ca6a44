//! The JSON error shape every API error uses, `{"error":{"code","message"}}`, the
//! internal-failure type shared by all boundaries, and the handlers that turn
//! extractor failures (bad JSON, oversized bodies, wrong types) into clean 4xx.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use privatehub_protocol::app_api::{ApiError, ApiErrorEnvelope};
use serde::de::DeserializeOwned;

/// Largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Builds the JSON error response. Every API error goes through here.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ApiErrorEnvelope {
        error: ApiError {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    })
}

/// Something failed that is not the client's fault (database, thread pool). Its
/// detail is logged, never sent: the client gets a generic 500, or a 503
/// `database_unavailable` when the database cannot be reached (see
/// [`InternalError::is_database_unavailable`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InternalError(pub String);

/// How the detail of an [`InternalError`] for an unreachable database begins.
const DATABASE_UNAVAILABLE: &str = "database unavailable: ";

impl InternalError {
    /// The database cannot be reached (no connection could be opened in time, or the
    /// connection was lost): the request may succeed once it is back.
    pub fn database_unavailable(detail: impl std::fmt::Display) -> Self {
        InternalError(format!("{DATABASE_UNAVAILABLE}{detail}"))
    }

    pub fn is_database_unavailable(&self) -> bool {
        self.0.starts_with(DATABASE_UNAVAILABLE)
    }
}

/// Whether a query failed because the connection to the server is gone (PostgreSQL
/// stopped or restarted, the network dropped) rather than because of the query.
pub fn is_connection_lost(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
        | Error::BrokenTransactionManager => true,
        Error::DatabaseError(_, info) => {
            // libpq's words when the server goes away under a query, and PostgreSQL's
            // "terminating connection due to administrator command" (57P01).
            let message = info.message();
            message.contains("server closed the connection")
                || message.contains("terminating connection")
                || message.contains("no connection to the server")
                || message.contains("connection to server")
        }
        _ => false,
    }
}

impl From<diesel::result::Error> for InternalError {
    fn from(error: diesel::result::Error) -> Self {
        if is_connection_lost(&error) {
            return InternalError::database_unavailable(error);
        }
        InternalError(format!("database: {error}"))
    }
}

impl From<r2d2::Error> for InternalError {
    fn from(error: r2d2::Error) -> Self {
        // The pool gave up waiting: no connection could be opened (or none was free)
        // within the connect timeout.
        InternalError::database_unavailable(format!("pool: {error}"))
    }
}

impl From<actix_web::error::BlockingError> for InternalError {
    fn from(error: actix_web::error::BlockingError) -> Self {
        InternalError(format!("blocking pool: {error}"))
    }
}

impl ResponseError for InternalError {
    fn status_code(&self) -> StatusCode {
        if self.is_database_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.is_database_unavailable() {
            tracing::error!(error = %self.0, "database unavailable");
            return json_error(
                self.status_code(),
                "database_unavailable",
                "the database is unavailable; try again shortly",
            );
        }
        tracing::error!(error = %self.0, "internal error");
        json_error(self.status_code(), "internal", "internal server error")
    }
}

/// A request the framework could not decode into the handler's arguments.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Body is not syntactically valid JSON.
    #[error("the request body is not valid JSON")]
    MalformedJson,
    /// Valid JSON of the wrong shape (missing field, wrong type, unknown field).
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// `Content-Type` is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// Body larger than [`MAX_BODY_BYTES`].
    #[error("the request body is too large (limit {MAX_BODY_BYTES} bytes)")]
    PayloadTooLarge,
    /// The body could not be read (connection dropped, bad encoding).
    #[error("the request body could not be read")]
    UnreadableBody,
    /// The body did not arrive within `body_deadline::BODY_READ_TIMEOUT`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// Query string of the wrong shape.
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// A path segment of the wrong type.
    #[error("invalid path: {0}")]
    InvalidPath(String),
}

impl RequestError {
    fn code(&self) -> &'static str {
        match self {
            RequestError::MalformedJson => "malformed_json",
            RequestError::InvalidBody(_) => "invalid_body",
            RequestError::UnsupportedMediaType => "unsupported_media_type",
            RequestError::PayloadTooLarge => "payload_too_large",
            RequestError::UnreadableBody => "unreadable_body",
            RequestError::BodyTimeout => "body_timeout",
            RequestError::InvalidQuery(_) => "invalid_query",
            RequestError::InvalidPath(_) => "invalid_path",
        }
    }
}

impl ResponseError for RequestError {
    fn status_code(&self) -> StatusCode {
        match self {
            RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::InvalidPath(_) => StatusCode::NOT_FOUND,
            RequestError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        json_error(self.status_code(), self.code(), &self.to_string())
    }
}

/// Like `web::Json<T>`, but the body must be a JSON *object*: serde would otherwise
/// also accept an array of field values for a struct. Errors are [`RequestError`]s.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let object =
            web::Json::<serde_json::Map<String, serde_json::Value>>::from_request(request, payload);
        Box::pin(async move {
            let object = object.await?.into_inner();
            serde_json::from_value(serde_json::Value::Object(object))
                .map(JsonObject)
                .map_err(|error| RequestError::InvalidBody(error.to_string()).into())
        })
    }
}

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// For `JsonConfig::error_handler`.
pub fn json_error_handler(error: JsonPayloadError, _request: &HttpRequest) -> actix_web::Error {
    let mapped = match &error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            RequestError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => RequestError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(inner) if inner.is_data() => {
            RequestError::InvalidBody(inner.to_string())
        }
        JsonPayloadError::Deserialize(_) => RequestError::MalformedJson,
        JsonPayloadError::Payload(error) => payload_error_ref(error),
        _ => RequestError::UnreadableBody,
    };
    mapped.into()
}

/// For `QueryConfig::error_handler`.
pub fn query_error_handler(error: QueryPayloadError, _request: &HttpRequest) -> actix_web::Error {
    RequestError::InvalidQuery(error.to_string()).into()
}

/// For `PathConfig::error_handler`.
pub fn path_error_handler(error: PathError, _request: &HttpRequest) -> actix_web::Error {
    RequestError::InvalidPath(error.to_string()).into()
}

/// For `PayloadConfig` users (raw bodies): maps a payload error.
pub fn payload_error(error: actix_web::error::PayloadError) -> RequestError {
    payload_error_ref(&error)
}

fn payload_error_ref(error: &actix_web::error::PayloadError) -> RequestError {
    use actix_web::error::PayloadError;
    match error {
        PayloadError::Overflow => RequestError::PayloadTooLarge,
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            RequestError::BodyTimeout
        }
        _ => RequestError::UnreadableBody,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(response: HttpResponse) -> serde_json::Value {
        let bytes = response.into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn error_shape() {
        let response = json_error(StatusCode::CONFLICT, "username_taken", "taken");
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            body_of(response),
            serde_json::json!({"error": {"code": "username_taken", "message": "taken"}})
        );
    }

    #[test]
    fn internal_errors_hide_details() {
        let response = InternalError("secret detail".into()).error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(response);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret detail"));
    }

    #[test]
    fn an_unreachable_database_is_a_503_without_details() {
        let response =
            InternalError::database_unavailable("pool: timed out at db.internal").error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_of(response);
        assert_eq!(body["error"]["code"], "database_unavailable");
        assert!(!body.to_string().contains("db.internal"));
        let lost = diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            Box::new("server closed the connection unexpectedly".to_owned()),
        );
        assert!(InternalError::from(lost).is_database_unavailable());
        assert!(!InternalError::from(diesel::result::Error::NotFound).is_database_unavailable());
    }
}
