//! Log-in and sign-up throttling, in memory.
//!
//! Log-ins are limited three ways, each counted in [`ClientNetwork`]s (IPv4 address or
//! IPv6 /64):
//! - per (account, network): `free_per_pair` failures, then each further attempt waits a
//!   growing delay (1 s, doubling, at most the window). Guessing from one address is
//!   slow, and it locks out only that address.
//! - per account, from anywhere: a looser `max_per_account` failures per window. Once it
//!   is reached, only networks that signed in to the account successfully before may
//!   keep trying, so a distributed guesser cannot lock the owner out of their own
//!   address.
//! - per network, across accounts: `max_per_network` failures per window (spraying).
//!
//! An attempt is counted when it starts ([`LoginRateLimiter::begin`]), not when its
//! password check ends, so concurrent guesses cannot slip past the limit together; an
//! attempt dropped without an outcome counts as a failure.
//!
//! The counters live in this process: one app process serves one SQLite file. A restart
//! resets them (at most one extra window of guesses). Memory is bounded by pruning
//! expired entries once a map grows large; entries are created only after the password
//! pool admitted the attempt, so their rate is bounded by hashing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::client::ClientNetwork;
use crate::domain::Username;
use crate::settings::{LoginRateLimitSettings, SignupRateLimitSettings};

/// Prune expired entries when a map holds more keys than this.
const PRUNE_THRESHOLD: usize = 10_000;
/// First delay once the free failures of a pair are used up; it doubles per failure.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// How long a successful sign-in from a network is remembered.
const TRUSTED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The attempt is refused; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// A fixed-window count of attempts, with the ones still in flight.
#[derive(Debug, Clone, Copy)]
struct WindowCount {
    started: Instant,
    failures: u32,
    pending: u32,
}

impl WindowCount {
    fn new(now: Instant) -> WindowCount {
        WindowCount {
            started: now,
            failures: 0,
            pending: 0,
        }
    }

    fn roll(&mut self, now: Instant, window: Duration) {
        if now.saturating_duration_since(self.started) >= window {
            self.started = now;
            self.failures = 0;
        }
    }

    fn refusal(&self, now: Instant, window: Duration, limit: u32) -> Option<RetryAfter> {
        let elapsed = now.saturating_duration_since(self.started);
        (elapsed < window && self.failures + self.pending >= limit)
            .then(|| RetryAfter((window - elapsed).max(Duration::from_secs(1))))
    }
}

/// Failures of one account from one network, with growing delays.
#[derive(Debug, Clone, Copy)]
struct PairCount {
    failures: u32,
    pending: u32,
    last_failure: Instant,
}

#[derive(Debug, Default)]
struct LoginState {
    pairs: HashMap<(String, ClientNetwork), PairCount>,
    accounts: HashMap<String, WindowCount>,
    networks: HashMap<ClientNetwork, WindowCount>,
    /// Last successful sign-in of an account from a network.
    trusted: HashMap<(String, ClientNetwork), Instant>,
}

/// The log-in limiter. Share it behind an `Arc`.
#[derive(Debug)]
pub struct LoginRateLimiter {
    settings: LoginRateLimitSettings,
    state: Mutex<LoginState>,
}

