//! Starts the real `privatehub-app` and `privatehub-media` binaries on loopback, each
//! with its own temporary working directory, free ports and a shared token secret, for
//! end-to-end, nginx and load-generator tests.
//!
//! The binaries must already be built (`cargo build --workspace --bins`, which
//! `scripts/test` does). A missing or stale binary is a loud panic rather than a silent
//! test of old code.

pub mod cluster;
pub mod coturn;
pub mod ffprobe;
pub mod netem;
pub mod nginx;
mod ports;
pub mod postgres;
mod process;
pub mod redis;

pub use ports::{free_tcp_port, free_udp_port_range};
pub use process::{ServiceProcess, binary_path, wait_for_http_ok};

use std::path::PathBuf;
use std::time::Duration;

/// How long a service may take to answer its health check after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`start_stack`]. `Default` gives two media workers, loopback everywhere.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// `MEDIA_WORKERS`.
    pub media_workers: u16,
    /// Extra `Origin`s the media server accepts besides the app's own URL.
    pub extra_cors_origins: Vec<String>,
    /// Overrides `APP_PUBLIC_URL` (e.g. the nginx front's URL); defaults to the app's
    /// own loopback URL.
    pub app_public_url: Option<String>,
    /// Overrides `MEDIA_PUBLIC_URL` (what browsers use to reach the media server).
    pub media_public_url: Option<String>,
    /// Extra environment variables for the app.
    pub app_env: Vec<(String, String)>,
    /// Extra environment variables for the media server.
    pub media_env: Vec<(String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            media_workers: 2,
            extra_cors_origins: Vec::new(),
            app_public_url: None,
            media_public_url: None,
            app_env: Vec::new(),
            media_env: Vec::new(),
        }
    }
}

/// Both services running; dropped, it stops them and removes their data.
pub struct RunningStack {
    /// Base URL of the app as started, e.g. `http://127.0.0.1:41234`.
    pub app_url: String,
    /// Base URL of the media server's HTTP/WebSocket side.
    pub media_url: String,
    pub app_port: u16,
    pub media_port: u16,
    /// The media server's UDP port, as (first, last): one port shared by every worker.
    pub rtc_ports: (u16, u16),
    /// The shared `MEDIA_TOKEN_SECRET`.
    pub token_secret: String,
    /// The app's SQLite file.
    pub database_path: PathBuf,
    pub media: ServiceProcess,
    pub app: ServiceProcess,
    /// Where the media server writes its recordings (see [`RunningStack::media_recordings_dir`]).
    media_recordings_dir: PathBuf,
    _data: tempfile::TempDir,
}

/// Starts the media server, then the app, and waits until both answer `/healthz`.
pub fn start_stack(options: StackOptions) -> RunningStack {
    let data = tempfile::tempdir().expect("create temporary data directory");
    let token_secret = format!("privatehub-test-secret-{:032}", std::process::id());
    // The app's port is chosen first: the media server must accept its exact origin.
    let app_port = free_tcp_port();
    let app_url = format!("http://127.0.0.1:{app_port}");
    let app_public_url = options.app_public_url.clone().unwrap_or(app_url.clone());
    let media_dir = data.path().join("media");
    let media_recordings_dir = recordings_dir(&options, &media_dir);
    let media = start_media(
        &options,
        media_dir,
        &token_secret,
        &app_public_url,
        &app_url,
    );
    let media_public_url = options
        .media_public_url
        .clone()
        .unwrap_or(media.url.clone());
    let app_dir = data.path().join("app");
    std::fs::create_dir_all(&app_dir).expect("create app data directory");
    let database_path = app_dir.join("privatehub.sqlite");
    let mut env: Vec<(String, String)> = vec![
        ("APP_BIND".into(), "127.0.0.1".into()),
        ("APP_PORT".into(), app_port.to_string()),
        ("DATABASE_URL".into(), database_path.display().to_string()),
        ("APP_PUBLIC_URL".into(), app_public_url),
        ("MEDIA_PUBLIC_URL".into(), media_public_url),
        ("MEDIA_INTERNAL_URL".into(), media.url.clone()),
        ("MEDIA_TOKEN_SECRET".into(), token_secret.clone()),
    ];
    env.extend(options.app_env.iter().cloned());
    let app = ServiceProcess::spawn("privatehub-app", &app_dir, &env);
    wait_for_http_ok(&format!("{app_url}/healthz"), START_TIMEOUT).unwrap_or_else(|error| {
        panic!("app did not become healthy: {error}\n{}", app.log_tail(40))
    });
    RunningStack {
        app_url,
        media_url: media.url,
        app_port,
        media_port: media.port,
        rtc_ports: media.rtc_ports,
        token_secret,
        database_path,
        media: media.process,
        app,
        media_recordings_dir,
        _data: data,
    }
}

