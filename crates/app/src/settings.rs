//! [`Settings`]: the app's whole configuration, read once from the environment (after
//! loading `.env` with dotenvy). A bad value stops start-up with a [`SettingsError`]
//! naming the variable. Every variable is documented in `docs/configuration.md`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use privatehub_protocol::TurnConfig;

use crate::db::{DatabaseLocation, PoolOptions};
use crate::domain::Origin;

/// Where the shared media-token secret is kept when `MEDIA_TOKEN_SECRET` is not set.
pub const DEFAULT_MEDIA_TOKEN_SECRET_FILE: &str = "data/media-token-secret";
/// Where the stream-key encryption secret is kept when `STREAM_KEY_SECRET` is not set.
pub const DEFAULT_STREAM_KEY_SECRET_FILE: &str = "data/stream-key-secret";
/// Default database file.
pub const DEFAULT_DATABASE_PATH: &str = "data/privatehub.sqlite";

/// The app's configuration. Fields are public so tests can adjust them after
/// [`Settings::from_lookup`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `APP_BIND`: address to listen on.
    pub bind: IpAddr,
    /// `APP_PORT`: port to listen on (0 picks a free one).
    pub port: u16,
    /// `APP_WORKERS`: HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// `DATABASE_URL`: a SQLite file path (`sqlite://` prefix optional; the default) or
    /// a `postgres://`/`postgresql://` URL.
    pub database: DatabaseLocation,
    /// `DATABASE_POOL_SIZE`, `DATABASE_CONNECT_TIMEOUT_SECONDS`: connections held at
    /// most, and how long opening or waiting for one may take before a request fails.
    pub database_pool: PoolOptions,
    /// `REDIS_URL`: a `redis://` or `rediss://` URL (optional).
    pub redis_url: Option<SecretString>,
    /// `APP_PUBLIC_URL`: the origin browsers use; CSRF checks compare against it, and
    /// cookies are `Secure` when it is https.
    pub public_origin: Origin,
    /// `MEDIA_PUBLIC_URL` (alias `NEXT_PUBLIC_MEDIA_SERVER_URL`): the media server as
    /// browsers reach it. Returned with media tokens.
    pub media_public_url: String,
    /// Origin of [`Settings::media_public_url`], for the CSP `connect-src`.
    pub media_origin: Origin,
    /// `MEDIA_TOKEN_SECRET` or the content of `MEDIA_TOKEN_SECRET_FILE`.
    pub media_token_secret: SecretString,
    /// `MEDIA_TOKEN_TTL_SECONDS`: lifetime of a media token.
    pub media_token_ttl: Duration,
    /// `SESSION_TTL_HOURS`: lifetime of a login session.
    pub session_ttl: Duration,
    /// `TRUST_PROXY_HEADERS`: take the client address and scheme from
    /// `X-Forwarded-For`/`X-Forwarded-Proto`. Only enable behind a proxy that sets them.
    pub trust_proxy_headers: bool,
    /// `LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_IP`, `LOGIN_MAX_FAILURES_PER_ACCOUNT`,
    /// `LOGIN_MAX_FAILURES_PER_IP`, `LOGIN_RATE_WINDOW_SECONDS`.
    pub login_rate_limit: LoginRateLimitSettings,
    /// `SIGNUP_MAX_PER_IP`, `SIGNUP_RATE_WINDOW_SECONDS`.
    pub signup_rate_limit: SignupRateLimitSettings,
    /// `PASSWORD_HASH_WORKERS`, `PASSWORD_HASH_QUEUE`, `PASSWORD_HASH_QUEUE_PER_IP`.
    pub hashing: HashingSettings,
    /// `APP_MAX_SOCKETS_PER_IP`: open `/ws` sockets one client network may hold.
    pub max_sockets_per_ip: usize,
    /// `CHAT_WRITE_GIVE_UP_SECONDS`: how long a chat message that cannot be saved is
    /// retried before its sender is told `not_stored`.
    pub chat_write_give_up: Duration,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `STREAM_KEY_SECRET` or the content of `STREAM_KEY_SECRET_FILE`: seals the stream
    /// keys stored in the database (they can be revealed, so they are not hashed).
    pub stream_key_secret: SecretString,
    /// `MEDIA_INTERNAL_URL`: where the app reaches the media server's internal API
    /// (`/internal/v1/...`), e.g. to end a publish whose stream key was rotated.
    pub media_internal_url: String,
    /// `WHIP_UNREPORTED_LIVE_SECONDS`: a live published over WHIP that no media server
    /// has reported for this long is ended (the media server crashed or was replaced).
    pub whip_unreported_live: Duration,
    /// `TURN_URLS`, `TURN_SECRET` (or `TURN_SECRET_FILE`), `TURN_CREDENTIAL_TTL_SECONDS`:
    /// the coturn whose time-limited credentials go out with every media token.
    pub turn: Option<TurnConfig>,
}

