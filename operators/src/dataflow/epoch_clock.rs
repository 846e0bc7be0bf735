//! `EpochClock`: the one epoch counter the sources of a process share, so the backfill scan and
//! the change stream emit into the same timestamp domain. A source that closes an epoch moves the
//! clock forward; every other source follows it at its next activation. Without it a quiet source
//! would hold the frontier at its own, older epoch and throttle a busy one to that epoch plus the
//! pacing's lead.
//!
//! It only ever moves forward and owns nothing else; capabilities stay with the sources.
//! Processes of a cluster each have their own clock; `crate::dataflow::pass_control::PassRelay` carries
//! each process's epoch to the others, which move their clocks up to it, so one process's older
//! epoch does not throttle the rest.

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
/// or a change stream that lost its history). A [`StopSignal::child`] stops with its parent, but
/// stopping it leaves the parent running: one pass of a run can end while the run goes on.
#[derive(Clone, Debug, Default)]
pub struct StopSignal {
    own: Arc<AtomicBool>,
    ancestors: Vec<Arc<AtomicBool>>,
}

impl StopSignal {
    /// Asks every source holding this signal (or a child of it) to stop.
    pub fn stop(&self) {
        self.own.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for, here or on an ancestor.
    pub fn is_stopped(&self) -> bool {
        self.own.load(Ordering::SeqCst) || self.ancestors.iter().any(|a| a.load(Ordering::SeqCst))
    }

    /// A signal that is stopped when this one is, and can also be stopped on its own.
    pub fn child(&self) -> StopSignal {
        let mut ancestors = self.ancestors.clone();
        ancestors.push(self.own.clone());
        StopSignal { own: Arc::new(AtomicBool::new(false)), ancestors }
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
        let pass = s.child();
        pass.stop();
        assert!(pass.is_stopped() && !s.is_stopped(), "a child's stop leaves the parent running");
        let pass = s.child();
        s.clone().stop();
        assert!(s.is_stopped() && pass.is_stopped(), "a parent's stop reaches its children");
    }
}
