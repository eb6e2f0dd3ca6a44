//! Finding the worker a datagram belongs to when all workers share one UDP port.
//!
//! Every worker binds the shared port with `SO_REUSEPORT`, and the kernel hands each
//! datagram to one of their sockets by a hash of its addresses, which knows nothing of
//! peers. So each peer's ICE ufrag starts with its worker's index: a worker that
//! receives an ICE check for another worker's ufrag passes the datagram on to that
//! worker (a bounded channel) and notes the source as *tentative*, so the DTLS and SRTP
//! that follow from the same source go the same way. The owner checks the message
//! integrity, and only then *confirms* the route back to the receiving worker; a
//! confirmed route is never replaced by a tentative one, so a forged check cannot steer
//! a live peer's traffic away. A peer's removal releases its routes.
//!
//! The kernel's hash keeps one source on one socket, so for each peer the hop costs one
//! channel send per datagram it *sends* to the server (a viewer's RTCP and checks, a
//! publisher's media); what the server sends leaves from the owner's own socket.
//! ICE-TCP connections use the same ufrag prefix to pick their worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::IceCreds;

/// Most routes a worker keeps to other workers' peers.
const MAX_ROUTES: usize = 16384;
/// A tentative route not confirmed within this is forgotten when room is needed.
const TENTATIVE_FOR: Duration = Duration::from_secs(10);

/// Fresh ICE credentials for a peer of worker `worker`: str0m's random ones with the
/// worker's index in front of the ufrag (`w7` + random ice-chars).
pub fn ice_credentials(worker: usize) -> IceCreds {
    let mut creds = IceCreds::new();
    creds.ufrag = format!("w{worker}{}{}", UFRAG_SEPARATOR, creds.ufrag);
    creds
}

/// Between the index and the random part (`+` is an ice-char, RFC 8839).
const UFRAG_SEPARATOR: char = '+';

/// The worker a ufrag made by [`ice_credentials`] belongs to.
pub fn worker_of_ufrag(ufrag: &str) -> Option<usize> {
    let rest = ufrag.strip_prefix('w')?;
    let (index, _) = rest.split_once(UFRAG_SEPARATOR)?;
    if index.is_empty() || index.len() > 2 {
        return None;
    }
    index.parse().ok()
}

/// The worker an ICE check (STUN with `USERNAME ours:theirs`) is for.
pub fn worker_of_check(buf: &[u8]) -> Option<usize> {
    let message = str0m::ice::StunMessage::parse(buf).ok()?;
    let (ours, _theirs) = message.split_username()?;
    worker_of_ufrag(ours)
}

#[derive(Debug, Clone, Copy)]
struct Route {
    owner: usize,
    confirmed: bool,
    since: Instant,
}

/// A worker's routes from source addresses to the other workers owning their peers.
#[derive(Debug, Default)]
pub struct ForeignRoutes {
    routes: HashMap<SocketAddr, Route>,
}

impl ForeignRoutes {
    pub fn owner(&self, source: SocketAddr) -> Option<usize> {
        self.routes.get(&source).map(|route| route.owner)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// A check for `owner`'s peer came from `source`: route what follows there until the
    /// owner confirms or another check says otherwise. Never replaces a confirmed route.
    pub fn note_tentative(&mut self, now: Instant, source: SocketAddr, owner: usize) {
        if let Some(route) = self.routes.get_mut(&source) {
            if !route.confirmed {
                *route = Route {
                    owner,
                    confirmed: false,
                    since: now,
                };
            }
            return;
        }
        if self.make_room(now) {
            self.routes.insert(
                source,
                Route {
                    owner,
                    confirmed: false,
                    since: now,
                },
            );
        }
    }

    /// The owner verified a check from `source`.
    pub fn confirm(&mut self, now: Instant, source: SocketAddr, owner: usize) {
        if self.routes.contains_key(&source) || self.make_room(now) {
            self.routes.insert(
                source,
                Route {
                    owner,
                    confirmed: true,
                    since: now,
                },
            );
        }
    }

    /// The owner's peer at `source` is gone.
    pub fn release(&mut self, source: SocketAddr, owner: usize) {
        if self.routes.get(&source).is_some_and(|r| r.owner == owner) {
            self.routes.remove(&source);
        }
    }

    /// Whether one more route fits, dropping stale tentative ones if needed.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.routes.len() < MAX_ROUTES {
            return true;
        }
        self.routes.retain(|_, route| {
            route.confirmed || now.saturating_duration_since(route.since) < TENTATIVE_FOR
        });
        self.routes.len() < MAX_ROUTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ufrags_name_their_worker() {
        for worker in [0, 7, 63] {
            let creds = ice_credentials(worker);
            assert_eq!(
                worker_of_ufrag(&creds.ufrag),
                Some(worker),
                "{}",
                creds.ufrag
            );
            assert!(creds.ufrag.len() <= 256);
        }
        for foreign in ["", "w", "w+abc", "wx+abc", "w123+abc", "abc", "w1abc"] {
            assert_eq!(worker_of_ufrag(foreign), None, "{foreign}");
        }
        assert_eq!(worker_of_check(b"not stun"), None);
    }

    #[test]
    fn a_confirmed_route_is_not_steered_by_a_forged_check() {
        let now = Instant::now();
        let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut routes = ForeignRoutes::default();
        routes.note_tentative(now, source, 1);
        assert_eq!(routes.owner(source), Some(1));
        routes.confirm(now, source, 2);
        routes.note_tentative(now, source, 3);
        assert_eq!(routes.owner(source), Some(2));
        routes.release(source, 3);
        assert_eq!(routes.owner(source), Some(2));
        routes.release(source, 2);
        assert_eq!(routes.owner(source), None);
    }

    #[test]
    fn routes_are_capped_and_stale_tentative_ones_make_room() {
        let now = Instant::now();
        let mut routes = ForeignRoutes::default();
        for k in 0..MAX_ROUTES + 10 {
            let source =
                SocketAddr::from(([127, 0, (k >> 8) as u8, k as u8], 1000 + (k >> 16) as u16));
            routes.note_tentative(now, source, 1);
        }
        assert_eq!(routes.len(), MAX_ROUTES);
        let late: SocketAddr = "127.1.0.1:9".parse().unwrap();
        routes.confirm(now, late, 1);
        assert_eq!(routes.owner(late), None, "full of fresh tentative routes");
        routes.confirm(now + TENTATIVE_FOR, late, 1);
        assert_eq!(routes.owner(late), Some(1));
        assert_eq!(routes.len(), 1);
    }
}