/// Limits on failed log-ins (see `auth::rate_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRateLimitSettings {
    /// Failures of one account from one network before growing delays start.
    pub free_failures_per_pair: u32,
    /// Failures of one account from anywhere per window (known networks exempt).
    pub max_per_account: u32,
    /// Failures from one network across accounts per window.
    pub max_per_network: u32,
    pub window: Duration,
}

/// Limit on sign-ups per client network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignupRateLimitSettings {
    pub max_per_network: u32,
    pub window: Duration,
}

/// The password-hashing pool (see `auth::hashing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingSettings {
    /// Threads computing hashes; each holds one 19 MiB buffer while busy.
    pub workers: usize,
    /// Jobs that may wait for a thread; more are refused with 503.
    pub queue: usize,
    /// Places (queued or running) one client network may hold; more get 429.
    pub per_client: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration value that stops start-up.
#[derive(Debug, thiserror::Error)]
#[error("configuration error in {variable}: {message}")]
pub struct SettingsError {
    /// The environment variable at fault.
    pub variable: &'static str,
    pub message: String,
}

fn invalid(variable: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        message: message.into(),
    }
}

impl Settings {
    /// Loads `.env` (if present; real environment variables win) and reads the
    /// process environment.
    pub fn from_env() -> Result<Settings, SettingsError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(error) if error.not_found() => {}
            Err(error) => return Err(invalid("(.env file)", error.to_string())),
        }
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every variable through `lookup` (empty values count as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let bind = parse_or(&get, "APP_BIND", IpAddr::from([127, 0, 0, 1]), |raw| {
            raw.trim()
                .parse::<IpAddr>()
                .map_err(|_| "expected an IP address such as 127.0.0.1 or 0.0.0.0".to_owned())
        })?;
        let port = parse_or(&get, "APP_PORT", 3000u16, |raw| {
            raw.trim()
                .parse()
                .map_err(|_| "expected a port number 0-65535".to_owned())
        })?;
        let workers = match get("APP_WORKERS") {
            None => None,
            Some(raw) => Some(parse_ranged(&raw, "APP_WORKERS", 1, 256)? as usize),
        };
        let database = parse_or(
            &get,
            "DATABASE_URL",
            DatabaseLocation::Sqlite(PathBuf::from(DEFAULT_DATABASE_PATH)),
            parse_database_url,
        )?;
        let database_pool = PoolOptions {
            max_size: match get("DATABASE_POOL_SIZE") {
                None => 8,
                Some(raw) => parse_ranged(&raw, "DATABASE_POOL_SIZE", 1, 1000)? as u32,
            },
            connect_timeout: match get("DATABASE_CONNECT_TIMEOUT_SECONDS") {
                None => Duration::from_secs(5),
                Some(raw) => Duration::from_secs(parse_ranged(
                    &raw,
                    "DATABASE_CONNECT_TIMEOUT_SECONDS",
                    1,
                    300,
                )?),
            },
        };
        let redis_url = match get("REDIS_URL") {
            None => None,
            Some(raw) => {
                Some(parse_redis_url(&raw).map_err(|message| invalid("REDIS_URL", message))?)
            }
        };
        // Every instance on one PostgreSQL database must share these secrets; the
        // per-directory secret files would give each instance its own.
        if database.is_postgres() {
            for variable in ["MEDIA_TOKEN_SECRET", "STREAM_KEY_SECRET"] {
                if get(variable).is_none() {
                    return Err(invalid(
                        variable,
                        "must be set explicitly when DATABASE_URL is PostgreSQL \
                         (several instances share the database, and the secret file \
                         would give each its own secret)",
                    ));
                }
            }
        }
        let public_origin = parse_or(
            &get,
            "APP_PUBLIC_URL",
            Origin::parse_url("http://localhost:3000").expect("valid default"),
            |raw| Origin::parse_url(raw).map_err(|error| error.to_string()),
        )?;
        let (media_variable, media_public_url) = match get("MEDIA_PUBLIC_URL") {
            Some(url) => ("MEDIA_PUBLIC_URL", url),
            None => match get("NEXT_PUBLIC_MEDIA_SERVER_URL") {
                Some(url) => ("NEXT_PUBLIC_MEDIA_SERVER_URL", url),
                None => ("MEDIA_PUBLIC_URL", "http://localhost:5050".to_owned()),
            },
        };
        let media_public_url = media_public_url.trim().trim_end_matches('/').to_owned();
        let media_origin = Origin::parse_url_or_websocket(&media_public_url)
            .map_err(|error| invalid(media_variable, error.to_string()))?;
        let media_token_secret = match get("MEDIA_TOKEN_SECRET") {
            Some(secret) => check_secret(secret.trim(), "MEDIA_TOKEN_SECRET")?,
            None => {
                let path = get("MEDIA_TOKEN_SECRET_FILE")
                    .unwrap_or_else(|| DEFAULT_MEDIA_TOKEN_SECRET_FILE.to_owned());
                load_or_create_secret_file(
                    Path::new(path.trim()),
                    "MEDIA_TOKEN_SECRET_FILE",
                    "MEDIA_TOKEN_SECRET is not set: generated a random secret into the file; \
                     the media server must use the same secret (set MEDIA_TOKEN_SECRET in production)",
                )?
            }
        };
        let stream_key_secret = match get("STREAM_KEY_SECRET") {
            Some(secret) => check_secret(secret.trim(), "STREAM_KEY_SECRET")?,
            None => {
                let path = get("STREAM_KEY_SECRET_FILE")
                    .unwrap_or_else(|| DEFAULT_STREAM_KEY_SECRET_FILE.to_owned());
                load_or_create_secret_file(
                    Path::new(path.trim()),
                    "STREAM_KEY_SECRET_FILE",
                    "STREAM_KEY_SECRET is not set: generated a random secret into the file; \
                     keep it with the database backups (stream keys cannot be revealed without it)",
                )?
            }
        };
        let media_internal_url = get("MEDIA_INTERNAL_URL")
            .unwrap_or_else(|| "http://127.0.0.1:5050".to_owned())
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(media_internal_url.starts_with("http://")
            || media_internal_url.starts_with("https://"))
        {
            return Err(invalid(
                "MEDIA_INTERNAL_URL",
                "expected an http:// or https:// URL".to_owned(),
            ));
        }
        let whip_unreported_live = match get("WHIP_UNREPORTED_LIVE_SECONDS") {
            None => Duration::from_secs(30),
            Some(raw) => {
                Duration::from_secs(parse_ranged(&raw, "WHIP_UNREPORTED_LIVE_SECONDS", 2, 3600)?)
            }
        };
        let media_token_ttl = match get("MEDIA_TOKEN_TTL_SECONDS") {
            None => Duration::from_secs(300),
            Some(raw) => {
                Duration::from_secs(parse_ranged(&raw, "MEDIA_TOKEN_TTL_SECONDS", 10, 86_400)?)
            }
        };
        let session_ttl = match get("SESSION_TTL_HOURS") {
            None => Duration::from_secs(30 * 24 * 3600),
            Some(raw) => {
                Duration::from_secs(3600 * parse_ranged(&raw, "SESSION_TTL_HOURS", 1, 24 * 365)?)
            }
        };
        let trust_proxy_headers = parse_or(&get, "TRUST_PROXY_HEADERS", false, parse_bool)?;
        let ranged = |variable: &'static str, default: u64, min: u64, max: u64| match get(variable)
        {
            None => Ok(default),
            Some(raw) => parse_ranged(&raw, variable, min, max),
        };
        let login_rate_limit = LoginRateLimitSettings {
            free_failures_per_pair: ranged("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_IP", 5, 1, 1000)?
                as u32,
            max_per_account: ranged("LOGIN_MAX_FAILURES_PER_ACCOUNT", 50, 1, 100_000)? as u32,
            max_per_network: ranged("LOGIN_MAX_FAILURES_PER_IP", 20, 1, 100_000)? as u32,
            window: Duration::from_secs(ranged("LOGIN_RATE_WINDOW_SECONDS", 900, 1, 86_400)?),
        };
        let signup_rate_limit = SignupRateLimitSettings {
            max_per_network: ranged("SIGNUP_MAX_PER_IP", 5, 1, 100_000)? as u32,
            window: Duration::from_secs(ranged("SIGNUP_RATE_WINDOW_SECONDS", 3600, 1, 86_400)?),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let hash_workers = ranged("PASSWORD_HASH_WORKERS", cores.min(16), 1, 64)?;
        let hash_queue = ranged("PASSWORD_HASH_QUEUE", (4 * hash_workers).max(8), 1, 10_000)?;
        let hashing = HashingSettings {
            workers: hash_workers as usize,
            queue: hash_queue as usize,
            per_client: ranged(
                "PASSWORD_HASH_QUEUE_PER_IP",
                (hash_queue / 4).max(1),
                1,
                10_000,
            )? as usize,
        };
        let max_sockets_per_ip = ranged("APP_MAX_SOCKETS_PER_IP", 20, 1, 1_000_000)? as usize;
        let chat_write_give_up =
            Duration::from_secs(ranged("CHAT_WRITE_GIVE_UP_SECONDS", 30, 1, 3600)?);
        let turn = TurnConfig::from_lookup(get).map_err(|error| SettingsError {
            variable: error.variable,
            message: error.message,
        })?;
        let log_format = parse_or(&get, "LOG_FORMAT", LogFormat::Text, |raw| {
            match raw.trim() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected `text` or `json`".to_owned()),
            }
        })?;

        Ok(Settings {
            bind,
            port,
            workers,
            database,
            database_pool,
            redis_url,
            public_origin,
            media_public_url,
            media_origin,
            media_token_secret,
            media_token_ttl,
            session_ttl,
            trust_proxy_headers,
            login_rate_limit,
            signup_rate_limit,
            hashing,
            max_sockets_per_ip,
            chat_write_give_up,
            log_format,
            stream_key_secret,
            media_internal_url,
            whip_unreported_live,
            turn,
        })
    }
}

