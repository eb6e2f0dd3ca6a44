//! Client of the app's internal API (`/internal/v1/...` on the app; `docs/protocol.md`,
//! "Internal API"): stream-key checks and live start/end for WHIP, current lives for
//! WHEP, and the periodic report of WHIP publishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The app's internal API at one or more instances (`MEDIA_APP_INTERNAL_URL`). Calls go
/// to the instance that answered last; one that cannot be connected to is skipped for
/// the next, so WHIP, WHEP and the reports go on while an instance is down. Only a
/// refused connection moves on: a request that may have reached an instance is not sent
/// twice.
#[derive(Clone)]
pub struct AppApi {
    client: reqwest::Client,
    base_urls: Arc<[String]>,
    /// Index into `base_urls` of the instance tried first.
    preferred: Arc<AtomicUsize>,
    secret: SecretString,
}

impl AppApi {
    pub fn new(base_urls: &[String], secret: SecretString) -> Self {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let base_urls: Vec<String> = base_urls
            .iter()
            .map(|url| url.trim_end_matches('/').to_owned())
            .collect();
        AppApi {
            client,
            base_urls: base_urls.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            secret,
        }
    }

    /// Sends what `build` makes for each instance in turn, from the preferred one, until
    /// one can be connected to.
    async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        path: &str,
    ) -> Result<reqwest::Response, AppApiError> {
        let count = self.base_urls.len().max(1);
        let first = self.preferred.load(Ordering::Relaxed) % count;
        let mut last_error = None;
        for offset in 0..count {
            let index = (first + offset) % count;
            let Some(base_url) = self.base_urls.get(index) else {
                break;
            };
            match build(base_url).bearer_auth(self.token(path)?).send().await {
                Ok(response) => {
                    if index != first {
                        self.preferred.store(index, Ordering::Relaxed);
                        tracing::warn!(
                            instance = index,
                            "an app instance could not be reached; calling the next one"
                        );
                    }
                    return Ok(response);
                }
                Err(error) if error.is_connect() => last_error = Some(error),
                // Without the URL: it can hold a username, and is in the logs already.
                Err(error) => {
                    return Err(AppApiError::Unavailable(error.without_url().to_string()));
                }
            }
        }
        Err(AppApiError::Unavailable(last_error.map_or_else(
            || "no app URL".to_owned(),
            |error| error.without_url().to_string(),
        )))
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
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, AppApiError> {
        let response = self.send(build, path).await?;
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
        let build = |base_url: &str| self.client.post(format!("{base_url}{path}")).json(body);
        self.call(build, &path).await
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
        let build = |base_url: &str| self.client.get(format!("{base_url}{path}"));
        self.call(build, &path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// An app instance that answers every request with `body` (200, JSON), counting them.
    fn answering_instance(body: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, served)
    }

    /// A loopback port nothing listens on (connections are refused).
    fn down_instance() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        url
    }

    #[tokio::test]
    async fn an_instance_that_refuses_connections_is_skipped_and_the_next_one_kept() {
        let (up, served) = answering_instance(r#"{"live_id":7,"username":"alice","title":"Live"}"#);
        let api = AppApi::new(
            &[down_instance(), up],
            SecretString::from("a-media-token-secret-for-the-failover-test".to_owned()),
        );
        let live = api
            .current_live("alice")
            .await
            .expect("the second instance answers");
        assert_eq!(live.live_id, LiveId(7));
        assert_eq!(served.load(Ordering::Relaxed), 1);
        // The instance that answered is asked first from now on.
        assert_eq!(api.preferred.load(Ordering::Relaxed), 1);
        api.current_live("alice").await.expect("again");
        assert_eq!(served.load(Ordering::Relaxed), 2);
        // With every instance down, the call fails as unavailable.
        let down = AppApi::new(
            &[down_instance(), down_instance()],
            SecretString::from("a-media-token-secret-for-the-failover-test".to_owned()),
        );
        assert!(matches!(
            down.current_live("alice").await,
            Err(AppApiError::Unavailable(_))
        ));
    }
}
