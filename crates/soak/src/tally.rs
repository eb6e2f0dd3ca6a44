//! What the soak's clients did and where they failed, shared by every client thread
//! and task.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Failures of one kind: how many, when first and one example.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRecord {
    pub count: u64,
    pub first_at_s: f64,
    pub example: String,
}

/// Counters, failures and the clients active now.
pub struct Tally {
    started: Instant,
    events: Mutex<BTreeMap<&'static str, u64>>,
    failures: Mutex<BTreeMap<&'static str, FailureRecord>>,
    latencies_ms: Mutex<BTreeMap<&'static str, Vec<u32>>>,
    pub viewers_active: AtomicUsize,
    pub chat_sockets_active: AtomicUsize,
    /// Set when the churn ends: every client leaves.
    pub stop: AtomicBool,
}

/// A snapshot for the report.
#[derive(Debug, Clone, Serialize)]
pub struct TallySnapshot {
    pub events: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, FailureRecord>,
    /// p50, p95 and max in milliseconds, per measured step.
    pub latencies_ms: BTreeMap<String, [u32; 3]>,
}

/// Most characters kept of a failure's example.
const MAX_EXAMPLE_CHARS: usize = 240;

impl Tally {
    pub fn new(started: Instant) -> Self {
        Tally {
            started,
            events: Mutex::default(),
            failures: Mutex::default(),
            latencies_ms: Mutex::default(),
            viewers_active: AtomicUsize::new(0),
            chat_sockets_active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts one thing that went as expected.
    pub fn event(&self, name: &'static str) {
        *lock(&self.events).entry(name).or_default() += 1;
    }

    /// Counts one client-side failure of `kind`.
    pub fn failure(&self, kind: &'static str, detail: impl std::fmt::Display) {
        let at = self.started.elapsed().as_secs_f64();
        let mut failures = lock(&self.failures);
        let record = failures.entry(kind).or_insert_with(|| FailureRecord {
            count: 0,
            first_at_s: at,
            example: detail.to_string().chars().take(MAX_EXAMPLE_CHARS).collect(),
        });
        record.count += 1;
    }

    pub fn latency(&self, name: &'static str, time: Duration) {
        let ms = time.as_millis().min(u128::from(u32::MAX)) as u32;
        lock(&self.latencies_ms).entry(name).or_default().push(ms);
    }

    pub fn failure_count(&self) -> u64 {
        lock(&self.failures)
            .values()
            .map(|record| record.count)
            .sum()
    }

    pub fn snapshot(&self) -> TallySnapshot {
        TallySnapshot {
            events: lock(&self.events)
                .iter()
                .map(|(name, count)| ((*name).to_owned(), *count))
                .collect(),
            failures: lock(&self.failures)
                .iter()
                .map(|(name, record)| ((*name).to_owned(), record.clone()))
                .collect(),
            latencies_ms: lock(&self.latencies_ms)
                .iter()
                .map(|(name, values)| {
                    let mut values = values.clone();
                    values.sort_unstable();
                    (
                        (*name).to_owned(),
                        [50.0, 95.0, 100.0].map(|p| rank(&values, p)),
                    )
                })
                .collect(),
        }
    }
}

/// Nearest-rank percentile of sorted `values` (0 when empty).
fn rank(values: &[u32], percentile: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    let index = ((percentile / 100.0) * values.len() as f64).ceil() as usize;
    values[index.clamp(1, values.len()) - 1]
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_first_example() {
        let tally = Tally::new(Instant::now());
        tally.failure("chat_echo_timeout", "first");
        tally.failure("chat_echo_timeout", "second");
        tally.latency("viewer_keyframe", Duration::from_millis(30));
        tally.latency("viewer_keyframe", Duration::from_millis(10));
        let snapshot = tally.snapshot();
        assert_eq!(snapshot.failures["chat_echo_timeout"].count, 2);
        assert_eq!(snapshot.failures["chat_echo_timeout"].example, "first");
        assert_eq!(snapshot.latencies_ms["viewer_keyframe"], [10, 30, 30]);
        assert_eq!(tally.failure_count(), 2);
    }
}
