//! Typed settings of the media server, read once from the environment at start-up.
//!
//! Every variable is documented in `docs/configuration.md` (section "Media server").

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::Path;

use privatehub_protocol::media_token::media_token_secret_problem;
use secrecy::SecretString;

mod ports;
mod recordings;
pub use ports::{DEFAULT_RTC_PORT, RtcUdpPorts};
pub use recordings::RecordingSettings;

/// Where the shared token secret is read from when `MEDIA_TOKEN_SECRET` is unset. The app
/// creates this file in development so both services share one secret.
pub const DEV_SECRET_FILE: &str = "data/media-token-secret";

/// Default of `MEDIA_MAX_SOCKETS_PER_IP`.
pub const DEFAULT_MAX_SOCKETS_PER_IP: usize = 20;
/// Default of `MEDIA_NEW_SOCKETS_PER_IP_PER_SEC`.
pub const DEFAULT_NEW_SOCKETS_PER_IP_PER_SEC: u32 = 10;
/// Default of `MEDIA_WHIP_GRACE_SECONDS`: OBS retries a lost connection after 2 s,
/// then with a growing delay; 20 s covers its first few attempts.
pub const DEFAULT_WHIP_GRACE_SECONDS: u64 = 20;

/// A bad or missing configuration value; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable holds a value that cannot be parsed or is out of range.
    #[error("{variable}: {reason} (got {value:?})")]
    Invalid {
        variable: &'static str,
        value: String,
        reason: String,
    },
    /// A required variable is missing.
    #[error("{variable} is required: {hint}")]
    Missing {
        variable: &'static str,
        hint: &'static str,
    },
    /// The token secret is too short or a published example (the value is never shown).
    #[error("{source_name}: {problem}")]
    WeakSecret {
        /// `MEDIA_TOKEN_SECRET`, or the secret file it was read from.
        source_name: String,
        problem: &'static str,
    },
    /// A TURN setting (`TURN_URLS`, `TURN_SECRET`, ...) is unusable.
    #[error("{0}")]
    Turn(#[from] privatehub_protocol::TurnConfigError),
}

