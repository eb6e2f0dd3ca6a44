//! Client of the app's internal API (`/internal/v1/...` on the app; `docs/protocol.md`,
//! "Internal API"): stream-key checks and live start/end for WHIP, current lives for
//! WHEP, and the periodic report of WHIP publishes.

use std::time::Duration;

use privatehub_protocol::LiveId;
use privatehub_protocol::internal_api::{
    CurrentLive, InternalCaller, WhipAuthorizeRequest, WhipAuthorized, WhipEndReason,
    WhipEndedRequest, WhipSessionReport, WhipStartRequest, WhipStarted, WhipSyncRequest,
    WhipSyncResponse, issue_internal_token,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Longest wait for one call: a WHIP client waits for its answer meanwhile.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum AppApiError {
    /// The app answered 401 (`invalid_stream_key`, or our internal token was refused).
    #[error("refused by the app")]
    Refused,
    /// The app answered 404 (no such user, or not live).
    #[error("not found")]
    NotFound,
    /// The app answered 409: the live was taken over in the browser or just ended there.
    #[error("taken over")]
    TakenOver,
    /// The app could not be reached, timed out, or failed (5xx, unexpected body).
    #[error("the app is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct AppApi {
    client: reqwest::Client,
    base_url: String,
    secret: SecretString,
}

impl AppApi {
    pub fn new(base_url: &str, secret: SecretString) -> Self {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        AppApi {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret,
        }
    }

    fn token(&self, path: &str) -> Result<String, AppApiError> {
        issue_internal_token(
            InternalCaller::Media,
            self.secret.expose_secret().as_bytes(),
            path,
        )
        .map_err(|error| AppApiError::Unavailable(error.to_string()))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, AppApiError> {
        let response = request
            .bearer_auth(self.token(path)?)
            .send()
            .await
            // Without the URL: it can hold a username, and is in the logs already.
            .map_err(|error| AppApiError::Unavailable(error.without_url().to_string()))?;
        match response.status().as_u16() {
            200 => response
                .json()
                .await
                .map_err(|error| AppApiError::Unavailable(error.without_url().to_string())),
            401 | 403 => {
                // Our own token refused (secrets differ, clocks apart) is not the
                // client's fault: it must not read as a bad stream key.
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if body["error"]["code"] == "unauthenticated" {
                    tracing::error!(
                        "the app refused the media server's internal token: MEDIA_TOKEN_SECRET \
                         differs between the services, or their clocks are more than 5 s apart"
                    );
                    Err(AppApiError::Unavailable("internal token refused".into()))
                } else {
                    Err(AppApiError::Refused)
                }
            }
            404 => Err(AppApiError::NotFound),
            409 => Err(AppApiError::TakenOver),
            status => Err(AppApiError::Unavailable(format!("status {status}"))),
        }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, AppApiError> {
        let path = format!("/internal/v1/{path}");
        let request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .json(body);
        self.call(request, &path).await
    }

    pub async fn authorize(&self, stream_key: &str) -> Result<WhipAuthorized, AppApiError> {
        let body = WhipAuthorizeRequest {
            stream_key: stream_key.to_owned(),
        };
        self.post("whip/authorize", &body).await
    }

    pub async fn start(
        &self,
        user_id: i64,
        key_generation: i64,
    ) -> Result<WhipStarted, AppApiError> {
        let body = WhipStartRequest {
            user_id,
            key_generation,
        };
        self.post("whip/start", &body).await
    }

    pub async fn ended(
        &self,
        user_id: i64,
        live_id: LiveId,
        reason: WhipEndReason,
    ) -> Result<(), AppApiError> {
        let body = WhipEndedRequest {
            user_id,
            live_id,
            reason,
        };
        self.post::<serde_json::Value>("whip/ended", &body)
            .await
            .map(drop)
    }

    pub async fn sync(
        &self,
        sessions: Vec<WhipSessionReport>,
    ) -> Result<WhipSyncResponse, AppApiError> {
        self.post("whip/sync", &WhipSyncRequest { sessions }).await
    }

    pub async fn sync_recordings(
        &self,
        recordings: Vec<privatehub_protocol::recordings::RecordingReport>,
    ) -> Result<privatehub_protocol::recordings::RecordingsSyncResponse, AppApiError> {
        let body = privatehub_protocol::recordings::RecordingsSyncRequest { recordings };
        self.post("recordings/sync", &body).await
    }

    pub async fn current_live(&self, username: &str) -> Result<CurrentLive, AppApiError> {
        // Usernames are letters, digits, `_` and `-`; anything else cannot be a user.
        if username.is_empty()
            || username.len() > 64
            || !username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(AppApiError::NotFound);
        }
        let path = format!("/internal/v1/lives/{username}");
        let request = self.client.get(format!("{}{path}", self.base_url));
        self.call(request, &path).await
    }
}
