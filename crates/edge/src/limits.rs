//! The rate limiters both services use, each pure (the caller passes the time):
//! [`SlidingWindow`] (at most N events in any window, with the wait until the next),
//! [`TokenBucket`] (a sustained rate with a burst), and [`SocketLimiter`] (sockets one
//! client network may hold open, and open per second).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::client_address::ClientNetwork;

/// Allows at most `max` events in any `window`.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    max: usize,
    window: Duration,
    events: VecDeque<Instant>,
}

impl SlidingWindow {
    pub fn new(max: usize, window: Duration) -> SlidingWindow {
        SlidingWindow {
            max: max.max(1),
            window,
            events: VecDeque::new(),
        }
    }

    /// Records an event at `now` if allowed; otherwise returns how long to wait.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        while let Some(&oldest) = self.events.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                self.events.pop_front();
            } else {
                break;
            }
        }
        if self.events.len() < self.max {
            self.events.push_back(now);
            return Ok(());
        }
        let oldest = self.events.front().copied().unwrap_or(now);
        Err(self
            .window
            .saturating_sub(now.saturating_duration_since(oldest)))
    }

    /// Whether the window holds no recent event (the limiter can be forgotten).
    pub fn is_idle(&self, now: Instant) -> bool {
        self.events
            .back()
            .is_none_or(|&last| now.saturating_duration_since(last) >= self.window)
    }
}

/// `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: f64, per_second: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            burst,
            per_second,
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there, without taking it.
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Whether the bucket is full again at `now` (it can be forgotten).
    pub fn is_full(&self, now: Instant) -> bool {
        let mut bucket = *self;
        bucket.refill(now);
        bucket.tokens >= bucket.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
    }
}

/// Why [`SocketLimiter`] refused a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The network already holds the maximum of open sockets.
    TooManyOpen,
    /// The network opened its allowance of new sockets in the last second.
    TooFast,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::TooManyOpen => "too many open connections from your address",
            Refused::TooFast => "too many new connections from your address",
        }
    }
}

/// Entries of networks with no open socket whose bucket is full again are forgotten
/// this often.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct NetworkState {
    open: usize,
    new_sockets: Option<TokenBucket>,
}

#[derive(Debug, Default)]
struct Inner {
    networks: HashMap<ClientNetwork, NetworkState>,
    last_prune: Option<Instant>,
}

/// Counts open sockets and new sockets per second per client network.
#[derive(Debug)]
pub struct SocketLimiter {
    max_open: usize,
    per_second: u32,
    inner: Mutex<Inner>,
}

/// One admitted socket; dropping it frees its network's place.
#[derive(Debug)]
pub struct SocketSlot {
    held: Option<(Arc<SocketLimiter>, ClientNetwork)>,
}

