//! `privatehub-test-connection`: what an operator runs after deploying, from anywhere
//! browsers will be, to see whether PrivateHub is reachable the way browsers need it.
//!
//! Checks, in order, each printed as one line: the app's health, the app's WebSocket,
//! the media server's health (which also reports the announced address and the RTC
//! ports), the media signaling WebSocket, the announced address against the address the media host was reached at,
//! a STUN Binding exchange with every RTC UDP port at the announced address, the same over
//! the ICE-TCP port, and a TURN allocation on every URL of the configured relay.

pub mod address;
pub mod health;
pub mod ice_tcp;
pub mod options;
pub mod report;
pub mod signaling;
pub mod stun;
mod tls;
pub mod turn;
pub mod udp;

use std::net::{IpAddr, SocketAddr};

use crate::address::MediaHost;
use crate::health::MediaHealth;
use crate::options::Options;
use crate::report::{CheckResult, Report, Status};

/// Runs every check, handing each result to `on_result` as soon as it is known.
pub async fn run(options: &Options, mut on_result: impl FnMut(&CheckResult)) -> Report {
    let mut report = Report::default();
    let mut record = |result: CheckResult| {
        on_result(&result);
        report.push(result);
    };
    let client = health::http_client(options);
    record(health::check_app(&client, options).await);
    record(signaling::check_app(options).await);
    let (media_result, media_health) = health::check_media(&client, options).await;
    record(media_result);
    record(signaling::check(options).await);
    let announced = match &media_health {
        Some((health, reached)) => {
            let (result, announced) = check_announced(options, health, *reached).await;
            record(result);
            announced
        }
        None => {
            record(CheckResult::new(
                "announced address",
                Status::Skip,
                "not checked: the media health check failed",
                "",
            ));
            None
        }
    };
    for result in check_rtc_ports(options, media_health.as_ref().map(|(h, _)| h), announced).await {
        record(result);
    }
    record(check_ice_tcp(options, media_health.as_ref().map(|(h, _)| h), announced).await);
    for result in check_turn(options).await {
        record(result);
    }
    report
}

/// The ICE-TCP port the server reports (or `--rtc-tcp-port`), at the announced address.
async fn check_ice_tcp(
    options: &Options,
    health: Option<&MediaHealth>,
    announced: Option<IpAddr>,
) -> CheckResult {
    let port = options
        .rtc_tcp_port
        .or_else(|| health.and_then(|health| health.rtc_tcp_port));
    let target = options.rtc_address.or(announced);
    match (port, target, health) {
        (Some(port), Some(ip), _) => {
            ice_tcp::check(SocketAddr::new(ip, port), options.timeout).await
        }
        (None, _, Some(_)) => CheckResult::new(
            "rtc tcp",
            Status::Skip,
            "ICE-TCP is off on the media server (MEDIA_RTC_TCP_PORT=off): browsers that \
             cannot use UDP need the TURN relay",
            "",
        ),
        _ => CheckResult::new(
            "rtc tcp",
            Status::Skip,
            "not checked: no ICE-TCP port or address known (media health failed)",
            "fix media health first, or pass --rtc-tcp-port and --rtc-address",
        ),
    }
}

/// One Allocate per `turn:`/`turns:` URL of the configured relay, all at once.
async fn check_turn(options: &Options) -> Vec<CheckResult> {
    let Some(turn) = &options.turn else {
        return vec![CheckResult::new(
            "turn",
            Status::Skip,
            "no TURN relay configured (TURN_URLS unset): viewers on networks that block \
             UDP and TCP to the media ports cannot connect",
            "",
        )];
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let servers = turn.ice_servers("test-connection", now);
    let Some(credentialed) = servers.iter().find(|server| server.username.is_some()) else {
        return vec![CheckResult::new(
            "turn",
            Status::Skip,
            "TURN_URLS lists only stun: URLs",
            "",
        )];
    };
    let username = credentialed.username.clone().unwrap_or_default();
    let password = credentialed.credential.clone().unwrap_or_default();
    let checks = credentialed.urls.iter().map(|text| {
        let username = username.clone();
        let password = password.clone();
        async move {
            match turn::TurnUrl::parse(text) {
                Some(url) => {
                    let outcome = turn::allocate(
                        &url,
                        &username,
                        &password,
                        options.insecure,
                        options.timeout,
                    )
                    .await;
                    turn::describe(text, &url, &outcome)
                }
                None => CheckResult::fail(
                    "turn",
                    format!("{text:?} is not a TURN URL this tool understands"),
                    "use turn:host:3478?transport=udp|tcp or turns:host:443?transport=tcp",
                ),
            }
        }
    });
    futures_util::future::join_all(checks).await
}

/// Resolves the announced address and compares it with how the media host was reached.
async fn check_announced(
    options: &Options,
    health: &MediaHealth,
    reached: Option<SocketAddr>,
) -> (CheckResult, Option<IpAddr>) {
    let name = "announced address";
    let Some(announced) = resolve_one(&health.announced_ip).await else {
        let result = CheckResult::fail(
            name,
            format!(
                "media server announces {:?}, which does not resolve to an address",
                health.announced_ip
            ),
            "set MEDIA_ANNOUNCED_IP in media.env to the host's public IP address",
        );
        return (result, None);
    };
    let host_name = options.media_url.host_str().unwrap_or_default().to_owned();
    let port = options.media_url.port_or_known_default().unwrap_or(443);
    let resolved = tokio::net::lookup_host((host_name.as_str(), port))
        .await
        .map(|addresses| addresses.map(|address| address.ip()).collect())
        .unwrap_or_default();
    let host = MediaHost {
        name: host_name,
        resolved,
        reached: reached.map(|address| address.ip()),
    };
    (
        address::compare_announced(announced, &host),
        Some(announced),
    )
}

async fn resolve_one(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.trim_matches(['[', ']']).parse() {
        return Some(ip);
    }
    let mut addresses = tokio::net::lookup_host((text, 0)).await.ok()?;
    addresses.next().map(|address| address.ip())
}

/// One STUN exchange per RTC port, all at once; results in port order.
async fn check_rtc_ports(
    options: &Options,
    health: Option<&MediaHealth>,
    announced: Option<IpAddr>,
) -> Vec<CheckResult> {
    let ports = options
        .rtc_ports
        .clone()
        .or_else(|| health.map(|health| health.rtc_ports.clone()));
    let target = options.rtc_address.or(announced);
    let (ports, ip) = match (ports, target) {
        (Some(ports), Some(ip)) if !ports.is_empty() => (ports, ip),
        (Some(ports), _) if ports.is_empty() => {
            return vec![CheckResult::fail(
                "rtc udp",
                "the media server reports no RTC ports",
                "check MEDIA_WORKERS and MEDIA_RTC_MIN_PORT..MAX in media.env",
            )];
        }
        _ => {
            return vec![CheckResult::new(
                "rtc udp",
                Status::Skip,
                "not checked: no RTC ports or address known (media health failed)",
                "fix media health first, or pass --rtc-ports and --rtc-address",
            )];
        }
    };
    let probes = ports.iter().map(|&port| {
        udp::probe(
            SocketAddr::new(ip, port),
            options.udp_first_timeout,
            options.udp_attempts,
        )
    });
    let outcomes = futures_util::future::join_all(probes).await;
    ports
        .iter()
        .zip(&outcomes)
        .map(|(&port, outcome)| udp::describe(ip, port, outcome))
        .collect()
}