/// One admitted log-in attempt. Report its outcome; dropping it counts as a failure.
#[derive(Debug)]
pub struct LoginAttempt {
    limiter: Arc<LoginRateLimiter>,
    account: String,
    network: Option<ClientNetwork>,
    settled: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LoginRateLimiter {
    pub fn new(settings: LoginRateLimitSettings) -> LoginRateLimiter {
        LoginRateLimiter {
            settings,
            state: Mutex::new(LoginState::default()),
        }
    }

    /// Delay owed after a pair's `failures` (0 while free failures remain).
    fn pair_delay(&self, failures: u32) -> Duration {
        let free = self.settings.free_failures_per_pair;
        if failures < free {
            return Duration::ZERO;
        }
        let doublings = (failures - free).min(20);
        FIRST_DELAY
            .saturating_mul(1 << doublings)
            .min(self.settings.window)
    }

    /// Admits and counts an attempt to sign in to `account` from `network`, or says how
    /// long to wait.
    pub fn begin(
        self: &Arc<Self>,
        account: &Username,
        network: Option<ClientNetwork>,
        now: Instant,
    ) -> Result<LoginAttempt, RetryAfter> {
        let window = self.settings.window;
        let account_key = account.canonical();
        let mut state = lock(&self.state);
        prune(&mut state, now, window, self);
        let mut worst: Option<RetryAfter> = None;
        let mut refuse = |retry: RetryAfter| {
            worst = Some(worst.map_or(retry, |w| RetryAfter(w.0.max(retry.0))));
        };
        if let Some(network) = network {
            if let Some(count) = state.networks.get_mut(&network) {
                count.roll(now, window);
                if let Some(retry) = count.refusal(now, window, self.settings.max_per_network) {
                    refuse(retry);
                }
            }
            if let Some(pair) = state.pairs.get(&(account_key.clone(), network)) {
                let owed = self.pair_delay(pair.failures + pair.pending);
                if !owed.is_zero() {
                    let ready_at = pair.last_failure + owed;
                    if pair.pending > 0 || now < ready_at {
                        let wait = ready_at.saturating_duration_since(now);
                        refuse(RetryAfter(wait.max(Duration::from_secs(1))));
                    }
                }
            }
        }
        let trusted = network.is_some_and(|network| {
            state
                .trusted
                .get(&(account_key.clone(), network))
                .is_some_and(|at| now.saturating_duration_since(*at) < TRUSTED_FOR)
        });
        if let Some(count) = state.accounts.get_mut(&account_key) {
            count.roll(now, window);
            if !trusted
                && let Some(retry) = count.refusal(now, window, self.settings.max_per_account)
            {
                refuse(retry);
            }
        }
        if let Some(retry) = worst {
            return Err(retry);
        }
        state
            .accounts
            .entry(account_key.clone())
            .or_insert_with(|| WindowCount::new(now))
            .pending += 1;
        if let Some(network) = network {
            state
                .networks
                .entry(network)
                .or_insert_with(|| WindowCount::new(now))
                .pending += 1;
            state
                .pairs
                .entry((account_key.clone(), network))
                .or_insert(PairCount {
                    failures: 0,
                    pending: 0,
                    last_failure: now,
                })
                .pending += 1;
        }
        Ok(LoginAttempt {
            limiter: self.clone(),
            account: account_key,
            network,
            settled: false,
        })
    }

    /// Counts a failure for a name that cannot be an account (malformed): against the
    /// network only, as no account is involved.
    pub fn record_malformed_name(
        &self,
        network: Option<ClientNetwork>,
        now: Instant,
    ) -> Result<(), RetryAfter> {
        let Some(network) = network else {
            return Ok(());
        };
        let window = self.settings.window;
        let mut state = lock(&self.state);
        let count = state
            .networks
            .entry(network)
            .or_insert_with(|| WindowCount::new(now));
        count.roll(now, window);
        if let Some(retry) = count.refusal(now, window, self.settings.max_per_network) {
            return Err(retry);
        }
        count.failures += 1;
        Ok(())
    }

    fn settle(&self, attempt: &LoginAttempt, outcome: Outcome, now: Instant) {
        let mut state = lock(&self.state);
        let failed = outcome == Outcome::Failed;
        if let Some(count) = state.accounts.get_mut(&attempt.account) {
            count.pending = count.pending.saturating_sub(1);
            count.failures += u32::from(failed);
        }
        let Some(network) = attempt.network else {
            return;
        };
        if let Some(count) = state.networks.get_mut(&network) {
            count.pending = count.pending.saturating_sub(1);
            count.failures += u32::from(failed);
        }
        let key = (attempt.account.clone(), network);
        match outcome {
            Outcome::Failed => {
                if let Some(pair) = state.pairs.get_mut(&key) {
                    pair.pending = pair.pending.saturating_sub(1);
                    pair.failures += 1;
                    pair.last_failure = now;
                }
            }
            Outcome::Succeeded => {
                state.pairs.remove(&key);
                state.trusted.insert(key, now);
            }
            Outcome::Cancelled => {
                let empty = state.pairs.get_mut(&key).is_some_and(|pair| {
                    pair.pending = pair.pending.saturating_sub(1);
                    pair.pending == 0 && pair.failures == 0
                });
                if empty {
                    state.pairs.remove(&key);
                }
            }
        }
    }
}

fn prune(state: &mut LoginState, now: Instant, window: Duration, limiter: &LoginRateLimiter) {
    let expired = |count: &WindowCount| {
        count.pending == 0 && now.saturating_duration_since(count.started) >= window
    };
    if state.accounts.len() > PRUNE_THRESHOLD {
        state.accounts.retain(|_, count| !expired(count));
    }
    if state.networks.len() > PRUNE_THRESHOLD {
        state.networks.retain(|_, count| !expired(count));
    }
    if state.pairs.len() > PRUNE_THRESHOLD {
        state.pairs.retain(|_, pair| {
            let quiet_after = limiter.pair_delay(pair.failures) + window;
            pair.pending > 0 || now.saturating_duration_since(pair.last_failure) < quiet_after
        });
    }
    if state.trusted.len() > PRUNE_THRESHOLD {
        state
            .trusted
            .retain(|_, at| now.saturating_duration_since(*at) < TRUSTED_FOR);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    /// Nothing was checked (the password pool refused): not counted.
    Cancelled,
}

impl LoginAttempt {
    pub fn failed(mut self, now: Instant) {
        self.settle(Outcome::Failed, now);
    }

    pub fn succeeded(mut self, now: Instant) {
        self.settle(Outcome::Succeeded, now);
    }

    pub fn cancelled(mut self, now: Instant) {
        self.settle(Outcome::Cancelled, now);
    }

    fn settle(&mut self, outcome: Outcome, now: Instant) {
        if !self.settled {
            self.settled = true;
            self.limiter.settle(self, outcome, now);
        }
    }
}

impl Drop for LoginAttempt {
    fn drop(&mut self) {
        self.settle(Outcome::Failed, Instant::now());
    }
}

/// Sign-ups per network per window (each one costs an argon2 hash and a row).
#[derive(Debug)]
pub struct SignupRateLimiter {
    settings: SignupRateLimitSettings,
    networks: Mutex<HashMap<ClientNetwork, WindowCount>>,
}

impl SignupRateLimiter {
    pub fn new(settings: SignupRateLimitSettings) -> SignupRateLimiter {
        SignupRateLimiter {
            settings,
            networks: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a sign-up attempt from `network`, or refuses it.
    pub fn admit(&self, network: Option<ClientNetwork>, now: Instant) -> Result<(), RetryAfter> {
        let Some(network) = network else {
            return Ok(());
        };
        let window = self.settings.window;
        let mut networks = lock(&self.networks);
        if networks.len() > PRUNE_THRESHOLD {
            networks.retain(|_, count| now.saturating_duration_since(count.started) < window);
        }
        let count = networks
            .entry(network)
            .or_insert_with(|| WindowCount::new(now));
        count.roll(now, window);
        if let Some(retry) = count.refusal(now, window, self.settings.max_per_network) {
            return Err(retry);
        }
        count.failures += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> Arc<LoginRateLimiter> {
        Arc::new(LoginRateLimiter::new(LoginRateLimitSettings {
            free_failures_per_pair: 3,
            max_per_account: 6,
            max_per_network: 10,
            window: Duration::from_secs(60),
        }))
    }

    fn net(raw: &str) -> Option<ClientNetwork> {
        Some(ClientNetwork::of(raw.parse().unwrap()))
    }

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    #[test]
    fn concurrent_attempts_are_counted_before_they_finish() {
        let limiter = limiter();
        let now = Instant::now();
        let mut admitted = Vec::new();
        let mut refused = 0;
        for _ in 0..40 {
            match limiter.begin(&name("alice"), net("192.0.2.1"), now) {
                Ok(attempt) => admitted.push(attempt),
                Err(_) => refused += 1,
            }
        }
        assert_eq!((admitted.len(), refused), (3, 37));
    }

    #[test]
    fn guesses_from_one_address_do_not_lock_the_owner_out() {
        let limiter = limiter();
        let now = Instant::now();
        for _ in 0..3 {
            limiter
                .begin(&name("alice"), net("192.0.2.66"), now)
                .unwrap()
                .failed(now);
        }
        // The guesser now waits a growing delay...
        let refused = limiter.begin(&name("ALICE"), net("192.0.2.66"), now);
        assert_eq!(refused.unwrap_err(), RetryAfter(Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        limiter
            .begin(&name("alice"), net("192.0.2.66"), later)
            .unwrap()
            .failed(later);
        let refused = limiter.begin(&name("alice"), net("192.0.2.66"), later);
        assert_eq!(refused.unwrap_err(), RetryAfter(Duration::from_secs(2)));
        // ...while the owner signs in from home at once.
        limiter
            .begin(&name("alice"), net("198.51.100.7"), later)
            .unwrap()
            .succeeded(later);
    }

    #[test]
    fn a_distributed_guesser_hits_the_account_limit_but_known_networks_pass() {
        let limiter = limiter();
        let now = Instant::now();
        limiter
            .begin(&name("bob"), net("198.51.100.7"), now)
            .unwrap()
            .succeeded(now);
        for n in 0..6 {
            limiter
                .begin(&name("bob"), net(&format!("203.0.113.{n}")), now)
                .unwrap()
                .failed(now);
        }
        assert!(
            limiter
                .begin(&name("bob"), net("203.0.113.99"), now)
                .is_err()
        );
        assert!(
            limiter
                .begin(&name("bob"), net("198.51.100.7"), now)
                .is_ok()
        );
        // After the window, anyone may try again.
        let later = now + Duration::from_secs(60);
        assert!(
            limiter
                .begin(&name("bob"), net("203.0.113.99"), later)
                .is_ok()
        );
    }

    #[test]
    fn one_network_cannot_spray_many_accounts() {
        let limiter = limiter();
        let now = Instant::now();
        for n in 0..10 {
            limiter
                .begin(&name(&format!("user{n}")), net("2001:db8:1:2::1"), now)
                .unwrap()
                .failed(now);
        }
        assert!(
            limiter
                .begin(&name("someone"), net("2001:db8:1:2::ffff"), now)
                .is_err()
        );
        assert!(
            limiter
                .begin(&name("someone"), net("2001:db8:1:3::1"), now)
                .is_ok()
        );
    }

    #[test]
    fn dropped_attempts_fail_and_cancelled_ones_do_not_count() {
        let limiter = limiter();
        let now = Instant::now();
        for _ in 0..10 {
            limiter
                .begin(&name("carol"), net("192.0.2.5"), now)
                .unwrap()
                .cancelled(now);
        }
        for _ in 0..3 {
            drop(
                limiter
                    .begin(&name("carol"), net("192.0.2.5"), now)
                    .unwrap(),
            );
        }
        assert!(
            limiter
                .begin(&name("carol"), net("192.0.2.5"), now)
                .is_err()
        );
    }

    #[test]
    fn signups_are_limited_per_network() {
        let limiter = SignupRateLimiter::new(SignupRateLimitSettings {
            max_per_network: 2,
            window: Duration::from_secs(3600),
        });
        let now = Instant::now();
        assert!(limiter.admit(net("192.0.2.1"), now).is_ok());
        assert!(limiter.admit(net("192.0.2.1"), now).is_ok());
        assert!(limiter.admit(net("192.0.2.1"), now).is_err());
        assert!(limiter.admit(net("192.0.2.2"), now).is_ok());
        assert!(
            limiter
                .admit(net("192.0.2.1"), now + Duration::from_secs(3600))
                .is_ok()
        );
    }
}
