//! The circuit breaker: consecutive transport failures make an upstream fail fast for a while.

use super::lock;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Fails fast after `threshold` consecutive failures, for `open_for`; then lets calls try
/// again (one more failure opens it again).
pub(super) struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<(u32, Option<Instant>)>,
}

impl Breaker {
    pub(super) fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold,
            open_for,
            state: Mutex::default(),
        }
    }

    /// `Err(time left)` while open.
    pub(super) fn admit(&self) -> Result<(), Duration> {
        match lock(&self.state).1 {
            Some(until) if Instant::now() < until => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    pub(super) fn record(&self, ok: bool) {
        let mut state = lock(&self.state);
        if ok {
            *state = (0, None);
            return;
        }
        state.0 = state.0.saturating_add(1);
        if self.threshold > 0 && state.0 >= self.threshold {
            state.1 = Some(Instant::now() + self.open_for);
        }
    }
}

impl crate::metrics::Breaker for Breaker {
    fn is_open(&self) -> bool {
        self.admit().is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_closes_on_success() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.record(false);
        assert!(b.admit().is_ok());
        b.record(false);
        assert!(b.admit().is_err());
        b.record(true);
        assert!(b.admit().is_ok());
        let b = Breaker::new(1, Duration::ZERO);
        b.record(false);
        assert!(b.admit().is_ok(), "open for no time: tried again at once");
    }
}