fn parse_or<T>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, SettingsError> {
    match get(variable) {
        None => Ok(default),
        Some(raw) => parse(&raw).map_err(|message| invalid(variable, message)),
    }
}

fn parse_ranged(
    raw: &str,
    variable: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, SettingsError> {
    privatehub_edge::env::parse_ranged(raw, min, max).map_err(|message| invalid(variable, message))
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    privatehub_edge::env::parse_bool(raw).map_err(str::to_owned)
}

/// Accepts `postgres://…`/`postgresql://…`, or `sqlite://path`, `sqlite:path` or a
/// plain path (`DATABASE_URL`, and the copy command's arguments).
pub fn parse_database_url(raw: &str) -> Result<DatabaseLocation, String> {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        let host = crate::db::postgres_host_and_database(raw);
        let (host, database) = host.split_once('/').unwrap_or((&host, ""));
        if host.is_empty() && database.is_empty() {
            return Err("expected a PostgreSQL URL with a host and database, \
                 e.g. postgres://privatehub:PASSWORD@127.0.0.1:5432/privatehub"
                .to_owned());
        }
        return Ok(DatabaseLocation::Postgres(SecretString::from(
            raw.to_owned(),
        )));
    }
    let path = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .unwrap_or(raw);
    if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
        return Err("expected a SQLite file path, e.g. sqlite://data/privatehub.sqlite".to_owned());
    }
    if raw.contains("://") && !raw.starts_with("sqlite://") {
        return Err(
            "expected sqlite://path, a plain path, or a postgres:// or postgresql:// URL"
                .to_owned(),
        );
    }
    Ok(DatabaseLocation::Sqlite(PathBuf::from(path)))
}

