//! Login throttling: failed log-ins are counted per account and per client address
//! in fixed windows; once either count reaches its limit, further attempts are
//! refused with 429 until the window ends. A successful log-in clears the
//! account's count.
//!
//! The counters live in memory, in this process. That is deliberate: the app runs as
//! one process next to one SQLite file, so there is no other instance to share
//! them with, and the cost of a restart (counters reset) is at most one extra window
//! of guesses for an attacker who can also restart the server. Running several app
//! instances behind a load balancer would need a shared store (a table) instead.
//! Memory is bounded by pruning expired windows once the map grows large.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::settings::LoginRateLimitSettings;

/// Prune expired entries when the map holds more keys than this.
const PRUNE_THRESHOLD: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Case-folded username.
    Account(String),
    /// IPv4 address, or the /64 network of an IPv6 address (one host usually owns
    /// the whole /64, so per-address limits on IPv6 would be trivial to dodge).
    Network(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The limiter. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LoginRateLimiter {
    settings: LoginRateLimitSettings,
    windows: Mutex<HashMap<Key, Window>>,
}

/// The attempt is refused; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl LoginRateLimiter {
    pub fn new(settings: LoginRateLimitSettings) -> LoginRateLimiter {
        LoginRateLimiter {
            settings,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses the attempt when the account or the address is over its limit.
    pub fn check(&self, account: &str, ip: Option<IpAddr>, now: Instant) -> Result<(), RetryAfter> {
        let windows = self.lock();
        let mut worst: Option<Duration> = None;
        for (key, limit) in self.keys(account, ip) {
            if let Some(window) = windows.get(&key) {
                let elapsed = now.saturating_duration_since(window.started);
                if elapsed < self.settings.window && window.failures >= limit {
                    let remaining = self.settings.window - elapsed;
                    worst = Some(worst.map_or(remaining, |w| w.max(remaining)));
                }
            }
        }
        match worst {
            Some(remaining) => Err(RetryAfter(remaining)),
            None => Ok(()),
        }
    }

    /// Counts a failed attempt against the account and the address.
    pub fn record_failure(&self, account: &str, ip: Option<IpAddr>, now: Instant) {
        let mut windows = self.lock();
        if windows.len() > PRUNE_THRESHOLD {
            let period = self.settings.window;
            windows.retain(|_, window| now.saturating_duration_since(window.started) < period);
        }
        for (key, _) in self.keys(account, ip) {
            let window = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.saturating_duration_since(window.started) >= self.settings.window {
                *window = Window {
                    started: now,
                    failures: 0,
                };
            }
            window.failures = window.failures.saturating_add(1);
        }
    }

    /// A successful log-in clears the account's failures (not the address's).
    pub fn record_success(&self, account: &str) {
        self.lock()
            .remove(&Key::Account(account.to_ascii_lowercase()));
    }

    fn keys(&self, account: &str, ip: Option<IpAddr>) -> Vec<(Key, u32)> {
        let mut keys = vec![(
            Key::Account(account.to_ascii_lowercase()),
            self.settings.max_failures_per_account,
        )];
        if let Some(ip) = ip {
            keys.push((
                Key::Network(network_of(ip)),
                self.settings.max_failures_per_ip,
            ));
        }
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Window>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> LoginRateLimiter {
        LoginRateLimiter::new(LoginRateLimitSettings {
            max_failures_per_account: 3,
            max_failures_per_ip: 5,
            window: Duration::from_secs(60),
        })
    }

    fn ip(raw: &str) -> Option<IpAddr> {
        Some(raw.parse().unwrap())
    }

    #[test]
    fn account_limit_then_window_expiry() {
        let limiter = limiter();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("Alice", ip("1.1.1.1"), start).is_ok());
            limiter.record_failure("Alice", ip("1.1.1.1"), start);
        }
        // Same account from another address, any case: refused.
        let refused = limiter.check("ALICE", ip("2.2.2.2"), start + Duration::from_secs(10));
        assert_eq!(refused, Err(RetryAfter(Duration::from_secs(50))));
        // Another account from the first address is fine (3 < 5).
        assert!(limiter.check("bob", ip("1.1.1.1"), start).is_ok());
        // After the window, allowed again.
        assert!(
            limiter
                .check("alice", ip("2.2.2.2"), start + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[test]
    fn address_limit_spans_accounts_and_ipv6_networks() {
        let limiter = limiter();
        let now = Instant::now();
        for n in 0..5 {
            limiter.record_failure(&format!("user{n}"), ip("2001:db8:1:2::1"), now);
        }
        assert!(
            limiter
                .check("someone-else", ip("2001:db8:1:2::ffff"), now)
                .is_err()
        );
        assert!(
            limiter
                .check("someone-else", ip("2001:db8:1:3::1"), now)
                .is_ok()
        );
    }

    #[test]
    fn success_clears_the_account() {
        let limiter = limiter();
        let now = Instant::now();
        for _ in 0..3 {
            limiter.record_failure("carol", None, now);
        }
        assert!(limiter.check("carol", None, now).is_err());
        limiter.record_success("Carol");
        assert!(limiter.check("carol", None, now).is_ok());
    }
}
