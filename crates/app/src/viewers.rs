//! [`ViewerCounts`]: how many people watch each live right now, and the peak.
//!
//! Held in [`crate::state::AppState`]. The chat/socket server (a later issue) calls
//! [`ViewerCounts::set`] when viewers join or leave; the lives API reads
//! [`ViewerCounts::current`] for listings and [`ViewerCounts::finish`] when a live
//! ends, to store its peak in the history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use privatehub_protocol::LiveId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count {
    current: u32,
    peak: u32,
}

/// Shared, cloneable viewer counters keyed by live.
#[derive(Debug, Clone, Default)]
pub struct ViewerCounts {
    inner: Arc<Mutex<HashMap<LiveId, Count>>>,
    /// Counts over all instances, as the cluster link last read them (empty alone).
    shared: Arc<Mutex<HashMap<LiveId, u32>>>,
}

impl ViewerCounts {
    /// Sets the live's current viewer count, raising its peak if needed.
    pub fn set(&self, live: LiveId, viewers: u32) {
        let mut map = self.lock();
        let count = map.entry(live).or_default();
        count.current = viewers;
        count.peak = count.peak.max(viewers);
    }

    /// Viewers watching now (0 for unknown lives): this instance's count, or the count
    /// over all instances when that is known and higher.
    pub fn current(&self, live: LiveId) -> u32 {
        let local = self.lock().get(&live).map_or(0, |count| count.current);
        let shared = lock(&self.shared).get(&live).copied().unwrap_or(0);
        local.max(shared)
    }

    /// Replaces the counts over all instances (the cluster link's latest reading).
    pub fn set_shared(&self, counts: HashMap<LiveId, u32>) {
        {
            let mut map = self.lock();
            for (live, viewers) in &counts {
                if let Some(count) = map.get_mut(live) {
                    count.peak = count.peak.max(*viewers);
                }
            }
        }
        *lock(&self.shared) = counts;
    }

    /// Highest count seen for the live so far.
    pub fn peak(&self, live: LiveId) -> u32 {
        self.lock().get(&live).map_or(0, |count| count.peak)
    }

    /// Forgets the live and returns its peak.
    pub fn finish(&self, live: LiveId) -> u32 {
        self.lock().remove(&live).map_or(0, |count| count.peak)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LiveId, Count>> {
        lock(&self.inner)
    }
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
    fn tracks_current_and_peak() {
        let counts = ViewerCounts::default();
        let live = LiveId(1);
        assert_eq!(counts.current(live), 0);
        counts.set(live, 3);
        counts.set(live, 1);
        assert_eq!((counts.current(live), counts.peak(live)), (1, 3));
        assert_eq!(counts.clone().finish(live), 3);
        assert_eq!(counts.peak(live), 0);
    }

    #[test]
    fn a_shared_count_above_the_local_one_is_shown_and_raises_the_peak() {
        let counts = ViewerCounts::default();
        let live = LiveId(1);
        counts.set(live, 2);
        counts.set_shared(HashMap::from([(live, 5)]));
        assert_eq!((counts.current(live), counts.peak(live)), (5, 5));
        counts.set_shared(HashMap::new());
        assert_eq!(counts.current(live), 2);
    }
}
