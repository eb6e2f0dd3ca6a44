//! Server-side sessions. The browser holds a random 256-bit token in the
//! `privatehub_session` cookie (HttpOnly, SameSite=Lax, Secure over HTTPS); the
//! database holds only its BLAKE2s hash, so a leaked database does not leak live
//! sessions. [`CurrentUser`] and [`MaybeUser`] are the extractors handlers use.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use blake2::{Blake2s256, Digest};
use rand::RngCore;

use super::client::ClientInfo;
use crate::db::{self, sessions, users::User};
use crate::error::{InternalError, json_error};
use crate::settings::hex;
use crate::state::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "privatehub_session";

/// A fresh random session token, as sent in the cookie (64 hex characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// What the database stores for `token`.
pub fn hash_token(token: &str) -> String {
    hex(&Blake2s256::digest(token.as_bytes()))
}

fn token_from_request(request: &HttpRequest) -> Option<String> {
    let cookie = request.cookie(SESSION_COOKIE)?;
    let token = cookie.value();
    (token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())).then(|| token.to_owned())
}

/// Cookies are `Secure` when the site is served over HTTPS.
fn cookie_secure(request: &HttpRequest, state: &AppState) -> bool {
    state.settings.public_origin.is_https()
        || ClientInfo::from_request(request, state.settings.trust_proxy_headers).https
}

/// Creates a session for `user` and returns the cookie to set.
pub async fn start_session(
    request: &HttpRequest,
    state: &AppState,
    user: &User,
) -> Result<Cookie<'static>, InternalError> {
    let token = new_token();
    let token_hash = hash_token(&token);
    let ttl = state.settings.session_ttl;
    let user_id = user.id;
    let now = db::now_unix();
    let expires_at = now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    db::run(&state.pool, move |connection| {
        sessions::create_session(connection, user_id, &token_hash, now, expires_at)
            .map_err(InternalError::from)
    })
    .await?;
    Ok(Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(cookie_secure(request, state))
        .max_age(CookieDuration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        ))
        .finish())
}

/// Identifies one log-in session (the stored hash of its token) without revealing
/// the token: what the chat uses to end a session's sockets at log-out and to count
/// the tabs of one session once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(String);

impl SessionKey {
    /// The stored token hash (never the token): how other instances name the session.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The session another instance named with [`SessionKey::as_str`].
    pub fn from_stored_hash(hash: String) -> SessionKey {
        SessionKey(hash)
    }
}

/// Deletes the request's session (if any), ends its open sockets, and returns a cookie
/// that clears it.
pub async fn end_session(
    request: &HttpRequest,
    state: &AppState,
) -> Result<Cookie<'static>, InternalError> {
    if let Some(token) = token_from_request(request) {
        let token_hash = hash_token(&token);
        let key = SessionKey(token_hash.clone());
        db::run(&state.pool, move |connection| {
            sessions::delete_session(connection, &token_hash).map_err(InternalError::from)
        })
        .await?;
        state.chat.session_ended(key);
    }
    let mut removal = Cookie::build(SESSION_COOKIE, "")
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(cookie_secure(request, state))
        .finish();
    removal.make_removal();
    Ok(removal)
}

async fn user_from_request(request: &HttpRequest) -> Result<Option<User>, InternalError> {
    Ok(session_from_request(request).await?.map(|(user, _)| user))
}

async fn session_from_request(
    request: &HttpRequest,
) -> Result<Option<(User, SessionKey)>, InternalError> {
    let Some(token) = token_from_request(request) else {
        return Ok(None);
    };
    let state = request
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| InternalError("AppState is not registered".into()))?;
    let token_hash = hash_token(&token);
    let key = SessionKey(token_hash.clone());
    let now = db::now_unix();
    let user = db::run(&state.pool, move |connection| {
        sessions::find_user_by_session(connection, &token_hash, now).map_err(InternalError::from)
    })
    .await?;
    Ok(user.map(|user| (user, key)))
}

/// Failure of the [`CurrentUser`] extractor.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No valid session cookie.
    #[error("you must be signed in")]
    Unauthenticated,
    #[error(transparent)]
    Internal(#[from] InternalError),
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AuthError::Internal(inner) => inner.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AuthError::Unauthenticated => {
                json_error(self.status_code(), "unauthenticated", &self.to_string())
            }
            AuthError::Internal(inner) => inner.error_response(),
        }
    }
}

/// The signed-in user; requests without a valid session get 401.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl FromRequest for CurrentUser {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            user_from_request(&request)
                .await?
                .map(CurrentUser)
                .ok_or(AuthError::Unauthenticated)
        })
    }
}

/// The signed-in user, if any.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<User>);

impl FromRequest for MaybeUser {
    type Error = InternalError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { user_from_request(&request).await.map(MaybeUser) })
    }
}

/// The signed-in user and their session, if any (for the chat socket).
#[derive(Debug, Clone)]
pub struct MaybeSession(pub Option<(User, SessionKey)>);

impl FromRequest for MaybeSession {
    type Error = InternalError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { session_from_request(&request).await.map(MaybeSession) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), a);
        assert_eq!(hash_token(&a).len(), 64);
    }
}
