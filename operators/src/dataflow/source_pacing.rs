//! What both source operators (the work-queue scan and the change stream) share: their pacing
//! ([`SourcePacing`]: when an epoch closes, how far ahead of the end of the graph a source may
//! run, the process's shared epoch clock and the stop signal) and the epoch a source is filling
//! (`OpenEpoch`). The operator skeleton that uses them is `crate::dataflow::async_source`. It
//! never reads Mongo and never emits anything itself.

use crate::dataflow::epoch_clock::{EpochClock, StopSignal};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use timely::dataflow::operators::Capability;
use timely::dataflow::ProbeHandle;

/// How the source paces itself.
#[derive(Clone, Debug)]
pub struct SourcePacing {
    /// First epoch to emit at (one past the last committed epoch).
    pub start_epoch: u64,
    /// Wall time after which a non-empty epoch is closed.
    pub epoch_interval: Duration,
    /// Documents after which an epoch is closed regardless of time: the memory cap. Below it an
    /// epoch holds what the graph completes in about one `epoch_interval` ([`EpochSizer`]).
    pub epoch_docs: usize,
    /// Epochs the source may run ahead of the probe.
    pub max_epochs_ahead: u64,
    /// Documents one source may have read but not yet seen complete (its open epoch and the
    /// closed ones the probe has not passed). It bounds memory (rows wait in the writer until
    /// their epoch is sealed) and sets the window the request batcher sorts by length: small
    /// epochs with only a few epochs ahead left the batcher a window too small to keep each
    /// server batch to one band of lengths (`crate::tei` waiting texts; `benches/README.md`).
    pub max_docs_ahead: usize,
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
            max_epochs_ahead: MAX_EPOCHS_AHEAD,
            max_docs_ahead: epoch_docs.saturating_mul(2).max(1),
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

/// Epochs a source may run ahead of the end of the graph. Epochs are about one checkpoint interval
/// each, so this is rarely the bound; [`SourcePacing::max_docs_ahead`] is.
pub const MAX_EPOCHS_AHEAD: u64 = 32;

/// Documents the first epoch of one source may hold: the request batcher's first window, big
/// enough that the first requests are cut from sorted lengths (a corpus of 6,000 tweets in
/// epochs of 512 padded 17% of the GPUs' work, `tests/request_batching.rs`), small enough to
/// commit within seconds on one slow GPU.
pub const FIRST_EPOCH_DOCS: usize = 2_048;
/// Documents a later epoch of one source may hold while its completion rate is not yet known.
pub const UNMEASURED_EPOCH_DOCS: usize = 512;
/// The fewest documents the size rule asks of an epoch (the interval still closes smaller ones).
pub const MIN_EPOCH_DOCS: usize = 32;
/// How far back completions count toward the rate.
const RATE_WINDOW: Duration = Duration::from_secs(30);

/// How many documents an epoch of one source may hold so that epochs commit about one
/// checkpoint interval apart: the source's documents the end of the graph completed per second
/// over the last [`RATE_WINDOW`], times the interval, between [`MIN_EPOCH_DOCS`] and the memory
/// cap. A scan reads far faster than GPUs embed; without this an epoch closed by the interval
/// held everything read in it (a whole 8,000-document backfill in one epoch at `--checkpoint-
/// interval 2s`, nothing committed until the end; issue 18, item 11).
#[derive(Debug, Default)]
pub(crate) struct EpochSizer {
    /// Closed epochs not yet complete: `(epoch, documents)`.
    pending: VecDeque<(u64, usize)>,
    /// The documents of `pending`.
    pending_docs: usize,
    /// Completions seen: when, and how many documents.
    done: VecDeque<(Instant, usize)>,
    /// Whether an epoch with documents was closed.
    closed_one: bool,
}

impl EpochSizer {
    /// Counts epoch `epoch`, closed with `docs` documents.
    pub(crate) fn closed(&mut self, epoch: u64, docs: usize) {
        if docs > 0 {
            self.pending.push_back((epoch, docs));
            self.pending_docs += docs;
            self.closed_one = true;
        }
    }

    /// The documents the next epoch may hold, from the completions the probe shows by now.
    pub(crate) fn limit(&mut self, pacing: &SourcePacing) -> usize {
        let now = Instant::now();
        while let Some(&(epoch, docs)) = self.pending.front() {
            if pacing.probe.less_equal(&epoch) {
                break;
            }
            self.pending.pop_front();
            self.pending_docs -= docs;
            self.done.push_back((now, docs));
        }
        while self.done.len() > 2 && self.done.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            self.done.pop_front();
        }
        let cap = pacing.epoch_docs;
        let unmeasured = if self.closed_one { UNMEASURED_EPOCH_DOCS } else { FIRST_EPOCH_DOCS }.min(cap);
        let Some(&(first, _)) = self.done.front() else { return unmeasured };
        let span = now.duration_since(first).as_secs_f64();
        if self.done.len() < 2 || span <= 0.0 {
            return unmeasured;
        }
        // The first completion only starts the clock.
        let docs: usize = self.done.iter().skip(1).map(|(_, d)| d).sum();
        let per_interval = docs as f64 / span * pacing.epoch_interval.as_secs_f64();
        (per_interval as usize).clamp(MIN_EPOCH_DOCS.min(cap), cap)
    }
}

/// The epoch a source is filling: when it opened, how many documents it holds, and how many it
/// may hold.
pub(crate) struct OpenEpoch {
    started: Instant,
    docs: usize,
    limit: usize,
    sizer: EpochSizer,
}

impl OpenEpoch {
    pub(crate) fn new() -> OpenEpoch {
        OpenEpoch { started: Instant::now(), docs: 0, limit: FIRST_EPOCH_DOCS, sizer: EpochSizer::default() }
    }

    /// A fresh epoch: the sizer's measurements carry over.
    fn restart(&mut self) {
        self.started = Instant::now();
        self.docs = 0;
    }

    /// Follows the shared clock (true if `cap` moved on to a later, fresh epoch), and sizes the
    /// epoch from the completions seen by now.
    pub(crate) fn follow(&mut self, pacing: &SourcePacing, cap: &mut Capability<u64>) -> bool {
        let before = *cap.time();
        let moved = pacing.follow_clock(cap);
        if moved {
            self.sizer.closed(before, self.docs);
            self.restart();
        }
        self.limit = self.sizer.limit(pacing);
        moved
    }

    /// Whether the checkpoint interval has passed since the epoch opened.
    pub(crate) fn due(&self, pacing: &SourcePacing) -> bool {
        self.started.elapsed() >= pacing.epoch_interval
    }

    /// Whether the epoch holds its maximum of documents: about one interval's completions
    /// ([`EpochSizer`]), never above the memory cap.
    pub(crate) fn full(&self, pacing: &SourcePacing) -> bool {
        self.docs >= self.limit.min(pacing.epoch_docs)
    }

    /// Whether the source must wait for the end of the graph before it reads more: too many
    /// epochs ahead of the probe at `epoch`, or [`SourcePacing::max_docs_ahead`] documents read
    /// and not yet complete (as of the last [`OpenEpoch::follow`]).
    pub(crate) fn held_back(&self, pacing: &SourcePacing, epoch: u64) -> bool {
        pacing.too_far_ahead(epoch) || self.docs_ahead() >= pacing.max_docs_ahead
    }

    /// Documents read and not yet seen complete: this epoch's and the closed ones'.
    pub(crate) fn docs_ahead(&self) -> usize {
        self.sizer.pending_docs + self.docs
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
        self.sizer.closed(*cap.time(), self.docs);
        pacing.close_epoch(cap);
        self.restart();
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
