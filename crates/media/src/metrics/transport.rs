//! Counters of how peers reach the server: connections by transport, ICE failures by
//! cause, datagrams passed between workers on the shared UDP port, and the ICE-TCP
//! listener's connections and refusals.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};

/// How a connected peer's media travels (what the operator wants to know when viewers
/// behind firewalls complain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectedOver {
    Udp,
    Tcp,
    /// UDP from a TURN relay (the peer's selected remote address is a relay candidate).
    Relay,
}

/// Why a peer never connected, or stopped being connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceFailure {
    /// No ICE check of the peer ever reached the server: the announced address or port
    /// is wrong or blocked, or the client's network blocks UDP and TCP.
    NoCheckArrived,
    /// Checks arrived but DTLS never completed.
    DtlsIncomplete,
    /// Connected, then the peer's checks stopped (network gone, laptop lid closed).
    ConsentLost,
}

/// Why the ICE-TCP listener closed a connection it did not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpRefusal {
    /// Too many connections from one address, or opened too fast.
    PerAddressLimit,
    /// The listener holds as many connections as it may.
    Full,
    /// The first frame was not a STUN binding request (or named no worker of ours).
    NotIce,
    /// A frame longer than any datagram the server handles.
    Oversized,
    /// Nothing usable arrived in time (a half-open or idle connection).
    Idle,
    /// More frames per second than any peer sends.
    Flood,
    /// The client did not take what was sent to it.
    SlowReader,
}

const TRANSPORTS: [(ConnectedOver, &str); 3] = [
    (ConnectedOver::Udp, "udp"),
    (ConnectedOver::Tcp, "tcp"),
    (ConnectedOver::Relay, "relay"),
];
const FAILURES: [(IceFailure, &str); 3] = [
    (IceFailure::NoCheckArrived, "no_check_arrived"),
    (IceFailure::DtlsIncomplete, "dtls_incomplete"),
    (IceFailure::ConsentLost, "consent_lost"),
];
const REFUSALS: [(TcpRefusal, &str); 7] = [
    (TcpRefusal::PerAddressLimit, "per_address_limit"),
    (TcpRefusal::Full, "full"),
    (TcpRefusal::NotIce, "not_ice"),
    (TcpRefusal::Oversized, "oversized"),
    (TcpRefusal::Idle, "idle"),
    (TcpRefusal::Flood, "flood"),
    (TcpRefusal::SlowReader, "slow_reader"),
];

#[derive(Debug, Default)]
pub struct TransportMetrics {
    connections: [AtomicU64; TRANSPORTS.len()],
    ice_failures: [AtomicU64; FAILURES.len()],
    tcp_refused: [AtomicU64; REFUSALS.len()],
    /// Open ICE-TCP connections.
    pub tcp_connections: AtomicI64,
    /// Shared UDP port: datagrams one worker received for another's peer.
    pub datagrams_passed_between_workers: AtomicU64,
    /// Frames for an ICE-TCP connection dropped because its queue was full.
    pub tcp_frames_dropped: AtomicU64,
}

impl TransportMetrics {
    pub fn connected(&self, over: ConnectedOver) {
        let k = TRANSPORTS.iter().position(|(t, _)| *t == over).unwrap_or(0);
        self.connections[k].fetch_add(1, Relaxed);
    }

    pub fn ice_failed(&self, cause: IceFailure) {
        let k = FAILURES.iter().position(|(c, _)| *c == cause).unwrap_or(0);
        self.ice_failures[k].fetch_add(1, Relaxed);
    }

    pub fn tcp_refused(&self, why: TcpRefusal) {
        let k = REFUSALS.iter().position(|(r, _)| *r == why).unwrap_or(0);
        self.tcp_refused[k].fetch_add(1, Relaxed);
    }

    pub fn connections(&self, over: ConnectedOver) -> u64 {
        let k = TRANSPORTS.iter().position(|(t, _)| *t == over).unwrap_or(0);
        self.connections[k].load(Relaxed)
    }

    pub fn tcp_refusals(&self, why: TcpRefusal) -> u64 {
        let k = REFUSALS.iter().position(|(r, _)| *r == why).unwrap_or(0);
        self.tcp_refused[k].load(Relaxed)
    }

    pub fn render(&self, out: &mut String) {
        labelled(
            out,
            "media_connections_total",
            "Peers connected, by the transport their media uses.",
            "transport",
            TRANSPORTS.iter().map(|(_, l)| *l).zip(&self.connections),
        );
        labelled(
            out,
            "media_ice_failures_total",
            "Peers that did not connect or lost their connection, by cause.",
            "cause",
            FAILURES.iter().map(|(_, l)| *l).zip(&self.ice_failures),
        );
        labelled(
            out,
            "media_tcp_refused_total",
            "ICE-TCP connections closed without being served, by reason.",
            "reason",
            REFUSALS.iter().map(|(_, l)| *l).zip(&self.tcp_refused),
        );
        let name = "media_tcp_connections";
        let _ = writeln!(
            out,
            "# HELP {name} Open ICE-TCP connections.\n# TYPE {name} gauge\n{name} {}",
            self.tcp_connections.load(Relaxed)
        );
        let name = "media_tcp_frames_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Frames for an ICE-TCP connection dropped because the client did not take them fast enough.\n# TYPE {name} counter\n{name} {}",
            self.tcp_frames_dropped.load(Relaxed)
        );
        let name = "media_datagrams_passed_between_workers_total";
        let _ = writeln!(
            out,
            "# HELP {name} Datagrams received on the shared UDP port by a worker that does not own their peer.\n# TYPE {name} counter\n{name} {}",
            self.datagrams_passed_between_workers.load(Relaxed)
        );
    }
}

fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, &'a AtomicU64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, counter) in values {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{value}\"}} {}",
            counter.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_label() {
        let m = TransportMetrics::default();
        m.connected(ConnectedOver::Tcp);
        m.ice_failed(IceFailure::DtlsIncomplete);
        m.tcp_refused(TcpRefusal::Oversized);
        let mut text = String::new();
        m.render(&mut text);
        assert!(
            text.contains("media_connections_total{transport=\"tcp\"} 1"),
            "{text}"
        );
        assert!(text.contains("media_connections_total{transport=\"relay\"} 0"));
        assert!(text.contains("media_ice_failures_total{cause=\"dtls_incomplete\"} 1"));
        assert!(text.contains("media_tcp_refused_total{reason=\"oversized\"} 1"));
        assert!(text.contains("media_tcp_connections 0"));
    }
}
