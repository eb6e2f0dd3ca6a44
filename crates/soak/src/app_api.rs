//! The app's real HTTP API as the soak uses it: sign up, go live, media tokens. Every
//! POST carries the site's `Origin` (the CSRF check).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::cookie::{CookieStore, Jar};
use serde_json::{Value, json};

/// Password of every soak account.
pub const PASSWORD: &str = "soak-password-0123";
/// One HTTP request, end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The app's base URL and an HTTP client, signed in or not.
#[derive(Clone)]
pub struct AppClient {
    pub base: String,
    client: reqwest::Client,
    jar: Arc<Jar>,
    pub username: Option<String>,
}

/// A media token as the app hands it out.
#[derive(Debug, Clone)]
pub struct MediaToken {
    pub token: String,
    /// `publish` or `watch`.
    pub role: String,
}

impl AppClient {
    /// A client without a session (an anonymous visitor), connecting from `source`
    /// (a loopback address) if given.
    pub fn anonymous(base: &str, source: Option<IpAddr>) -> anyhow::Result<AppClient> {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .local_address(source)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(AppClient {
            base: base.trim_end_matches('/').to_owned(),
            client,
            jar,
            username: None,
        })
    }

    /// Signs `username` up (which also signs it in) from `source`.
    pub async fn signup(
        base: &str,
        username: &str,
        source: Option<IpAddr>,
    ) -> anyhow::Result<AppClient> {
        let mut client = AppClient::anonymous(base, source)?;
        let response = client
            .post(
                "/api/auth/signup",
                &json!({"username": username, "password": PASSWORD}),
            )
            .await?;
        if response.status() != 201 {
            bail!(
                "sign-up of {username}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        client.username = Some(username.to_owned());
        Ok(client)
    }

    /// Ends this client's session (`POST /api/auth/logout`) and signs in again
    /// (`POST /api/auth/login`): a new session, its password hashed again.
    pub async fn sign_in_again(&self) -> anyhow::Result<()> {
        let username = self.username.as_deref().context("an anonymous client")?;
        let response = self.post("/api/auth/logout", &json!({})).await?;
        if response.status() != 204 {
            bail!("log-out of {username}: {}", response.status());
        }
        let response = self
            .post(
                "/api/auth/login",
                &json!({"username": username, "password": PASSWORD}),
            )
            .await?;
        if response.status() != 200 {
            bail!(
                "log-in of {username}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// `POST /api/lives/start`; returns the live's id.
    pub async fn start_live(&self, title: &str) -> anyhow::Result<i64> {
        let response = self
            .post("/api/lives/start", &json!({"title": title}))
            .await?;
        let status = response.status();
        let body: Value = response.json().await.context("start live: JSON body")?;
        if status != 201 && status != 200 {
            bail!("start live: {status} {body}");
        }
        body["id"]
            .as_i64()
            .with_context(|| format!("start live: no id in {body}"))
    }

    /// `POST /api/lives/{channel}/token`: `publish` for the owner, else `watch`.
    pub async fn media_token(&self, channel: &str) -> anyhow::Result<MediaToken> {
        let response = self
            .post(&format!("/api/lives/{channel}/token"), &json!({}))
            .await?;
        let status = response.status();
        let body: Value = response.json().await.context("token: JSON body")?;
        if status != 200 {
            bail!("token: {status} {body}");
        }
        Ok(MediaToken {
            token: body["token"]
                .as_str()
                .with_context(|| format!("token: no token in {body}"))?
                .to_owned(),
            role: body["role"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// The `Cookie` header this client would send to the app (the session), if any.
    pub fn cookie_header(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.base).ok()?;
        self.jar
            .cookies(&url)
            .and_then(|value| value.to_str().ok().map(str::to_owned))
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
        self.client
            .post(format!("{}{path}", self.base))
            .header("Origin", &self.base)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))
    }
}
