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
}

impl ViewerCounts {
    /// Sets the live's current viewer count, raising its peak if needed.
    pub fn set(&self, live: LiveId, viewers: u32) {
        let mut map = self.lock();
        let count = map.entry(live).or_default();
        count.current = viewers;
        count.peak = count.peak.max(viewers);
    }

    /// Viewers watching now (0 for unknown lives).
    pub fn current(&self, live: LiveId) -> u32 {
        self.lock().get(&live).map_or(0, |count| count.current)
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
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
}
