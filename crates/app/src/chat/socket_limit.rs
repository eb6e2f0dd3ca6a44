//! How many `/ws` sockets one client network (IPv4 address or IPv6 /64) may hold open.
//! The address is the TCP peer, or behind a trusted proxy the forwarded one; loopback
//! is not exempt (behind nginx every client would otherwise be exempt or share one
//! count, depending on the proxy setting).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::auth::client::ClientNetwork;

/// Counts open sockets per network.
#[derive(Debug)]
pub struct SocketLimiter {
    max_per_network: usize,
    open: Mutex<HashMap<ClientNetwork, usize>>,
}

/// One admitted socket; dropping it frees its place.
#[derive(Debug)]
pub struct SocketSlot {
    limiter: Arc<SocketLimiter>,
    network: Option<ClientNetwork>,
}

impl SocketLimiter {
    pub fn new(max_per_network: usize) -> Arc<SocketLimiter> {
        Arc::new(SocketLimiter {
            max_per_network,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientNetwork, usize>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits one more socket from `network` (`None`: address unknown, not counted), or
    /// `None` when the network holds its maximum already.
    pub fn try_open(self: &Arc<Self>, network: Option<ClientNetwork>) -> Option<SocketSlot> {
        if let Some(network) = network {
            let mut open = self.lock();
            let held = open.entry(network).or_insert(0);
            if *held >= self.max_per_network {
                return None;
            }
            *held += 1;
        }
        Some(SocketSlot {
            limiter: self.clone(),
            network,
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let Some(network) = self.network else {
            return;
        };
        let mut open = self.limiter.lock();
        if let Some(held) = open.get_mut(&network) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&network);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_network_and_frees_on_drop() {
        let limiter = SocketLimiter::new(2);
        let net = |raw: &str| Some(ClientNetwork::of(raw.parse().unwrap()));
        let first = limiter.try_open(net("127.0.0.1")).unwrap();
        let _second = limiter.try_open(net("127.0.0.1")).unwrap();
        assert!(
            limiter.try_open(net("127.0.0.1")).is_none(),
            "loopback is not exempt"
        );
        assert!(limiter.try_open(net("127.0.0.2")).is_some());
        let _v6 = limiter.try_open(net("2001:db8::1")).unwrap();
        let _v6b = limiter.try_open(net("2001:db8::2")).unwrap();
        assert!(limiter.try_open(net("2001:db8::3")).is_none(), "one /64");
        drop(first);
        assert!(limiter.try_open(net("127.0.0.1")).is_some());
        assert!(limiter.try_open(None).is_some());
    }
}
