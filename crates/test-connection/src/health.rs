//! The two health checks over the services' public URLs, with the failure explained in
//! terms of what sits between the operator and the service (DNS, firewall, TLS, nginx).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, Url};
use serde::Deserialize;

use crate::options::Options;
use crate::report::CheckResult;

/// Which service a check talks to; used to word reasons and hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    App,
    Media,
}

impl Service {
    pub fn unit(self) -> &'static str {
        match self {
            Service::App => "privatehub-app",
            Service::Media => "privatehub-media",
        }
    }

    fn described(self) -> &'static str {
        match self {
            Service::App => "the app",
            Service::Media => "the media server",
        }
    }
}

/// The part of the media server's `/healthz` answer the later checks need.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaHealth {
    pub status: String,
    pub announced_ip: String,
    pub rtc_ports: Vec<u16>,
    /// The ICE-TCP port; absent (older servers) or null when off.
    #[serde(default)]
    pub rtc_tcp_port: Option<u16>,
}

/// A successful `/healthz` fetch.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub body: String,
    /// The address the request connected to.
    pub remote: Option<SocketAddr>,
    pub elapsed: Duration,
}

/// The HTTP client every check uses: no proxy (we test the direct path), bounded time.
pub fn http_client(options: &Options) -> Client {
    Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(options.insecure)
        .timeout(options.timeout)
        .connect_timeout(options.timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!(
            "privatehub-test-connection/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .expect("build the HTTP client")
}

/// `base` + `path`, keeping any path prefix of `base`.
pub fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(None);
    url
}

/// `GET {base}/healthz`; a non-200 answer or an error becomes a FAIL result.
pub async fn fetch_health(
    client: &Client,
    base: &Url,
    service: Service,
    check_name: &str,
) -> Result<Fetched, CheckResult> {
    let url = join(base, "/healthz");
    let started = Instant::now();
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|error| request_failure(check_name, &url, service, &error))?;
    let status = response.status();
    let remote = response.remote_addr();
    let body = response.text().await.unwrap_or_default();
    if status != StatusCode::OK {
        return Err(status_failure(check_name, &url, service, status, &body));
    }
    Ok(Fetched {
        status,
        body,
        remote,
        elapsed: started.elapsed(),
    })
}

/// The app's health check line.
pub async fn check_app(client: &Client, options: &Options) -> CheckResult {
    let name = "app health";
    match fetch_health(client, &options.app_url, Service::App, name).await {
        Ok(fetched) => CheckResult::pass(name, answered(&options.app_url, &fetched)),
        Err(failure) => failure,
    }
}

/// The media server's health check line, and what it reported when it passed.
pub async fn check_media(
    client: &Client,
    options: &Options,
) -> (CheckResult, Option<(MediaHealth, Option<SocketAddr>)>) {
    let name = "media health";
    let url = join(&options.media_url, "/healthz");
    let fetched = match fetch_health(client, &options.media_url, Service::Media, name).await {
        Ok(fetched) => fetched,
        Err(failure) => return (failure, None),
    };
    let health: MediaHealth = match serde_json::from_str(&fetched.body) {
        Ok(health) => health,
        Err(error) => {
            return (
                CheckResult::fail(
                    name,
                    format!(
                        "{url} answered 200 but not the media server's health JSON ({error}): {}",
                        snippet(&fetched.body)
                    ),
                    "is the media URL right? nginx may send this host name to another site",
                ),
                None,
            );
        }
    };
    if health.status != "ok" {
        return (
            CheckResult::fail(
                name,
                format!("media server reports status {:?}", health.status),
                "journalctl -u privatehub-media for the cause",
            ),
            None,
        );
    }
    let result = CheckResult::pass(
        name,
        format!(
            "{}; announces {} with RTC ports {:?}",
            answered(&options.media_url, &fetched),
            health.announced_ip,
            health.rtc_ports
        ),
    );
    (result, Some((health, fetched.remote)))
}

fn answered(base: &Url, fetched: &Fetched) -> String {
    let via = fetched
        .remote
        .map(|remote| format!(" via {remote}"))
        .unwrap_or_default();
    format!(
        "{} answered {} in {} ms{via}",
        join(base, "/healthz"),
        fetched.status.as_u16(),
        fetched.elapsed.as_millis()
    )
}

