//! The circuit breaker of one endpoint: closed (in rotation), open (out of rotation after
//! repeated failures, for a backoff period), half-open (probed with one request at a time, and
//! back in rotation after one succeeds).
//!
//! This module owns the breaker's state, its backoff and its counters. It never retries a
//! request (the request moves to another endpoint on its own) and never decides what a failure
//! means (the caller says whether a call counts against the endpoint).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Consecutive failures that open the breaker (a connection refused or a refused client opens it
/// at once). A few, so one 503 in a 5% error rate does not idle a GPU.
pub(crate) const OPEN_AFTER: u32 = 3;
/// First and longest open period: short enough that a GPU back from a restart is used again
/// within seconds, long enough that a dead one costs a connection attempt per period.
pub(crate) const OPEN_MIN: Duration = Duration::from_millis(100);
pub(crate) const OPEN_MAX: Duration = Duration::from_secs(2);

/// Where an endpoint's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerState {
    /// In rotation.
    #[default]
    Closed,
    /// Out of rotation until its backoff period ends.
    Open,
    /// Its backoff period ended: one request at a time probes it.
    HalfOpen,
}

/// The breaker of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    inner: Mutex<Inner>,
    opened: AtomicU64,
    closed: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    consecutive_failures: u32,
    /// Set while open or half-open: when the open period ends.
    open_until: Option<Instant>,
    last_error: String,
}

/// What a finished call did to the breaker, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    /// Taken out of rotation (from closed).
    Opened,
    /// Back in rotation.
    Closed,
}

impl Breaker {
    /// Its state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner.lock().open_until {
            None => BreakerState::Closed,
            Some(until) if until > now => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// How many requests it lets be in flight at `now`: none while open, one while half-open.
    pub fn cap(&self, now: Instant) -> Option<usize> {
        match self.state(now) {
            BreakerState::Closed => Some(usize::MAX),
            BreakerState::HalfOpen => Some(1),
            BreakerState::Open => None,
        }
    }

    /// When an open breaker turns half-open, if it is open at `now`.
    pub fn reopens_at(&self, now: Instant) -> Option<Instant> {
        self.inner.lock().open_until.filter(|&at| at > now)
    }

    /// The last failure, for the "every endpoint is failing" warning.
    pub fn last_error(&self) -> String {
        self.inner.lock().last_error.clone()
    }

    /// Times it opened and closed since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.opened.load(Ordering::Relaxed), self.closed.load(Ordering::Relaxed))
    }

    /// A call the endpoint served (vectors, or a refusal of the request or an input).
    pub fn on_success(&self) -> Transition {
        let mut inner = self.inner.lock();
        let was_open = inner.open_until.is_some();
        *inner = Inner::default();
        if was_open {
            self.closed.fetch_add(1, Ordering::Relaxed);
            Transition::Closed
        } else {
            Transition::None
        }
    }

    /// A call that failed against the endpoint; `at_once` opens it without waiting for
    /// [`OPEN_AFTER`] failures (connection refused, client refused).
    pub fn on_failure(&self, error: String, at_once: bool, now: Instant) -> Transition {
        let mut inner = self.inner.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        inner.last_error = error;
        if !(at_once || inner.consecutive_failures >= OPEN_AFTER) {
            return Transition::None;
        }
        // Each failed probe doubles the open period.
        let doublings = inner.consecutive_failures.saturating_sub(1).min(16);
        let period = OPEN_MIN.saturating_mul(1 << doublings).min(OPEN_MAX);
        let was_closed = inner.open_until.is_none();
        inner.open_until = Some(now + period);
        if was_closed {
            self.opened.fetch_add(1, Ordering::Relaxed);
            Transition::Opened
        } else {
            Transition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_probes_with_backoff_and_closes() {
        let breaker = Breaker::default();
        let t = Instant::now();
        assert_eq!(breaker.on_failure("503".into(), false, t), Transition::None);
        assert_eq!(breaker.on_failure("503".into(), false, t), Transition::None);
        assert_eq!(breaker.cap(t), Some(usize::MAX));
        assert_eq!(breaker.on_failure("503".into(), false, t), Transition::Opened);
        assert_eq!((breaker.state(t), breaker.cap(t)), (BreakerState::Open, None));
        let first = breaker.reopens_at(t).unwrap() - t;
        let later = t + first;
        assert_eq!((breaker.state(later), breaker.cap(later)), (BreakerState::HalfOpen, Some(1)));
        // A failed probe: open again, for longer.
        assert_eq!(breaker.on_failure("connect".into(), true, later), Transition::None);
        assert!(breaker.reopens_at(later).unwrap() - later > first);
        assert_eq!(breaker.on_success(), Transition::Closed);
        assert_eq!((breaker.state(later), breaker.counts()), (BreakerState::Closed, (1, 1)));
        assert_eq!(breaker.on_failure("connect".into(), true, later), Transition::Opened);
    }
}