/// `MEDIA_RECORDINGS_DIR` as the media server started in `media_dir` resolves it: the
/// test's own value if it set one, else the server's default `data/recordings`, both
/// relative to the server's working directory.
fn recordings_dir(options: &StackOptions, media_dir: &std::path::Path) -> PathBuf {
    let configured = options
        .media_env
        .iter()
        .rev()
        .find(|(key, _)| key == "MEDIA_RECORDINGS_DIR")
        .map_or("data/recordings", |(_, value)| value.as_str());
    media_dir.join(configured)
}

impl RunningStack {
    /// The directory holding the media server's recordings (`{id}.webm` or `{id}.mp4`,
    /// each with its `{id}.json` report).
    pub fn media_recordings_dir(&self) -> PathBuf {
        self.media_recordings_dir.clone()
    }

    /// Starts the app again after a crash or a stop (same port, same database) and
    /// waits until it is healthy.
    pub fn restart_app(&mut self) {
        self.app.restart();
        wait_for_http_ok(&format!("{}/healthz", self.app_url), START_TIMEOUT).unwrap_or_else(
            |error| {
                panic!(
                    "restarted app not healthy: {error}\n{}",
                    self.app.log_tail(40)
                )
            },
        );
    }

    /// Starts the media server again (same ports) and waits until it is healthy.
    pub fn restart_media(&mut self) {
        self.media.restart();
        wait_for_http_ok(&format!("{}/healthz", self.media_url), START_TIMEOUT).unwrap_or_else(
            |error| {
                panic!(
                    "restarted media server not healthy: {error}\n{}",
                    self.media.log_tail(40)
                )
            },
        );
    }
}

/// A media server started on its own by [`start_media_server`].
pub struct RunningMedia {
    pub url: String,
    pub port: u16,
    pub rtc_ports: (u16, u16),
    pub token_secret: String,
    pub process: ServiceProcess,
    _data: tempfile::TempDir,
}

/// Starts only the media server (for load-generator and connectivity tests).
pub fn start_media_server(options: &StackOptions, token_secret: &str) -> RunningMedia {
    let data = tempfile::tempdir().expect("create temporary data directory");
    let app_origin = options
        .app_public_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1".into());
    // No app runs: its internal API is a closed port (WHIP and WHEP answer 503).
    let no_app = format!("http://127.0.0.1:{}", free_tcp_port());
    let started = start_media(
        options,
        data.path().to_path_buf(),
        token_secret,
        &app_origin,
        &no_app,
    );
    RunningMedia {
        url: started.url,
        port: started.port,
        rtc_ports: started.rtc_ports,
        token_secret: token_secret.to_owned(),
        process: started.process,
        _data: data,
    }
}

pub(crate) struct StartedMedia {
    pub(crate) url: String,
    pub(crate) port: u16,
    pub(crate) rtc_ports: (u16, u16),
    pub(crate) process: ServiceProcess,
}

pub(crate) fn start_media(
    options: &StackOptions,
    dir: PathBuf,
    token_secret: &str,
    app_origin: &str,
    app_internal_url: &str,
) -> StartedMedia {
    std::fs::create_dir_all(&dir).expect("create media data directory");
    let port = free_tcp_port();
    // The default layout of an install: one UDP port for every worker.
    let rtc_port = free_udp_port_range(1).0;
    let rtc_ports = (rtc_port, rtc_port);
    let mut origins = vec![app_origin.trim_end_matches('/').to_owned()];
    origins.extend(options.extra_cors_origins.iter().cloned());
    let mut env: Vec<(String, String)> = vec![
        ("MEDIA_BIND".into(), "127.0.0.1".into()),
        ("MEDIA_SERVER_PORT".into(), port.to_string()),
        ("MEDIA_ANNOUNCED_IP".into(), "127.0.0.1".into()),
        ("MEDIA_RTC_PORT".into(), rtc_port.to_string()),
        // ICE-TCP is covered by the media integration tests; off here so a browser test
        // never routes around its UDP relay (lossy link, simulcast) over TCP.
        ("MEDIA_RTC_TCP_PORT".into(), "off".into()),
        ("MEDIA_WORKERS".into(), options.media_workers.to_string()),
        ("MEDIA_TOKEN_SECRET".into(), token_secret.to_owned()),
        ("CORS_ORIGIN".into(), origins.join(",")),
        ("MEDIA_APP_INTERNAL_URL".into(), app_internal_url.to_owned()),
    ];
    env.extend(options.media_env.iter().cloned());
    let process = ServiceProcess::spawn("privatehub-media", &dir, &env);
    let url = format!("http://127.0.0.1:{port}");
    wait_for_http_ok(&format!("{url}/healthz"), START_TIMEOUT).unwrap_or_else(|error| {
        panic!(
            "media server did not become healthy: {error}\n{}",
            process.log_tail(40)
        )
    });
    StartedMedia {
        url,
        port,
        rtc_ports,
        process,
    }
}
