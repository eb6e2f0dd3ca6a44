//! Which ports the media workers listen on: one UDP port all workers share (the
//! default), or one UDP port per worker from a range (what every install before 0.6
//! configured), and the port of the ICE-TCP listener.

use super::{ConfigError, invalid, parse_num};

/// How the workers' UDP sockets are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcUdpPorts {
    /// Every worker binds this port with `SO_REUSEPORT` (`MEDIA_RTC_PORT`); a datagram the
    /// kernel hands to another worker than the peer's is passed on to it (see
    /// `sfu::demux`).
    Shared(u16),
    /// Worker k binds `min + k` (`MEDIA_RTC_MIN_PORT` / `MEDIA_RTC_MAX_PORT`).
    PerWorker { min: u16, max: u16 },
}

impl RtcUdpPorts {
    /// The port worker `k` binds.
    pub fn worker_port(&self, k: usize) -> u16 {
        match *self {
            RtcUdpPorts::Shared(port) => port,
            RtcUdpPorts::PerWorker { min, .. } => min + k as u16,
        }
    }

    /// The distinct UDP ports bound, for `/healthz` and the firewall hints.
    pub fn distinct_ports(&self, workers: usize) -> Vec<u16> {
        match *self {
            RtcUdpPorts::Shared(port) => vec![port],
            RtcUdpPorts::PerWorker { min, .. } => (0..workers).map(|k| min + k as u16).collect(),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, RtcUdpPorts::Shared(_))
    }

    /// `"shared"` or `"per_worker"`, as `/healthz` reports it.
    pub fn mode_name(&self) -> &'static str {
        match self {
            RtcUdpPorts::Shared(_) => "shared",
            RtcUdpPorts::PerWorker { .. } => "per_worker",
        }
    }
}

/// Default of `MEDIA_RTC_PORT`, and of `MEDIA_RTC_TCP_PORT` in shared mode.
pub const DEFAULT_RTC_PORT: u16 = 40000;

/// Reads `MEDIA_RTC_PORT`, `MEDIA_RTC_MIN_PORT`/`MEDIA_RTC_MAX_PORT` (and their
/// `MEDIASOUP_` aliases) and `MEDIA_RTC_TCP_PORT`. A configuration that sets the range
/// keeps range mode; one that sets neither gets the shared port.
pub fn parse_rtc_ports(
    get: impl Fn(&[&'static str]) -> Option<(&'static str, String)>,
    workers: usize,
) -> Result<(RtcUdpPorts, Option<u16>), ConfigError> {
    let single = get(&["MEDIA_RTC_PORT"]);
    let min = get(&["MEDIA_RTC_MIN_PORT", "MEDIASOUP_RTC_MIN_PORT"]);
    let max = get(&["MEDIA_RTC_MAX_PORT", "MEDIASOUP_RTC_MAX_PORT"]);
    let udp = match (single, min.is_some() || max.is_some()) {
        (Some(_), true) => {
            return Err(invalid(
                "MEDIA_RTC_PORT",
                "set",
                "cannot be combined with MEDIA_RTC_MIN_PORT/MEDIA_RTC_MAX_PORT: set one \
                 shared port or a range, not both",
            ));
        }
        (single, false) => {
            let port = parse_num(single, DEFAULT_RTC_PORT)?;
            if port == 0 {
                return Err(invalid("MEDIA_RTC_PORT", port, "must not be 0"));
            }
            RtcUdpPorts::Shared(port)
        }
        (None, true) => {
            let min = parse_num(min, 40000u16)?;
            let max = parse_num(max, 49999u16)?;
            if min == 0 || max < min {
                return Err(invalid(
                    "MEDIA_RTC_MAX_PORT",
                    max,
                    "must be at least MEDIA_RTC_MIN_PORT (and the minimum must not be 0)",
                ));
            }
            let span = usize::from(max - min) + 1;
            if span < workers {
                return Err(invalid(
                    "MEDIA_WORKERS",
                    workers,
                    &format!("needs one UDP port per worker but the range {min}-{max} has {span}"),
                ));
            }
            RtcUdpPorts::PerWorker { min, max }
        }
    };
    let tcp = match get(&["MEDIA_RTC_TCP_PORT"]) {
        Some((_, value)) if value.eq_ignore_ascii_case("off") => None,
        Some(found) => {
            let port: u16 = parse_num(Some(found), 0)?;
            if port == 0 {
                return Err(invalid(
                    "MEDIA_RTC_TCP_PORT",
                    port,
                    "must be a port number, or off",
                ));
            }
            Some(port)
        }
        None => Some(udp.worker_port(0)),
    };
    Ok((udp, tcp))
}