/// Accepts `redis://…` or `rediss://…` (TLS) with a host.
fn parse_redis_url(raw: &str) -> Result<SecretString, String> {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("redis://")
        .or_else(|| lower.strip_prefix("rediss://"))
        .ok_or_else(|| "expected a redis:// or rediss:// URL".to_owned())?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if host.split(['/', '?']).next().unwrap_or_default().is_empty() {
        return Err("expected a host, e.g. redis://127.0.0.1:6379".to_owned());
    }
    Ok(SecretString::from(raw.to_owned()))
}

/// Refuses short secrets and the published example values (anyone could sign media
/// tokens with those); the rule is shared with the media server.
fn check_secret(secret: &str, variable: &'static str) -> Result<SecretString, SettingsError> {
    if let Some(problem) = privatehub_protocol::media_token::media_token_secret_problem(secret) {
        return Err(invalid(variable, format!("the secret {problem}")));
    }
    Ok(SecretString::from(secret.to_owned()))
}

/// Reads the shared secret from `path`, creating it (random, mode 0600) on first
/// start. The media server reads the same file, so `scripts/dev` needs no set-up.
fn load_or_create_secret_file(
    path: &Path,
    variable: &'static str,
    created_warning: &'static str,
) -> Result<SecretString, SettingsError> {
    match std::fs::read_to_string(path) {
        Ok(content) => check_secret(content.trim(), variable),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let secret = hex(&bytes);
            write_private_file(path, &secret).map_err(|error| {
                invalid(
                    variable,
                    format!("cannot create {}: {error}", path.display()),
                )
            })?;
            tracing::warn!(path = %path.display(), "{created_warning}");
            Ok(SecretString::from(secret))
        }
        Err(error) => Err(invalid(
            variable,
            format!("cannot read {}: {error}", path.display()),
        )),
    }
}

