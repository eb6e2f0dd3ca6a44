//! [`SlidingWindow`]: at most N events per window, with the wait until the next one is
//! allowed. Pure: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_max_per_window_then_says_how_long_to_wait() {
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
}
