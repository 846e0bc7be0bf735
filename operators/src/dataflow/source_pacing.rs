//! What both source operators (the work-queue scan and the change stream) share: their pacing
//! ([`SourcePacing`]: when an epoch closes, how far ahead of the end of the graph a source may
//! run, the process's shared epoch clock and the stop signal), the epoch a source is filling
//! (`OpenEpoch`), and the bounded hand-off from a source's tokio task to its operator
//! (`send_blocking`). It never reads Mongo and never emits anything itself.

use crate::dataflow::epoch_clock::{EpochClock, StopSignal};
use crossbeam_channel::{Sender, TrySendError};
use std::time::{Duration, Instant};
use timely::dataflow::operators::Capability;
use timely::dataflow::ProbeHandle;
use timely::scheduling::SyncActivator;

/// How the source paces itself.
#[derive(Clone, Debug)]
pub struct SourcePacing {
    /// First epoch to emit at (one past the last committed epoch).
    pub start_epoch: u64,
    /// Wall time after which a non-empty epoch is closed.
    pub epoch_interval: Duration,
    /// Documents after which an epoch is closed regardless of time.
    pub epoch_docs: usize,
    /// Epochs the source may run ahead of the probe.
    pub max_epochs_ahead: u64,
    /// Probe at the end of the graph.
    pub probe: ProbeHandle<u64>,
    /// The epoch shared with the process's other sources.
    pub clock: EpochClock,
    /// Asks the source to stop reading and close.
    pub stop: StopSignal,
    /// Where a source's task reports an error that cannot heal (a missing index, no
    /// permission): the run stops with it.
    pub failure: crate::run::failure::Failure,
}

impl SourcePacing {
    /// Pacing with its own clock and stop signal, starting at `start_epoch`.
    pub fn new(start_epoch: u64, epoch_interval: Duration, epoch_docs: usize, probe: ProbeHandle<u64>) -> Self {
        SourcePacing {
            start_epoch,
            epoch_interval,
            epoch_docs,
            max_epochs_ahead: 3,
            probe,
            clock: EpochClock::new(start_epoch),
            stop: StopSignal::default(),
            failure: Default::default(),
        }
    }

    /// Moves `cap` to the clock's epoch if another source has moved it on; true if it moved.
    pub(crate) fn follow_clock(&self, cap: &mut Capability<u64>) -> bool {
        let now = self.clock.now();
        if now > *cap.time() {
            cap.downgrade(&now);
            return true;
        }
        false
    }

    /// Closes the epoch of `cap`: the clock and `cap` move to the next epoch.
    pub(crate) fn close_epoch(&self, cap: &mut Capability<u64>) {
        let next = self.clock.advance_to(*cap.time() + 1);
        cap.downgrade(&next);
    }

    /// Whether the end of the graph is too far behind `epoch` for a source to emit more.
    /// (Sources check it before reading their channel.)
    pub(crate) fn too_far_ahead(&self, epoch: u64) -> bool {
        self.probe.less_than(&epoch.saturating_sub(self.max_epochs_ahead))
    }
}

/// The epoch a source is filling: when it opened and how many documents it holds.
pub(crate) struct OpenEpoch {
    started: Instant,
    docs: usize,
}

impl OpenEpoch {
    pub(crate) fn new() -> OpenEpoch {
        OpenEpoch { started: Instant::now(), docs: 0 }
    }

    /// Follows the shared clock; true if `cap` moved on to a later (fresh) epoch.
    pub(crate) fn follow(&mut self, pacing: &SourcePacing, cap: &mut Capability<u64>) -> bool {
        let moved = pacing.follow_clock(cap);
        if moved {
            *self = OpenEpoch::new();
        }
        moved
    }

    /// Whether the checkpoint interval has passed since the epoch opened.
    pub(crate) fn due(&self, pacing: &SourcePacing) -> bool {
        self.started.elapsed() >= pacing.epoch_interval
    }

    /// Whether the epoch holds its maximum of documents.
    pub(crate) fn full(&self, pacing: &SourcePacing) -> bool {
        self.docs >= pacing.epoch_docs
    }

    /// Documents emitted in it.
    pub(crate) fn docs(&self) -> usize {
        self.docs
    }

    /// Counts one more document.
    pub(crate) fn add(&mut self) {
        self.docs += 1;
    }

    /// Closes it: `cap` and the clock move to the next epoch.
    pub(crate) fn close(&mut self, pacing: &SourcePacing, cap: &mut Capability<u64>) {
        pacing.close_epoch(cap);
        *self = OpenEpoch::new();
    }

    /// When the source should run again: at once with input waiting, else in time to close
    /// the epoch (polling at least every 20 ms).
    pub(crate) fn next_wake(&self, pacing: &SourcePacing, input_waiting: bool) -> Duration {
        if input_waiting {
            return Duration::ZERO;
        }
        pacing.epoch_interval.saturating_sub(self.started.elapsed()).min(Duration::from_millis(20))
    }
}

/// Sends `msg` from a source's tokio task, waiting while the channel is full (the operator is
/// woken to drain it); `Err` once the operator has dropped its receiver. Blocking keeps the
/// channel bounded; callers run it under `block_in_place`, never on a timely worker.
pub(crate) fn send_blocking<M>(tx: &Sender<M>, mut msg: M, wake: &SyncActivator) -> Result<(), ()> {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(m)) => {
                let _ = wake.activate();
                msg = m;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(TrySendError::Disconnected(_)) => return Err(()),
        }
    }
}