fn write_private_file(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")
}

/// Lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

impl Settings {
    /// The secret as bytes, for signing media tokens.
    pub fn media_token_secret_bytes(&self) -> &[u8] {
        self.media_token_secret.expose_secret().as_bytes()
    }

    /// The media server's HTTP base as browsers reach it, for the files it serves
    /// (recordings): `MEDIA_PUBLIC_URL`, a `ws://` or `wss://` one as `http://` or
    /// `https://`.
    pub fn media_http_base(&self) -> String {
        let url = &self.media_public_url;
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        match scheme.to_ascii_lowercase().as_str() {
            "ws" => format!("http://{rest}"),
            "wss" => format!("https://{rest}"),
            _ => url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Otherwise the default secret file would be created in the crate's directory.
        map.entry("STREAM_KEY_SECRET".into())
            .or_insert_with(|| "stream-key-test-secret-0123456789abcdef".into());
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let s = settings(&[("MEDIA_TOKEN_SECRET", SECRET)]).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1");
        assert_eq!(s.port, 3000);
        assert!(
            matches!(&s.database, DatabaseLocation::Sqlite(path) if path == Path::new("data/privatehub.sqlite"))
        );
        assert_eq!(s.database_pool.max_size, 8);
        assert_eq!(s.database_pool.connect_timeout, Duration::from_secs(5));
        assert!(s.redis_url.is_none());
        assert_eq!(s.public_origin.to_string(), "http://localhost:3000");
        assert_eq!(s.media_public_url, "http://localhost:5050");
        assert_eq!(s.media_token_ttl, Duration::from_secs(300));
        assert!(!s.trust_proxy_headers);
        assert_eq!(s.media_token_secret_bytes(), SECRET.as_bytes());
        assert_eq!(s.media_http_base(), "http://localhost:5050");
    }

    #[test]
    fn the_media_http_base_is_the_public_url_over_http() {
        for (public, base) in [
            ("wss://sfu.example.com/", "https://sfu.example.com"),
            ("WS://sfu.example.com:5050", "http://sfu.example.com:5050"),
            (
                "https://sfu.example.com/media",
                "https://sfu.example.com/media",
            ),
        ] {
            let s =
                settings(&[("MEDIA_TOKEN_SECRET", SECRET), ("MEDIA_PUBLIC_URL", public)]).unwrap();
            assert_eq!(s.media_http_base(), base, "{public}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (variable, value) in [
            ("APP_PORT", "70000"),
            ("APP_BIND", "not-an-ip"),
            ("APP_PUBLIC_URL", "localhost:3000"),
            ("MEDIA_PUBLIC_URL", "ftp://x"),
            ("NEXT_PUBLIC_MEDIA_SERVER_URL", "nope"),
            ("MEDIA_TOKEN_SECRET", "short"),
            (
                "MEDIA_TOKEN_SECRET",
                "change-me-to-the-output-of-openssl-rand-hex-32",
            ),
            ("MEDIA_TOKEN_TTL_SECONDS", "0"),
            ("TRUST_PROXY_HEADERS", "maybe"),
            ("DATABASE_URL", "mysql://x/y"),
            ("DATABASE_URL", "postgres://"),
            ("DATABASE_URL", "sqlite://:memory:"),
            ("DATABASE_POOL_SIZE", "0"),
            ("DATABASE_CONNECT_TIMEOUT_SECONDS", "never"),
            ("REDIS_URL", "http://127.0.0.1:6379"),
            ("REDIS_URL", "redis://"),
            ("LOG_FORMAT", "xml"),
        ] {
            let mut pairs = vec![(variable, value)];
            if variable != "MEDIA_TOKEN_SECRET" {
                pairs.push(("MEDIA_TOKEN_SECRET", SECRET));
            }
            let error = settings(&pairs).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(error.to_string().contains(variable));
        }
    }

    #[test]
    fn media_url_alias_and_database_forms() {
        let s = settings(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("NEXT_PUBLIC_MEDIA_SERVER_URL", "https://sfu.example.com/"),
            ("DATABASE_URL", "sqlite:///tmp/x.sqlite"),
        ])
        .unwrap();
        assert_eq!(s.media_public_url, "https://sfu.example.com");
        assert!(
            matches!(&s.database, DatabaseLocation::Sqlite(path) if path == Path::new("/tmp/x.sqlite"))
        );
        let s = settings(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("DATABASE_URL", "data/a.db"),
        ])
        .unwrap();
        assert!(
            matches!(&s.database, DatabaseLocation::Sqlite(path) if path == Path::new("data/a.db"))
        );
    }

