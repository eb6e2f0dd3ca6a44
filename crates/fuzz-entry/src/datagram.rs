//! Target 6: datagrams on an RTC port. A fresh `WorkerCore` is fed
//! `handle_datagram` with arbitrary bytes from arbitrary source addresses (the plain-STUN
//! responder, the ufrag demux, str0m's STUN parser), interleaved with timeouts.
//!
//! Input: one flags byte, then records. Flags bit 0 set: the core first gets one
//! prepared peer (a str0m client's offer accepted by the real `RtcTemplate`, the client's
//! first ICE checks delivered so the peer is known by address), and records can come from
//! that peer's address, which hands their bytes to the peer's `Rtc` (DTLS, SRTP, STUN).
//! Flags bit 1: the core is worker 0 of two sharing one UDP port (ICE checks for the
//! other worker's ufrags are passed on). Bit 2: records arrive as ICE-TCP frames
//! instead. Bit 3: records arrive as datagrams worker 1 passed on.
//! Record: selector byte (low 2 bits: 0 IPv4 / 1 IPv6 address from the input, 2 the
//! peer's address, 3 a fixed address; high 6 bits: milliseconds to advance first), a
//! 16-bit length, that many bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use privatehub_media::metrics::Metrics;
use privatehub_media::sfu::{
    Command, CoreConfig, CoreOutput, NewPeer, PeerId, Role, WorkerCore, WorkerMessage,
};
use privatehub_protocol::LiveId;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Output, Rtc};

use crate::bytes::Bytes;
use crate::{local_candidates, server_addr, template};

/// Datagrams per input: enough for a short exchange, bounded work per input.
const MAX_RECORDS: usize = 24;
/// Largest UDP payload the worker reads.
const MAX_DATAGRAM: usize = 2048;
const CLIENT_ADDR: &str = "198.51.100.20:50000";
const FIXED_ADDR: &str = "192.0.2.99:3478";

pub fn rtc_datagram(data: &[u8]) {
    let mut input = Bytes::new(data);
    let flags = input.u8();
    let mut now = Instant::now();
    let config = CoreConfig {
        shared_udp_port: flags & 2 == 2,
        tcp_addr: Some(server_addr()),
        ..CoreConfig::default()
    };
    let mut core = WorkerCore::new(server_addr(), config, Arc::new(Metrics::default()));
    let client_addr: SocketAddr = CLIENT_ADDR.parse().unwrap_or_else(|_| unreachable!());
    let fixed_addr: SocketAddr = FIXED_ADDR.parse().unwrap_or_else(|_| unreachable!());
    let _client = if flags & 1 == 1 {
        prepare_peer(&mut core, client_addr, now)
    } else {
        None
    };
    for _ in 0..MAX_RECORDS {
        if input.is_empty() {
            break;
        }
        let selector = input.u8();
        let source = match selector & 3 {
            0 | 1 => {
                // Reuse the cursor's address decoding with the family taken from the selector.
                let family = selector & 1;
                let mut addr = input.take(if family == 0 { 6 } else { 18 }).to_vec();
                addr.insert(0, family);
                Bytes::new(&addr).socket_addr()
            }
            2 => client_addr,
            _ => fixed_addr,
        };
        now += Duration::from_millis(u64::from(selector >> 2) * 16);
        let len = usize::from(input.u16()).min(MAX_DATAGRAM);
        let datagram = input.take(len);
        match flags & 12 {
            0 => core.handle_datagram(now, source, datagram),
            4 => core.handle_tcp_frame(now, source, datagram),
            _ => core.handle_worker_message(
                now,
                WorkerMessage::PassedDatagram {
                    source,
                    contents: datagram.to_vec(),
                    via: 1,
                },
            ),
        }
        if core.next_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        drain(&mut core);
    }
    core.handle_tcp_closed(client_addr);
    core.handle_command(now, Command::Shutdown);
    drain(&mut core);
}

fn drain(core: &mut WorkerCore) {
    while let Some(output) = core.poll_output() {
        if let CoreOutput::Transmit { contents, .. } = output {
            assert!(contents.len() <= 64 * 1024);
        }
    }
}

/// Adds one publisher to `core` and lets its client's ICE checks reach the core, so the
/// peer is known by `client_addr`. Returns the client `Rtc` (kept alive for the input).
fn prepare_peer(core: &mut WorkerCore, client_addr: SocketAddr, now: Instant) -> Option<Rtc> {
    let mut client = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(now);
    client.add_local_candidate(Candidate::host(client_addr, "udp").ok()?);
    let mut api = client.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply()?;
    let (rtc, answer, local_ufrag) = template()
        .accept_offer(
            privatehub_media::sfu::Role::Viewer,
            local_candidates(),
            &offer.to_sdp_string(),
            now,
            false,
        )
        .ok()?;
    client.sdp_api().accept_answer(pending, answer).ok()?;
    core.handle_command(
        now,
        Command::AddPeer(Box::new(NewPeer {
            id: PeerId(1),
            live: LiveId(1),
            role: Role::Publisher,
            generation: 1,
            rtc,
            local_ufrag,
            offered_at: now,
            estimating: false,
            simulcast: false,
            relay_addrs: Vec::new(),
            record: true,
        })),
    );
    // A few rounds of client → core → client: ICE checks, answers, the DTLS start.
    let mut at = now;
    for _ in 0..4 {
        client.handle_input(str0m::Input::Timeout(at)).ok()?;
        loop {
            match client.poll_output().ok()? {
                Output::Timeout(_) => break,
                Output::Transmit(t) => core.handle_datagram(at, client_addr, &t.contents),
                Output::Event(_) => {}
            }
        }
        while let Some(output) = core.poll_output() {
            if let CoreOutput::Transmit { contents, .. } = output
                && let Ok(receive) = str0m::net::Receive::new(
                    str0m::net::Protocol::Udp,
                    server_addr(),
                    client_addr,
                    &contents,
                )
            {
                client
                    .handle_input(str0m::Input::Receive(at, receive))
                    .ok()?;
            }
        }
        at += Duration::from_millis(20);
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness reaches what it claims: the prepared peer is known by its address.
    #[test]
    fn prepared_peer_is_known_by_address() {
        let now = Instant::now();
        let mut core = WorkerCore::new(
            server_addr(),
            CoreConfig::default(),
            Arc::new(Metrics::default()),
        );
        let client = prepare_peer(&mut core, CLIENT_ADDR.parse().unwrap(), now);
        assert!(client.is_some());
        let stats = core.stats();
        assert_eq!((stats.peers, stats.addr_entries), (1, 1), "{stats:?}");
    }
}
