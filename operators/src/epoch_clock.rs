//! `EpochClock`: the one epoch counter the sources of a process share, so the backfill scan and
//! the change stream emit into the same timestamp domain. A source that closes an epoch moves the
//! clock forward; every other source follows it at its next activation. Without it a quiet source
//! would hold the frontier at its own, older epoch and throttle a busy one to that epoch plus the
//! pacing's lead.
//!
//! It only ever moves forward and owns nothing else; capabilities stay with the sources.
//! Workers in other processes have their own clock: their sources still close epochs on the
//! checkpoint interval, so they stay within one interval of each other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The shared epoch of a process's sources.
#[derive(Clone, Debug, Default)]
pub struct EpochClock(Arc<AtomicU64>);

impl EpochClock {
    /// A clock at `epoch`.
    pub fn new(epoch: u64) -> EpochClock {
        EpochClock(Arc::new(AtomicU64::new(epoch)))
    }

    /// The epoch sources should emit at now.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves the clock to at least `epoch`; returns the clock's epoch after.
    pub fn advance_to(&self, epoch: u64) -> u64 {
        self.0.fetch_max(epoch, Ordering::SeqCst).max(epoch)
    }
}

/// Asks the sources to stop reading: they emit what they have, drop their capabilities, and the
/// graph then drains, commits and marks what is in flight (graceful shutdown on SIGINT/SIGTERM,
/// or a change stream that lost its history).
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Asks every source holding this signal to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moves_forward() {
        let c = EpochClock::new(3);
        assert_eq!(c.advance_to(5), 5);
        assert_eq!(c.advance_to(4), 5);
        assert_eq!(c.clone().now(), 5);
        let s = StopSignal::default();
        assert!(!s.is_stopped());
        s.clone().stop();
        assert!(s.is_stopped());
    }
}