    #[test]
    fn postgres_urls_pool_settings_and_redis() {
        let url = "postgresql://privatehub:hunter2@db.internal:5432/privatehub?sslmode=require";
        let s = settings(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("DATABASE_URL", url),
            ("DATABASE_POOL_SIZE", "20"),
            ("DATABASE_CONNECT_TIMEOUT_SECONDS", "2"),
            ("REDIS_URL", "rediss://:pw@redis.internal:6380/0"),
        ])
        .unwrap();
        let DatabaseLocation::Postgres(parsed) = &s.database else {
            panic!("expected PostgreSQL, got {:?}", s.database);
        };
        assert_eq!(parsed.expose_secret(), url);
        let shown = s.database.display_for_log();
        assert_eq!(shown, "postgres db.internal:5432/privatehub");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.database_pool.max_size, 20);
        assert_eq!(s.database_pool.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            s.redis_url
                .as_ref()
                .map(|url| url.expose_secret().to_owned()),
            Some("rediss://:pw@redis.internal:6380/0".to_owned())
        );
        let s = settings(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("DATABASE_URL", "postgres://ph@127.0.0.1:5433/postgres"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ])
        .unwrap();
        assert!(s.database.is_postgres());
    }

    #[test]
    fn postgres_needs_both_secrets_set_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("media-token-secret");
        let file = file.to_str().unwrap();
        let postgres = ("DATABASE_URL", "postgres://ph@127.0.0.1:5432/privatehub");
        // The test helper sets STREAM_KEY_SECRET; the media secret comes from a file.
        let error = settings(&[postgres, ("MEDIA_TOKEN_SECRET_FILE", file)]).unwrap_err();
        assert_eq!(error.variable, "MEDIA_TOKEN_SECRET");
        let map: HashMap<&str, &str> = [postgres, ("MEDIA_TOKEN_SECRET", SECRET)].into();
        let error = Settings::from_lookup(|name| map.get(name).map(|v| v.to_string())).unwrap_err();
        assert_eq!(error.variable, "STREAM_KEY_SECRET");
        assert!(settings(&[postgres, ("MEDIA_TOKEN_SECRET", SECRET)]).is_ok());
    }

    #[test]
    fn secret_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/media-token-secret");
        let path_str = path.to_str().unwrap();
        let first = settings(&[("MEDIA_TOKEN_SECRET_FILE", path_str)]).unwrap();
        assert_eq!(first.media_token_secret_bytes().len(), 64);
        let second = settings(&[("MEDIA_TOKEN_SECRET_FILE", path_str)]).unwrap();
        assert_eq!(
            first.media_token_secret_bytes(),
            second.media_token_secret_bytes()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