/// Everything the media server needs to start.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Address of the HTTP/WebSocket listener (`MEDIA_BIND`).
    pub bind: IpAddr,
    /// Port of the HTTP/WebSocket listener (`MEDIA_SERVER_PORT`); 0 picks a free port.
    pub http_port: u16,
    /// Number of media worker threads (`MEDIA_WORKERS`).
    pub workers: usize,
    /// The workers' UDP ports: one shared port (`MEDIA_RTC_PORT`) or one per worker
    /// (`MEDIA_RTC_MIN_PORT`/`MEDIA_RTC_MAX_PORT`).
    pub rtc_udp: RtcUdpPorts,
    /// The ICE-TCP listener's port (`MEDIA_RTC_TCP_PORT`); `None` when off. In tests 0
    /// picks a free port.
    pub rtc_tcp_port: Option<u16>,
    /// The address browsers send media to (`MEDIA_ANNOUNCED_IP`).
    pub announced_ip: IpAddr,
    /// When `MEDIA_ANNOUNCED_IP` is a host name: the name and every address it resolved
    /// to (the start-up warnings say when there are several).
    pub announced_host: Option<(String, Vec<IpAddr>)>,
    /// The address the UDP sockets bind (`MEDIA_RTC_BIND_IP`).
    pub rtc_bind_ip: IpAddr,
    /// Allowed `Origin` values for `/ws` (`CORS_ORIGIN`).
    pub cors_origins: Vec<String>,
    /// Accept WebSocket upgrades without an `Origin` header (`MEDIA_ALLOW_NO_ORIGIN`).
    pub allow_missing_origin: bool,
    /// Shared HS256 secret for media tokens (`MEDIA_TOKEN_SECRET`, else the file named by
    /// `MEDIA_TOKEN_SECRET_FILE`).
    pub token_secret: SecretString,
    /// Most peers (publishers + viewers) on the whole server (`MEDIA_MAX_PEERS`).
    pub max_peers: usize,
    /// Most viewers of one live (`MEDIA_MAX_VIEWERS_PER_LIVE`).
    pub max_viewers_per_live: usize,
    /// Seconds a peer may take to connect after its answer (`MEDIA_CONNECT_TIMEOUT_SECS`).
    pub connect_timeout_secs: u64,
    /// Least milliseconds between two keyframe requests to a publisher
    /// (`MEDIA_KEYFRAME_MIN_INTERVAL_MS`).
    pub keyframe_interval_ms: u64,
    /// Media older than this many milliseconds when it would be forwarded is dropped
    /// instead, and video resumes at a fresh keyframe (`MEDIA_SHED_AFTER_MS`).
    pub shed_after_ms: u64,
    /// Which viewers get a downstream bandwidth estimate, so the server picks their
    /// simulcast layer (`MEDIA_VIEWER_ESTIMATION`).
    pub viewer_estimation: ViewerEstimation,
    /// Most `/ws` sockets open at once from one client IP; 0 = no limit
    /// (`MEDIA_MAX_SOCKETS_PER_IP`).
    pub max_sockets_per_ip: usize,
    /// Most new `/ws` sockets per second from one client IP (also the burst); 0 = no
    /// limit (`MEDIA_NEW_SOCKETS_PER_IP_PER_SEC`).
    pub new_sockets_per_ip_per_sec: u32,
    /// Take the client IP from the right-most `X-Forwarded-For` entry
    /// (`MEDIA_TRUST_PROXY_HEADERS`). Only behind a proxy that sets it.
    pub trust_proxy_headers: bool,
    /// `MEDIA_APP_INTERNAL_URL`: where the media server reaches the app's internal API
    /// (stream-key checks for WHIP, current lives for WHEP, live start and end). Several
    /// app instances: a comma-separated list, tried in turn when one cannot be reached.
    pub app_internal_urls: Vec<String>,
    /// `MEDIA_WHIP_GRACE_SECONDS`: how long a WHIP publish whose connection was lost
    /// may take to come back (OBS reconnects) before its live ends.
    pub whip_grace: std::time::Duration,
    /// `MEDIA_WHIP_WHEP_ORIGINS`: origins whose pages may call `/whip` and `/whep`
    /// (CORS), comma-separated; `*` (the default) for any.
    pub whip_whep_origins: Vec<String>,
    /// `TURN_URLS`, `TURN_SECRET` (or `TURN_SECRET_FILE`), `TURN_CREDENTIAL_TTL_SECONDS`:
    /// the site's coturn, announced with fresh credentials in WHIP and WHEP answers.
    pub turn: Option<privatehub_protocol::TurnConfig>,
    /// `MEDIA_RECORDINGS*`: recording lives, where, and how long they are kept.
    pub recordings: RecordingSettings,
}

/// Which viewers' `Rtc`s run str0m's bandwidth estimator (TWCC feedback from the
/// browser, costing CPU per packet): only those can be moved between simulcast layers
/// by their bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerEstimation {
    /// Viewers who join while the live's publisher sends simulcast (the default).
    Simulcast,
    /// Every viewer.
    Always,
    /// None: viewers get the top layer unless they pick one in the quality menu.
    Never,
}

impl MediaSettings {
    /// Defaults for tests: loopback everywhere, the given secret, one UDP port per
    /// worker from `rtc_min_port`, no ICE-TCP.
    pub fn for_tests(secret: &str, rtc_min_port: u16, workers: usize) -> Self {
        MediaSettings {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            workers,
            rtc_udp: RtcUdpPorts::PerWorker {
                min: rtc_min_port,
                max: rtc_min_port + workers as u16 - 1,
            },
            rtc_tcp_port: None,
            announced_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            announced_host: None,
            rtc_bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cors_origins: vec!["http://localhost:3000".into()],
            allow_missing_origin: true,
            token_secret: SecretString::from(secret.to_owned()),
            max_peers: 2000,
            max_viewers_per_live: 1000,
            connect_timeout_secs: 15,
            keyframe_interval_ms: 200,
            shed_after_ms: 300,
            viewer_estimation: ViewerEstimation::Simulcast,
            max_sockets_per_ip: DEFAULT_MAX_SOCKETS_PER_IP,
            new_sockets_per_ip_per_sec: DEFAULT_NEW_SOCKETS_PER_IP_PER_SEC,
            trust_proxy_headers: false,
            app_internal_urls: vec!["http://127.0.0.1:3000".into()],
            whip_grace: std::time::Duration::from_secs(DEFAULT_WHIP_GRACE_SECONDS),
            whip_whep_origins: vec!["*".into()],
            turn: None,
            recordings: RecordingSettings {
                enabled: false,
                ..RecordingSettings::for_tests(std::path::PathBuf::from("recordings"))
            },
        }
    }

