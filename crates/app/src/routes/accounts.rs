//! `/api/auth/*`: sign up, log in, log out, who am I; `/api/account/*`: the account's
//! settings (recording of lives).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use super::json::{CredentialsRequest, user_json};
use crate::auth::client::ClientInfo;
use crate::auth::hashing::HashingRefusal;
use crate::auth::rate_limit::RetryAfter;
use crate::auth::{CurrentUser, session};
use crate::db::{self, users};
use crate::domain::{Password, PasswordError, Username, UsernameError};
use crate::error::{InternalError, JsonObject, json_error};
use crate::log_field::LogField;
use crate::state::AppState;
use privatehub_protocol::app_api::{RecordingSettingJson, RecordingSettingRequest};

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
    /// Too many sign-ups from this address.
    #[error("too many new accounts from your address; try again in {} seconds", .0.as_secs().max(1))]
    SignupRateLimited(Duration),
    /// This address already has its share of the password checks in progress.
    #[error("{}", HashingRefusal::ClientOverShare)]
    TooManyAtOnce,
    /// Every place in the password-hashing queue is taken.
    #[error("{}", HashingRefusal::QueueFull)]
    Busy,
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl From<HashingRefusal> for AccountError {
    fn from(refusal: HashingRefusal) -> Self {
        match refusal {
            HashingRefusal::ClientOverShare => AccountError::TooManyAtOnce,
            HashingRefusal::QueueFull => AccountError::Busy,
            HashingRefusal::Stopped => {
                AccountError::Internal(InternalError("the password-hashing pool stopped".into()))
            }
        }
    }
}

impl ResponseError for AccountError {
    fn status_code(&self) -> StatusCode {
        match self {
            AccountError::InvalidUsername(_) | AccountError::InvalidPassword(_) => {
                StatusCode::BAD_REQUEST
            }
            AccountError::UsernameTaken => StatusCode::CONFLICT,
            AccountError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            AccountError::RateLimited(_)
            | AccountError::SignupRateLimited(_)
            | AccountError::TooManyAtOnce => StatusCode::TOO_MANY_REQUESTS,
            AccountError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            AccountError::Internal(inner) => inner.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (code, retry_after) = match self {
            AccountError::InvalidUsername(_) => ("invalid_username", None),
            AccountError::InvalidPassword(_) => ("invalid_password", None),
            AccountError::UsernameTaken => ("username_taken", None),
            AccountError::InvalidCredentials => ("invalid_credentials", None),
            AccountError::RateLimited(wait) => ("rate_limited", Some(*wait)),
            AccountError::SignupRateLimited(wait) => ("rate_limited", Some(*wait)),
            AccountError::TooManyAtOnce => ("rate_limited", Some(Duration::from_secs(1))),
            AccountError::Busy => ("busy", Some(Duration::from_secs(1))),
            AccountError::Internal(inner) => return inner.error_response(),
        };
        let mut response = json_error(self.status_code(), code, &self.to_string());
        if let Some(wait) = retry_after {
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
    let network = ClientInfo::from_request(&request, state.settings.trust_proxy_headers).network();

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
    state
        .signup_limiter
        .admit(network, Instant::now())
        .map_err(|retry| {
            state
                .metrics
                .refused_signup_rate_limited
                .fetch_add(1, Relaxed);
            AccountError::SignupRateLimited(retry.0)
        })?;

    // No database connection is held while the hash is computed.
    let password_hash = state.hashing.hash(network, password).await??;
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
        .json(user_json(&user)))
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
    let network = ClientInfo::from_request(&request, state.settings.trust_proxy_headers).network();
    let limiter = &state.login_limiter;
    let rate_limited = |retry: RetryAfter| {
        state
            .metrics
            .refused_login_rate_limited
            .fetch_add(1, Relaxed);
        AccountError::RateLimited(retry.0)
    };

    // A malformed name cannot be an account: refused without hashing (the naming rules
    // are public, so this tells nothing), counted against the address only, and never
    // used as a rate-limit key.
    let Ok(username) = Username::parse(&raw_username) else {
        limiter
            .record_malformed_name(network, Instant::now())
            .map_err(rate_limited)?;
        tracing::info!(username = %LogField(&raw_username), network = ?network, "failed log-in: malformed name");
        return Err(AccountError::InvalidCredentials);
    };
    let attempt = limiter
        .begin(&username, network, Instant::now())
        .map_err(rate_limited)?;
    // The limits over all instances, when several share Redis.
    let shared_attempt = match &state.cluster {
        Some(cluster) => match cluster
            .begin_login(&state.settings.login_rate_limit, &username, network)
            .await
        {
            Ok(shared) => shared,
            Err(wait) => {
                attempt.cancelled(Instant::now());
                return Err(rate_limited(RetryAfter(wait)));
            }
        },
        None => None,
    };

    // A failed lookup counts as a failure, shared or not (as a dropped attempt does).
    let lookup = username.clone();
    let user = db::run(&state.pool, move |connection| {
        users::find_by_username(connection, &lookup).map_err(InternalError::from)
    })
    .await?;
    // The connection went back to the pool before the (slow) password check.
    let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
    let verified = match state.hashing.verify(network, password, stored_hash).await {
        Ok(verified) => verified,
        Err(refusal) => {
            attempt.cancelled(Instant::now());
            if let Some(shared) = shared_attempt {
                shared.cancelled().await;
            }
            return Err(refusal.into());
        }
    };
    let Some(user) = user.filter(|_| verified) else {
        attempt.failed(Instant::now());
        tracing::info!(username = %username, network = ?network, "failed log-in");
        return Err(AccountError::InvalidCredentials);
    };
    attempt.succeeded(Instant::now());
    if let Some(shared) = shared_attempt {
        shared.succeeded().await;
    }
    let cookie = session::start_session(&request, &state, &user).await?;
    Ok(HttpResponse::Ok().cookie(cookie).json(user_json(&user)))
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
    HttpResponse::Ok().json(user_json(&user))
}

/// `PUT /api/account/recording` `{"enabled": bool}`: whether the media server records the
/// caller's lives from their next publish on (replays). Answers the setting now.
pub async fn set_recording(
    state: web::Data<AppState>,
    CurrentUser(user): CurrentUser,
    body: JsonObject<RecordingSettingRequest>,
) -> Result<HttpResponse, actix_web::Error> {
    let RecordingSettingRequest { enabled } = body.into_inner();
    let user_id = user.id;
    db::run(&state.pool, move |connection| {
        users::set_record_lives(connection, user_id, enabled).map_err(InternalError::from)
    })
    .await?;
    tracing::info!(username = %user.username, enabled, "recording of lives set");
    Ok(HttpResponse::Ok().json(RecordingSettingJson { enabled }))
}
