//! `/api/auth/*`: sign up, log in, log out, who am I.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use super::json::{CredentialsRequest, UserJson};
use crate::auth::client::ClientInfo;
use crate::auth::{CurrentUser, password, session};
use crate::db::{self, users};
use crate::domain::{Password, PasswordError, Username, UsernameError};
use crate::error::{InternalError, JsonObject, json_error};
use crate::state::AppState;

/// Why an account request failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The chosen username breaks the rules (sign-up only).
    #[error("{0}")]
    InvalidUsername(#[from] UsernameError),
    /// The chosen password breaks the rules (or is absurdly long at log-in).
    #[error("{0}")]
    InvalidPassword(#[from] PasswordError),
    /// Someone already has this name, ignoring case.
    #[error("this username is already taken")]
    UsernameTaken,
    /// Unknown user or wrong password (deliberately indistinguishable).
    #[error("wrong username or password")]
    InvalidCredentials,
    /// Too many failed log-ins for this account or address.
    #[error("too many failed log-in attempts; try again in {} seconds", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl ResponseError for AccountError {
    fn status_code(&self) -> StatusCode {
        match self {
            AccountError::InvalidUsername(_) | AccountError::InvalidPassword(_) => {
                StatusCode::BAD_REQUEST
            }
            AccountError::UsernameTaken => StatusCode::CONFLICT,
            AccountError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            AccountError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            AccountError::Internal(inner) => inner.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            AccountError::InvalidUsername(_) => "invalid_username",
            AccountError::InvalidPassword(_) => "invalid_password",
            AccountError::UsernameTaken => "username_taken",
            AccountError::InvalidCredentials => "invalid_credentials",
            AccountError::RateLimited(_) => "rate_limited",
            AccountError::Internal(inner) => return inner.error_response(),
        };
        let mut response = json_error(self.status_code(), code, &self.to_string());
        if let AccountError::RateLimited(wait) = self {
            let seconds = wait.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
        }
        response
    }
}

/// `POST /api/auth/signup`: creates the account and signs it in (201).
pub async fn signup(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: JsonObject<CredentialsRequest>,
) -> Result<HttpResponse, AccountError> {
    let CredentialsRequest { username, password } = body.into_inner();
    let username = Username::parse(&username)?;
    let password = Password::parse(password)?;

    // Cheap pre-check so duplicates do not cost an argon2 hash; the unique index
    // still decides races.
    let probe = username.clone();
    if db::run(&state.pool, move |connection| {
        users::username_exists(connection, &probe).map_err(InternalError::from)
    })
    .await?
    {
        return Err(AccountError::UsernameTaken);
    }

    let password_hash = web::block(move || password::hash_password(&password))
        .await
        .map_err(InternalError::from)??;
    let now = db::now_unix();
    let user = db::run(&state.pool, move |connection| {
        users::create_user(connection, &username, &password_hash, now).map_err(
            |error| match error {
                users::CreateUserError::UsernameTaken => AccountError::UsernameTaken,
                users::CreateUserError::Database(error) => InternalError::from(error).into(),
            },
        )
    })
    .await?;
    tracing::info!(username = %user.username, "account created");

    let cookie = session::start_session(&request, &state, &user).await?;
    Ok(HttpResponse::Created()
        .cookie(cookie)
        .json(UserJson::from(&user)))
}

/// `POST /api/auth/login`.
pub async fn login(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: JsonObject<CredentialsRequest>,
) -> Result<HttpResponse, AccountError> {
    let CredentialsRequest {
        username: raw_username,
        password,
    } = body.into_inner();
    let password = Password::for_login(password)?;
    let client = ClientInfo::from_request(&request, state.settings.trust_proxy_headers);
    let limiter = &state.login_limiter;
    limiter
        .check(&raw_username, client.ip, Instant::now())
        .map_err(|retry| AccountError::RateLimited(retry.0))?;

    // A malformed name cannot exist; it is verified against the dummy hash like any
    // unknown name so the response looks the same.
    let username = Username::parse(&raw_username).ok();
    let user = db::run(&state.pool, move |connection| {
        let user = match &username {
            Some(username) => users::find_by_username(connection, username)?,
            None => None,
        };
        let verified = match &user {
            Some(user) => password::verify_password(&password, &user.password_hash),
            None => {
                password::verify_against_dummy(&password);
                false
            }
        };
        Ok::<_, InternalError>(user.filter(|_| verified))
    })
    .await?;

    let Some(user) = user else {
        limiter.record_failure(&raw_username, client.ip, Instant::now());
        tracing::info!(username = %raw_username, ip = ?client.ip, "failed log-in");
        return Err(AccountError::InvalidCredentials);
    };
    limiter.record_success(&raw_username);
    let cookie = session::start_session(&request, &state, &user).await?;
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .json(UserJson::from(&user)))
}

/// `POST /api/auth/logout`: ends the session if there is one (204 either way).
pub async fn logout(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AccountError> {
    let removal = session::end_session(&request, &state).await?;
    Ok(HttpResponse::NoContent().cookie(removal).finish())
}

/// `GET /api/auth/me`.
pub async fn me(CurrentUser(user): CurrentUser) -> HttpResponse {
    HttpResponse::Ok().json(UserJson::from(&user))
}