    /// Reads the process environment (after loading `.env` with dotenvy).
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok(), Path::new(DEV_SECRET_FILE))
    }

    /// Parses settings from any variable source; `secret_file` is the fallback for the
    /// token secret. Pure apart from reading that file and resolving a host name.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        secret_file: &Path,
    ) -> Result<Self, ConfigError> {
        let get = |names: &[&'static str]| -> Option<(&'static str, String)> {
            names.iter().find_map(|name| {
                lookup(name)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .map(|v| (*name, v))
            })
        };
        let bind = match get(&["MEDIA_BIND"]) {
            Some((var, value)) => parse_ip(var, &value)?,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let http_port = parse_num(get(&["MEDIA_SERVER_PORT"]), 5050u16)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = parse_num(get(&["MEDIA_WORKERS"]), cores)?;
        if !(1..=64).contains(&workers) {
            return Err(invalid(
                "MEDIA_WORKERS",
                workers,
                "must be between 1 and 64",
            ));
        }
        let (rtc_udp, rtc_tcp_port) = ports::parse_rtc_ports(get, workers)?;
        let (announced_ip, announced_host) =
            match get(&["MEDIA_ANNOUNCED_IP", "MEDIASOUP_ANNOUNCED_IP"]) {
                Some((var, value)) => resolve_host(var, &value)?,
                None => (IpAddr::V4(Ipv4Addr::LOCALHOST), None),
            };
        if announced_ip.is_unspecified() || announced_ip.is_multicast() {
            return Err(invalid(
                "MEDIA_ANNOUNCED_IP",
                announced_ip,
                "must be an address browsers can reach, not 0.0.0.0 or multicast",
            ));
        }
        let rtc_bind_ip = match get(&["MEDIA_RTC_BIND_IP"]) {
            Some((var, value)) => parse_ip(var, &value)?,
            None if announced_ip.is_loopback() => announced_ip,
            None if announced_ip.is_ipv6() => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let cors_origins: Vec<String> = match get(&["CORS_ORIGIN"]) {
            Some((_, value)) => value
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            None => vec![
                "http://localhost:3000".to_owned(),
                "http://127.0.0.1:3000".to_owned(),
            ],
        };
        let allow_missing_origin = match get(&["MEDIA_ALLOW_NO_ORIGIN"]) {
            Some((var, value)) => parse_bool(var, &value)?,
            None => true,
        };
        let secret_file = match get(&["MEDIA_TOKEN_SECRET_FILE"]) {
            Some((_, path)) => std::path::PathBuf::from(path),
            None => secret_file.to_path_buf(),
        };
        let (token_secret, secret_source) = match get(&["MEDIA_TOKEN_SECRET"]) {
            Some((var, value)) => (value, var.to_owned()),
            None => match std::fs::read_to_string(&secret_file) {
                Ok(text) if !text.trim().is_empty() => (
                    text.trim().to_owned(),
                    format!("MEDIA_TOKEN_SECRET_FILE ({})", secret_file.display()),
                ),
                _ => {
                    return Err(ConfigError::Missing {
                        variable: "MEDIA_TOKEN_SECRET",
                        hint: "set it to the app's secret, or start the app first so it creates MEDIA_TOKEN_SECRET_FILE (default data/media-token-secret)",
                    });
                }
            },
        };
        if let Some(problem) = media_token_secret_problem(&token_secret) {
            return Err(ConfigError::WeakSecret {
                source_name: secret_source,
                problem,
            });
        }
        let max_peers = parse_num(get(&["MEDIA_MAX_PEERS"]), 2000usize)?;
        let max_viewers_per_live = parse_num(get(&["MEDIA_MAX_VIEWERS_PER_LIVE"]), 1000usize)?;
        let connect_timeout_secs = parse_num(get(&["MEDIA_CONNECT_TIMEOUT_SECS"]), 15u64)?;
        if connect_timeout_secs == 0 {
            return Err(invalid("MEDIA_CONNECT_TIMEOUT_SECS", 0, "must be positive"));
        }
        let keyframe_interval_ms = parse_num(get(&["MEDIA_KEYFRAME_MIN_INTERVAL_MS"]), 200u64)?;
        if !(50..=10_000).contains(&keyframe_interval_ms) {
            return Err(invalid(
                "MEDIA_KEYFRAME_MIN_INTERVAL_MS",
                keyframe_interval_ms,
                "must be between 50 and 10000",
            ));
        }
        let shed_after_ms = parse_num(get(&["MEDIA_SHED_AFTER_MS"]), 300u64)?;
        if !(50..=10_000).contains(&shed_after_ms) {
            return Err(invalid(
                "MEDIA_SHED_AFTER_MS",
                shed_after_ms,
                "must be between 50 and 10000",
            ));
        }
        let viewer_estimation = match get(&["MEDIA_VIEWER_ESTIMATION"]) {
            None => ViewerEstimation::Simulcast,
            Some((_, value)) if value == "simulcast" => ViewerEstimation::Simulcast,
            Some((_, value)) if value == "always" => ViewerEstimation::Always,
            Some((_, value)) if value == "never" => ViewerEstimation::Never,
            Some((var, value)) => {
                return Err(invalid(var, value, "must be simulcast, always or never"));
            }
        };
        let max_sockets_per_ip = parse_num(
            get(&["MEDIA_MAX_SOCKETS_PER_IP"]),
            DEFAULT_MAX_SOCKETS_PER_IP,
        )?;
        let new_sockets_per_ip_per_sec = parse_num(
            get(&["MEDIA_NEW_SOCKETS_PER_IP_PER_SEC"]),
            DEFAULT_NEW_SOCKETS_PER_IP_PER_SEC,
        )?;
        let trust_proxy_headers = match get(&["MEDIA_TRUST_PROXY_HEADERS"]) {
            Some((var, value)) => parse_bool(var, &value)?,
            None => false,
        };
        let raw_app_urls = get(&["MEDIA_APP_INTERNAL_URL"])
            .map_or_else(|| "http://127.0.0.1:3000".to_owned(), |(_, url)| url);
        let app_internal_urls: Vec<String> = raw_app_urls
            .split(',')
            .map(|url| url.trim().trim_end_matches('/').to_owned())
            .filter(|url| !url.is_empty())
            .collect();
        if app_internal_urls.is_empty()
            || !app_internal_urls
                .iter()
                .all(|url| url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "MEDIA_APP_INTERNAL_URL",
                &raw_app_urls,
                "must be an http:// or https:// URL, or a comma-separated list of them",
            ));
        }
        let whip_grace_seconds = parse_num(
            get(&["MEDIA_WHIP_GRACE_SECONDS"]),
            DEFAULT_WHIP_GRACE_SECONDS,
        )?;
        if !(1..=3600).contains(&whip_grace_seconds) {
            return Err(invalid(
                "MEDIA_WHIP_GRACE_SECONDS",
                whip_grace_seconds,
                "must be between 1 and 3600",
            ));
        }
        let whip_whep_origins: Vec<String> = match get(&["MEDIA_WHIP_WHEP_ORIGINS"]) {
            Some((_, value)) => value
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            None => vec!["*".to_owned()],
        };
        let turn = privatehub_protocol::TurnConfig::from_lookup(|name| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        })?;
        let recordings = RecordingSettings::from_lookup(get)?;
        Ok(MediaSettings {
            recordings,
            turn,
            app_internal_urls,
            whip_grace: std::time::Duration::from_secs(whip_grace_seconds),
            whip_whep_origins,
            bind,
            http_port,
            workers,
            rtc_udp,
            rtc_tcp_port,
            announced_ip,
            announced_host,
            rtc_bind_ip,
            cors_origins,
            allow_missing_origin,
            token_secret: SecretString::from(token_secret),
            max_peers,
            max_viewers_per_live,
            connect_timeout_secs,
            keyframe_interval_ms,
            shed_after_ms,
            viewer_estimation,
            max_sockets_per_ip,
            new_sockets_per_ip_per_sec,
            trust_proxy_headers,
        })
    }

    /// The distinct UDP ports the workers bind (one in shared mode).
    pub fn rtc_ports(&self) -> Vec<u16> {
        self.rtc_udp.distinct_ports(self.workers)
    }
}

