//! `privatehub-test-connection`: what an operator runs after deploying, from anywhere
//! browsers will be, to see whether PrivateHub is reachable the way browsers need it.
//!
//! Checks, in order, each printed as one line: the app's health, the app's WebSocket,
//! the media server's health (which also reports the announced address and the RTC
//! ports), the media signaling WebSocket, the announced address against the address the media host was reached at,
//! and a STUN Binding exchange with every RTC UDP port at the announced address.

pub mod address;
pub mod health;
pub mod options;
pub mod report;
pub mod signaling;
pub mod stun;
mod tls;
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
    report
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