/// Explains a request that got no HTTP answer at all.
pub fn request_failure(
    check_name: &str,
    url: &Url,
    service: Service,
    error: &reqwest::Error,
) -> CheckResult {
    let chain = error_chain(error);
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or_default();
    let lower = chain.to_lowercase();
    let (reason, hint) = if lower.contains("dns error") || lower.contains("failed to lookup") {
        (
            format!("cannot resolve {host}: {chain}"),
            format!("check the DNS A/AAAA record of {host}"),
        )
    } else if lower.contains("certificate") || lower.contains("tls handshake") {
        (
            format!("TLS to {host}:{port} failed: {chain}"),
            "check the certificate paths in the nginx site and that the certificate covers this \
             name (certbot certificates); pass --insecure for a self-signed test certificate"
                .to_owned(),
        )
    } else if lower.contains("connection refused") {
        (
            format!("connection refused by {host}:{port}"),
            format!(
                "nothing listens there: is nginx running (systemctl status nginx) and TCP {port} \
                 open? without nginx, is {} running?",
                service.unit()
            ),
        )
    } else if error.is_timeout() || lower.contains("timed out") {
        (
            format!("no answer from {host}:{port} in time: {chain}"),
            format!(
                "a firewall may drop TCP {port}; check ufw/nftables and the cloud security group"
            ),
        )
    } else if lower.contains("wrong version number") || lower.contains("invalid http version") {
        (
            format!("{host}:{port} does not speak the scheme of {url}: {chain}"),
            "http:// vs https:// mixed up, or another program on that port".to_owned(),
        )
    } else {
        (
            format!("{url}: {chain}"),
            format!("is {} reachable from here?", service.described()),
        )
    };
    CheckResult::fail(check_name, reason, hint)
}

/// Explains an HTTP answer other than 200.
pub fn status_failure(
    check_name: &str,
    url: &Url,
    service: Service,
    status: StatusCode,
    body: &str,
) -> CheckResult {
    let unit = service.unit();
    let hint = match status.as_u16() {
        502 | 504 => format!(
            "nginx is up but {} behind it is not answering: systemctl status {unit}; \
             journalctl -u {unit} -n 50; check the upstream port in the nginx vars",
            service.described()
        ),
        503 => format!(
            "{} is overloaded or starting: journalctl -u {unit}",
            service.described()
        ),
        404 => "no /healthz here: nginx may route this host name to another site (server_name), \
                or the URL has a wrong path"
            .to_owned(),
        421 | 400 => {
            "nginx rejected the request: check server_name and the certificate name".to_owned()
        }
        _ => format!("journalctl -u {unit} -n 50"),
    };
    let what = match status.as_u16() {
        502 => " (nginx: bad gateway)",
        504 => " (nginx: gateway timeout)",
        _ => "",
    };
    CheckResult::fail(
        check_name,
        format!("{url} answered {status}{what}{}", body_note(body)),
        hint,
    )
}

/// The error and its sources, e.g. `error sending request: connection refused`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = inner.source();
    }
    parts.join(": ")
}

/// `: <first line of the body>`, or nothing for an HTML error page (nginx's own pages
/// only repeat the status).
pub fn body_note(body: &str) -> String {
    if body.trim_start().starts_with('<') || body.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", snippet(body))
    }
}

/// First line of a body, at most 120 characters.
pub fn snippet(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or("(empty body)");
    let mut short: String = line.chars().take(120).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_a_path_prefix() {
        let base = Url::parse("https://example.com/sfu/").unwrap();
        assert_eq!(join(&base, "/ws").as_str(), "https://example.com/sfu/ws");
        let root = Url::parse("http://127.0.0.1:5050").unwrap();
        assert_eq!(
            join(&root, "/healthz").as_str(),
            "http://127.0.0.1:5050/healthz"
        );
    }

    #[test]
    fn bad_gateway_points_at_the_service() {
        let url = Url::parse("https://sfu.example/healthz").unwrap();
        let result = status_failure(
            "media health",
            &url,
            Service::Media,
            StatusCode::BAD_GATEWAY,
            "<html>",
        );
        assert!(result.reason.contains("502"), "{result}");
        assert!(result.hint.contains("systemctl status privatehub-media"));
    }
}