fn invalid(variable: &'static str, value: impl ToString, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

fn parse_num<T: std::str::FromStr>(
    found: Option<(&'static str, String)>,
    default: T,
) -> Result<T, ConfigError> {
    match found {
        None => Ok(default),
        Some((var, value)) => value
            .parse()
            .map_err(|_| invalid(var, &value, "not a valid number in range")),
    }
}

fn parse_ip(variable: &'static str, value: &str) -> Result<IpAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(variable, value, "not an IP address"))
}

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    privatehub_edge::env::parse_bool(value).map_err(|reason| invalid(variable, value, reason))
}

/// An IP literal, or a host name resolved once (IPv4 preferred).
/// An IP as given, or a host name resolved once (IPv4 preferred) with all its addresses.
#[allow(clippy::type_complexity)]
fn resolve_host(
    variable: &'static str,
    value: &str,
) -> Result<(IpAddr, Option<(String, Vec<IpAddr>)>), ConfigError> {
    if let Ok(ip) = value.parse() {
        return Ok((ip, None));
    }
    let mut addrs: Vec<IpAddr> = (value, 0)
        .to_socket_addrs()
        .map_err(|e| invalid(variable, value, &format!("cannot resolve host name: {e}")))?
        .map(|a| a.ip())
        .collect();
    addrs.dedup();
    let chosen = addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| invalid(variable, value, "host name has no address"))?;
    Ok((chosen, Some((value.to_owned(), addrs))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(vars: &[(&str, &str)]) -> Result<MediaSettings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        MediaSettings::from_lookup(|n| map.get(n).cloned(), Path::new("/nonexistent/secret"))
    }

    #[test]
    fn defaults_and_aliases() {
        let s = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIASOUP_RTC_MIN_PORT", "41000"),
            ("MEDIASOUP_ANNOUNCED_IP", "10.0.0.5"),
            ("MEDIA_WORKERS", "2"),
        ])
        .unwrap();
        assert_eq!(
            s.rtc_udp,
            RtcUdpPorts::PerWorker {
                min: 41000,
                max: 49999
            }
        );
        assert_eq!(s.rtc_tcp_port, Some(41000));
        assert_eq!(s.http_port, 5050);
        assert_eq!(s.announced_ip.to_string(), "10.0.0.5");
        assert_eq!(s.rtc_bind_ip.to_string(), "0.0.0.0");
        assert_eq!(s.rtc_ports(), vec![41000, 41001]);
        assert_eq!(s.cors_origins.len(), 2);
        assert_eq!(s.max_sockets_per_ip, 20);
        assert_eq!(s.new_sockets_per_ip_per_sec, 10);
        assert!(!s.trust_proxy_headers);
    }

    #[test]
    fn the_app_internal_url_may_list_several_instances() {
        let one = parse(&[("MEDIA_TOKEN_SECRET", SECRET)]).unwrap();
        assert_eq!(one.app_internal_urls, ["http://127.0.0.1:3000"]);
        let several = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            (
                "MEDIA_APP_INTERNAL_URL",
                "http://10.0.0.5:3000/, http://10.0.0.6:3000",
            ),
        ])
        .unwrap();
        assert_eq!(
            several.app_internal_urls,
            ["http://10.0.0.5:3000", "http://10.0.0.6:3000"]
        );
        for bad in [" , ", "http://a:3000,ftp://b"] {
            let refused = parse(&[
                ("MEDIA_TOKEN_SECRET", SECRET),
                ("MEDIA_APP_INTERNAL_URL", bad),
            ]);
            assert!(refused.is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn socket_limits_and_proxy_trust() {
        let s = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIA_MAX_SOCKETS_PER_IP", "0"),
            ("MEDIA_NEW_SOCKETS_PER_IP_PER_SEC", "3"),
            ("MEDIA_TRUST_PROXY_HEADERS", "yes"),
        ])
        .unwrap();
        assert_eq!(s.max_sockets_per_ip, 0);
        assert_eq!(s.new_sockets_per_ip_per_sec, 3);
        assert!(s.trust_proxy_headers);
        let e = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIA_TRUST_PROXY_HEADERS", "maybe"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("MEDIA_TRUST_PROXY_HEADERS"), "{e}");
        let e = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIA_MAX_SOCKETS_PER_IP", "-1"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("MEDIA_MAX_SOCKETS_PER_IP"), "{e}");
    }

    #[test]
    fn loopback_announced_binds_loopback() {
        let s = parse(&[("MEDIA_TOKEN_SECRET", SECRET)]).unwrap();
        assert!(s.rtc_bind_ip.is_loopback());
    }

    #[test]
    fn secret_falls_back_to_the_shared_file() {
        let dir = std::env::temp_dir().join(format!("media-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, format!("{SECRET}\n")).unwrap();
        let s = parse(&[("MEDIA_TOKEN_SECRET_FILE", file.to_str().unwrap())]).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(s.token_secret.expose_secret(), SECRET);
        // A short secret in the file is refused, naming the file.
        std::fs::write(&file, "abc123\n").unwrap();
        let e = parse(&[("MEDIA_TOKEN_SECRET_FILE", file.to_str().unwrap())]).unwrap_err();
        assert!(e.to_string().contains("MEDIA_TOKEN_SECRET_FILE"), "{e}");
        assert!(!e.to_string().contains("abc123"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_shared_port_unless_a_range_is_set() {
        let s = parse(&[("MEDIA_TOKEN_SECRET", SECRET), ("MEDIA_WORKERS", "3")]).unwrap();
        assert_eq!(s.rtc_udp, RtcUdpPorts::Shared(DEFAULT_RTC_PORT));
        assert_eq!(s.rtc_ports(), vec![DEFAULT_RTC_PORT]);
        assert_eq!(s.rtc_udp.worker_port(2), DEFAULT_RTC_PORT);
        assert_eq!(s.rtc_tcp_port, Some(DEFAULT_RTC_PORT));
        let s = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIA_RTC_PORT", "3478"),
            ("MEDIA_RTC_TCP_PORT", "off"),
        ])
        .unwrap();
        assert_eq!(s.rtc_udp, RtcUdpPorts::Shared(3478));
        assert_eq!(s.rtc_tcp_port, None);
        // An install configured before 0.6 names the range: it keeps range mode.
        let s = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIA_RTC_MIN_PORT", "40000"),
            ("MEDIA_RTC_MAX_PORT", "49999"),
            ("MEDIA_RTC_TCP_PORT", "443"),
            ("MEDIA_WORKERS", "2"),
        ])
        .unwrap();
        assert_eq!(s.rtc_ports(), vec![40000, 40001]);
        assert_eq!(s.rtc_tcp_port, Some(443));
        let e = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIA_RTC_PORT", "40000"),
            ("MEDIA_RTC_MIN_PORT", "40000"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("MEDIA_RTC_PORT"), "{e}");
        let e = parse(&[("MEDIA_TOKEN_SECRET", SECRET), ("MEDIA_RTC_TCP_PORT", "0")]).unwrap_err();
        assert!(e.to_string().contains("MEDIA_RTC_TCP_PORT"), "{e}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = parse(&[("MEDIA_TOKEN_SECRET", SECRET), ("MEDIA_SERVER_PORT", "x")]).unwrap_err();
        assert!(e.to_string().contains("MEDIA_SERVER_PORT"), "{e}");
        let e = parse(&[]).unwrap_err();
        assert!(e.to_string().contains("MEDIA_TOKEN_SECRET"), "{e}");
        let e = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIA_RTC_MIN_PORT", "40000"),
            ("MEDIA_RTC_MAX_PORT", "40000"),
            ("MEDIA_WORKERS", "2"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("MEDIA_WORKERS"), "{e}");
        let e = parse(&[
            ("MEDIA_TOKEN_SECRET", SECRET),
            ("MEDIA_ANNOUNCED_IP", "0.0.0.0"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("MEDIA_ANNOUNCED_IP"), "{e}");
    }

    #[test]
    fn short_or_example_secrets_stop_start_up() {
        for (secret, expected) in [
            ("s", "at least 32 bytes"),
            ("0123456789abcdef0123456789abcde", "at least 32 bytes"),
            (
                "change-me-to-the-output-of-openssl-rand-hex-32",
                "published example",
            ),
        ] {
            let e = parse(&[("MEDIA_TOKEN_SECRET", secret)]).unwrap_err();
            let e = e.to_string();
            assert!(e.starts_with("MEDIA_TOKEN_SECRET: "), "{e}");
            assert!(e.contains(expected), "{e}");
            assert!(e.contains("openssl rand -hex 32"), "{e}");
            if secret.len() > 8 {
                assert!(!e.contains(secret), "the secret must not be shown: {e}");
            }
        }
    }
}
