//! STUN over the RTC UDP ports: one Binding Request per port to the announced address,
//! retransmitted with doubling timeouts (RFC 5389 §7.2.1), the answer parsed.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::report::CheckResult;
use crate::stun::{BindingResponse, binding_request, parse_binding_response};

/// What happened to the STUN exchange with one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A Binding Success Response: `mapped` is this machine's address as the server saw it.
    Answered {
        mapped: SocketAddr,
        xor_mapped: bool,
        round_trip: Duration,
        attempts: u32,
    },
    /// The server answered with a Binding Error Response.
    ErrorResponse { code: u16, reason: String },
    /// An ICMP "port unreachable" came back: the packet arrived but nothing listens.
    Refused,
    /// Nothing came back at all: dropped on the way there or back.
    NoAnswer { attempts: u32, waited: Duration },
    /// Something answered, but not with a valid STUN response to our request.
    Invalid(String),
    /// The local socket could not be set up or used.
    Local(String),
}

/// Sends Binding Requests to `target` until one is answered or `attempts` timeouts
/// (starting at `first_timeout`, doubled each time) have passed.
pub async fn probe(target: SocketAddr, first_timeout: Duration, attempts: u32) -> ProbeOutcome {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(error) => return ProbeOutcome::Local(format!("bind {local}: {error}")),
    };
    // Connected, so the kernel reports ICMP errors and drops datagrams from elsewhere.
    if let Err(error) = socket.connect(target).await {
        return ProbeOutcome::Local(format!("connect {target}: {error}"));
    }
    let transaction_id: [u8; 12] = rand::random();
    let request = binding_request(&transaction_id);
    let started = Instant::now();
    let mut wait = first_timeout;
    let mut buffer = [0u8; 1500];
    let mut last_invalid = None;
    for attempt in 1..=attempts.max(1) {
        // Retransmissions reuse the transaction id, so a late answer still counts.
        match socket.send(&request).await {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                return ProbeOutcome::Refused;
            }
            Err(error) => return ProbeOutcome::Local(format!("send to {target}: {error}")),
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await;
            let length = match received {
                Err(_) => break,
                Ok(Ok(length)) => length,
                Ok(Err(error)) if error.kind() == ErrorKind::ConnectionRefused => {
                    return ProbeOutcome::Refused;
                }
                Ok(Err(error)) => {
                    return ProbeOutcome::Local(format!("receive from {target}: {error}"));
                }
            };
            match parse_binding_response(&buffer[..length], &transaction_id) {
                Ok(BindingResponse::Success { mapped, xor_mapped }) => {
                    return ProbeOutcome::Answered {
                        mapped,
                        xor_mapped,
                        round_trip: started.elapsed(),
                        attempts: attempt,
                    };
                }
                Ok(BindingResponse::Error { code, reason }) => {
                    return ProbeOutcome::ErrorResponse { code, reason };
                }
                // Keep listening: a stray datagram must not end the exchange.
                Err(error) => last_invalid = Some(error.to_string()),
            }
        }
        wait *= 2;
    }
    match last_invalid {
        Some(error) => ProbeOutcome::Invalid(error),
        None => ProbeOutcome::NoAnswer {
            attempts: attempts.max(1),
            waited: started.elapsed(),
        },
    }
}

/// The result line for one port.
pub fn describe(ip: IpAddr, port: u16, outcome: &ProbeOutcome) -> CheckResult {
    let name = format!("rtc udp/{port}");
    let target = SocketAddr::new(ip, port);
    let firewall = format!(
        "open UDP {port} (MEDIA_RTC_PORT, or the whole MEDIA_RTC_MIN_PORT..MAX range) in \
         ufw/nftables and the cloud security group, and forward it to this host if it is behind NAT"
    );
    match outcome {
        ProbeOutcome::Answered {
            mapped,
            xor_mapped,
            round_trip,
            attempts,
        } => {
            let retries = if *attempts > 1 {
                format!(" after {attempts} attempts")
            } else {
                String::new()
            };
            let legacy = if *xor_mapped {
                ""
            } else {
                " (legacy MAPPED-ADDRESS, no XOR-MAPPED-ADDRESS)"
            };
            CheckResult::pass(
                name,
                format!(
                    "STUN binding to {target} answered in {} ms{retries}; the server sees this \
                     machine as {mapped}{legacy}",
                    round_trip.as_millis()
                ),
            )
        }
        ProbeOutcome::ErrorResponse { code, reason } => CheckResult::fail(
            name,
            format!("STUN binding to {target} got error {code} {reason:?}"),
            "the media server must answer plain Binding Requests: is it privatehub-media, and current?",
        ),
        ProbeOutcome::Refused => CheckResult::fail(
            name,
            format!(
                "STUN binding to {target}: port unreachable (ICMP), nothing listens on UDP {port}"
            ),
            "is privatehub-media running with this port in MEDIA_RTC_MIN_PORT..MAX, is \
             MEDIA_ANNOUNCED_IP this host's address, and does MEDIA_RTC_BIND_IP (if set) \
             include it?",
        ),
        ProbeOutcome::NoAnswer { attempts, waited } => CheckResult::fail(
            name,
            format!(
                "no STUN answer from {target} after {attempts} requests in {} ms: UDP is blocked \
                 on the way or nothing answers there",
                waited.as_millis()
            ),
            firewall,
        ),
        ProbeOutcome::Invalid(error) => CheckResult::fail(
            name,
            format!("{target} answered, but not with a valid STUN response: {error}"),
            "another program may own this port; check `ss -ulpn`",
        ),
        ProbeOutcome::Local(error) => CheckResult::fail(
            name,
            format!("could not send from this machine: {error}"),
            "does this machine have a route to that address (IPv6?)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback STUN responder that answers `answers` requests, after ignoring `drop_first`.
    async fn responder(drop_first: usize) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 1500];
            let mut seen = 0;
            loop {
                let Ok((length, from)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                seen += 1;
                if seen <= drop_first || length != 20 {
                    continue;
                }
                let mut answer = buffer[..20].to_vec();
                answer[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
                answer[2..4].copy_from_slice(&12u16.to_be_bytes());
                let SocketAddr::V4(from) = from else { return };
                answer.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
                answer.extend_from_slice(&(from.port() ^ 0x2112).to_be_bytes());
                let cookie = 0x2112_A442u32.to_be_bytes();
                answer.extend(from.ip().octets().iter().zip(cookie).map(|(a, b)| a ^ b));
                let _ = socket.send_to(&answer, from).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn answered_after_a_lost_request() {
        let target = responder(1).await;
        let outcome = probe(target, Duration::from_millis(100), 3).await;
        let ProbeOutcome::Answered {
            mapped, attempts, ..
        } = outcome
        else {
            panic!("expected an answer, got {outcome:?}");
        };
        assert_eq!(attempts, 2);
        assert_eq!(mapped.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn silence_and_refusal_are_told_apart() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let outcome = probe(silent.local_addr().unwrap(), Duration::from_millis(50), 2).await;
        assert!(
            matches!(outcome, ProbeOutcome::NoAnswer { attempts: 2, .. }),
            "{outcome:?}"
        );
        let closed = silent.local_addr().unwrap();
        drop(silent);
        let outcome = probe(closed, Duration::from_millis(200), 3).await;
        assert_eq!(outcome, ProbeOutcome::Refused);
    }
}
