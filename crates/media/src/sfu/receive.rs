//! What arrives from the network: UDP datagrams on the worker's socket, datagrams
//! another worker received on the shared port for one of our peers, and RFC 4571
//! frames of ICE-TCP connections. Each is matched to its peer (by source address,
//! else by the ufrag of an ICE check whose integrity str0m confirms) and handed to it.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use str0m::Input;
use str0m::net::{Protocol, Receive};

use super::peer::PeerAddress;
use super::{CoreOutput, PeerId, Transport, WorkerCore, WorkerMessage, demux, stun};

/// Most source addresses remembered per peer (ICE may try a few before it settles).
const MAX_ADDRESSES_PER_PEER: usize = 8;

impl WorkerCore {
    /// A datagram that arrived on this worker's socket from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) {
        if let Some(&id) = self.by_addr.get(&source) {
            self.receive(now, id, Transport::Udp, source, buf);
            return;
        }
        match stun::classify(buf) {
            stun::StunKind::PlainBinding => self.answer_plain_binding(now, source, buf),
            stun::StunKind::NotStun => {
                if let Some(owner) = self.foreign_routes.owner(source) {
                    self.pass_to(owner, source, buf);
                }
            }
            stun::StunKind::Ice => {
                if self.config.shared_udp_port
                    && let Some(owner) = demux::worker_of_check(buf)
                    && owner != self.config.worker_index
                {
                    self.foreign_routes.note_tentative(now, source, owner);
                    self.pass_to(owner, source, buf);
                    return;
                }
                if let Some(id) = self.peer_for_ice_check(Transport::Udp, source, buf, None) {
                    self.receive(now, id, Transport::Udp, source, buf);
                }
            }
        }
    }

    /// A datagram worker `via` received on the shared port from `source`, for one of
    /// our peers (or claiming to be).
    pub(super) fn handle_passed_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        buf: &[u8],
        via: usize,
    ) {
        let id = match self.by_addr.get(&source) {
            Some(&id) => id,
            None if stun::classify(buf) == stun::StunKind::Ice => {
                let Some(id) = self.peer_for_ice_check(Transport::Udp, source, buf, Some(via))
                else {
                    return;
                };
                self.out.push_back(CoreOutput::ToWorker {
                    worker: via,
                    message: WorkerMessage::RouteConfirmed {
                        source,
                        owner: self.config.worker_index,
                    },
                });
                id
            }
            // DTLS or SRTP from a source no check of ours confirmed yet.
            None => return,
        };
        self.receive(now, id, Transport::Udp, source, buf);
    }

    /// One RFC 4571 frame of the ICE-TCP connection from `source` (the connection's
    /// first frame was an ICE check for one of our ufrags, which is how it got here).
    pub fn handle_tcp_frame(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) {
        let id = match self.by_tcp_addr.get(&source) {
            Some(&id) => id,
            None if stun::classify(buf) == stun::StunKind::Ice => {
                let Some(id) = self.peer_for_ice_check(Transport::Tcp, source, buf, None) else {
                    return;
                };
                id
            }
            None => return,
        };
        self.receive(now, id, Transport::Tcp, source, buf);
    }

    /// The ICE-TCP connection from `source` closed.
    pub fn handle_tcp_closed(&mut self, source: SocketAddr) {
        if let Some(id) = self.by_tcp_addr.remove(&source)
            && let Some(peer) = self.peers.get_mut(&id)
        {
            peer.addrs
                .retain(|a| !(a.transport == Transport::Tcp && a.source == source));
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        id: PeerId,
        transport: Transport,
        source: SocketAddr,
        buf: &[u8],
    ) {
        let Some(receive) = self.receive_input(transport, source, buf) else {
            return;
        };
        self.with_rtc(now, id, |rtc| {
            rtc.handle_input(Input::Receive(now, receive))
        });
        self.run_actions(now);
    }

    /// str0m drops a check whose destination is not one of the peer's local
    /// candidates, so it is given the announced address of the transport.
    fn receive_input<'b>(
        &self,
        transport: Transport,
        source: SocketAddr,
        buf: &'b [u8],
    ) -> Option<Receive<'b>> {
        let (protocol, local) = match transport {
            Transport::Udp => (Protocol::Udp, self.local_addr),
            Transport::Tcp => (Protocol::Tcp, self.config.tcp_addr?),
        };
        Receive::new(protocol, source, local, buf).ok()
    }

    fn answer_plain_binding(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) {
        if self.stun_limiter.allow(source.ip(), now) {
            self.metrics.stun_bindings_answered.fetch_add(1, Relaxed);
            self.out.push_back(CoreOutput::Transmit {
                destination: source,
                contents: stun::binding_success(buf, source),
                media_received_at: None,
            });
        } else {
            self.metrics
                .stun_bindings_rate_limited
                .fetch_add(1, Relaxed);
        }
    }

    fn pass_to(&mut self, owner: usize, source: SocketAddr, buf: &[u8]) {
        self.metrics
            .transport
            .datagrams_passed_between_workers
            .fetch_add(1, Relaxed);
        self.out.push_back(CoreOutput::ToWorker {
            worker: owner,
            message: WorkerMessage::PassedDatagram {
                source,
                contents: buf.to_vec(),
                via: self.config.worker_index,
            },
        });
    }

    /// Finds the peer a STUN check with USERNAME `ours:theirs` is for, and remembers the
    /// source address only once str0m confirms the message integrity.
    fn peer_for_ice_check(
        &mut self,
        transport: Transport,
        source: SocketAddr,
        buf: &[u8],
        via: Option<usize>,
    ) -> Option<PeerId> {
        let message = str0m::ice::StunMessage::parse(buf).ok()?;
        let (ours, _theirs) = message.split_username()?;
        let id = *self.by_ufrag.get(ours)?;
        let receive = self.receive_input(transport, source, buf)?;
        let peer = self.peers.get_mut(&id)?;
        let input = Input::Receive(peer.last_now, receive);
        let accepted = catch_unwind(AssertUnwindSafe(|| peer.rtc.accepts(&input))).unwrap_or(false);
        if !accepted {
            return None;
        }
        if peer.addrs.len() < MAX_ADDRESSES_PER_PEER {
            peer.addrs.push(PeerAddress {
                transport,
                source,
                via,
            });
            match transport {
                Transport::Udp => self.by_addr.insert(source, id),
                Transport::Tcp => self.by_tcp_addr.insert(source, id),
            };
        }
        Some(id)
    }
}