impl SocketLimiter {
    /// `max_open` / `per_second` of 0 turn that limit off (a burst of one second's worth).
    pub fn new(max_open: usize, per_second: u32) -> Arc<SocketLimiter> {
        Arc::new(SocketLimiter {
            max_open,
            per_second,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a new socket from `network` at `now` (`None`: not limited: address
    /// unknown, or exempt by the caller's rule).
    pub fn try_open(
        self: &Arc<Self>,
        network: Option<ClientNetwork>,
        now: Instant,
    ) -> Result<SocketSlot, Refused> {
        let Some(network) = network.filter(|_| self.max_open > 0 || self.per_second > 0) else {
            return Ok(SocketSlot { held: None });
        };
        let mut inner = self.lock();
        if inner
            .last_prune
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY)
        {
            inner.last_prune = Some(now);
            inner.networks.retain(|_, state| !state.forgettable(now));
        }
        let per_second = f64::from(self.per_second);
        let state = inner
            .networks
            .entry(network)
            .or_insert_with(|| NetworkState {
                open: 0,
                new_sockets: (per_second > 0.0)
                    .then(|| TokenBucket::new(per_second, per_second, now)),
            });
        if let Some(bucket) = &mut state.new_sockets
            && !bucket.has_token(now)
        {
            return Err(Refused::TooFast);
        }
        if self.max_open > 0 && state.open >= self.max_open {
            return Err(Refused::TooManyOpen);
        }
        if let Some(bucket) = &mut state.new_sockets {
            bucket.try_take(now);
        }
        state.open += 1;
        Ok(SocketSlot {
            held: Some((self.clone(), network)),
        })
    }

    /// Networks tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().networks.len()
    }
}

impl NetworkState {
    fn forgettable(&self, now: Instant) -> bool {
        self.open == 0 && self.new_sockets.is_none_or(|bucket| bucket.is_full(now))
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let Some((limiter, network)) = self.held.take() else {
            return;
        };
        let mut inner = limiter.lock();
        if let Some(state) = inner.networks.get_mut(&network) {
            state.open = state.open.saturating_sub(1);
            if state.open == 0 && state.new_sockets.is_none() {
                inner.networks.remove(&network);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(raw: &str) -> Option<ClientNetwork> {
        Some(ClientNetwork::of(raw.parse().unwrap()))
    }

    #[test]
    fn a_sliding_window_allows_max_per_window_then_says_how_long_to_wait() {
        let start = Instant::now();
        let mut limiter = SlidingWindow::new(3, Duration::from_secs(5));
        for i in 0..3 {
            assert_eq!(limiter.try_acquire(start + Duration::from_secs(i)), Ok(()));
        }
        assert_eq!(
            limiter.try_acquire(start + Duration::from_secs(3)),
            Err(Duration::from_secs(2))
        );
        assert!(!limiter.is_idle(start + Duration::from_secs(3)));
        assert_eq!(limiter.try_acquire(start + Duration::from_secs(5)), Ok(()));
        assert!(limiter.is_idle(start + Duration::from_secs(60)));
    }

    #[test]
    fn a_token_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 4.0, start);
        assert!(bucket.try_take(start) && bucket.try_take(start));
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(250)));
        assert!(!bucket.is_full(start + Duration::from_millis(250)));
        assert!(bucket.is_full(start + Duration::from_secs(1)));
    }

    #[test]
    fn sockets_are_capped_per_network_and_freed_on_drop() {
        let limiter = SocketLimiter::new(2, 0);
        let now = Instant::now();
        let first = limiter.try_open(network("192.0.2.1"), now).unwrap();
        let _second = limiter.try_open(network("192.0.2.1"), now).unwrap();
        assert_eq!(
            limiter.try_open(network("192.0.2.1"), now).unwrap_err(),
            Refused::TooManyOpen
        );
        assert!(limiter.try_open(network("192.0.2.2"), now).is_ok());
        let _v6 = limiter.try_open(network("2001:db8::1"), now).unwrap();
        let _v6b = limiter.try_open(network("2001:db8::2"), now).unwrap();
        assert!(
            limiter.try_open(network("2001:db8::3"), now).is_err(),
            "one /64"
        );
        drop(first);
        assert!(limiter.try_open(network("192.0.2.1"), now).is_ok());
        assert!(limiter.try_open(None, now).is_ok());
    }

    #[test]
    fn new_sockets_per_second_are_limited_and_quiet_networks_forgotten() {
        let limiter = SocketLimiter::new(0, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(limiter.try_open(network("192.0.2.1"), t0).unwrap());
        }
        assert_eq!(
            limiter.try_open(network("192.0.2.1"), t0).unwrap_err(),
            Refused::TooFast
        );
        // Refusals do not use tokens: 200 ms later there is exactly one more.
        let t1 = t0 + Duration::from_millis(200);
        assert!(limiter.try_open(network("192.0.2.1"), t1).is_ok());
        assert!(limiter.try_open(network("192.0.2.1"), t1).is_err());
        assert!(limiter.try_open(network("192.0.2.9"), t1).is_ok());
        let later = t0 + Duration::from_secs(30);
        assert!(limiter.try_open(network("192.0.2.3"), later).is_ok());
        assert_eq!(limiter.tracked(), 1, "the quiet networks are forgotten");
    }
}
