//! `WorkQueueSource`: the backfill's source operator. A tokio task per worker scans that worker's
//! `_id` ranges of the work queue and sends candidates over a bounded channel; the operator emits
//! them at its current epoch, advances the epoch every interval, and holds back while the end of
//! the graph is more than a few epochs behind, so memory is bounded by configuration, not by the
//! collection's size.
//!
//! It never marks anything and never skips a document: a failed read is retried from the last
//! `_id` it emitted.

use crate::epoch_clock::{EpochClock, StopSignal};
use crate::record::{Candidate, Origin};
use crate::work_queue::{to_candidate, ScanRange, WorkQueue, WORK_QUEUE_INDEX};
use crossbeam_channel::{Sender, TrySendError};
use mongodb::bson::{doc, Bson};
use mongodb::options::Hint;
use std::time::{Duration, Instant};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::Capability;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
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

enum Msg {
    Doc(Candidate),
    Done,
}

/// Extension trait: the work-queue source on a scope.
pub trait WorkQueueSource<'scope> {
    /// Scans `ranges` of `queue` on `runtime` (a multi-threaded tokio runtime: the scan blocks
    /// in place while the channel is full) and emits every candidate once, in epochs.
    ///
    /// ```no_run
    /// # // Needs a MongoDB; see tests/backfill.rs for a runnable use.
    /// use timely::dataflow::ProbeHandle;
    /// use tweet_embed_operators::work_queue_source::{SourcePacing, WorkQueueSource};
    /// # fn build<'s>(scope: timely::dataflow::Scope<'s, u64>, queue: tweet_embed_operators::work_queue::WorkQueue, rt: tokio::runtime::Handle) {
    /// let pacing = SourcePacing::new(1, std::time::Duration::from_secs(1), 10_000, ProbeHandle::new());
    /// let candidates = scope.work_queue_source(queue, vec![], rt, pacing);
    /// # }
    /// ```
    fn work_queue_source(
        self,
        queue: WorkQueue,
        ranges: Vec<ScanRange>,
        runtime: tokio::runtime::Handle,
        pacing: SourcePacing,
    ) -> StreamVec<'scope, u64, Candidate>;
}

impl<'scope> WorkQueueSource<'scope> for Scope<'scope, u64> {
    fn work_queue_source(
        self,
        queue: WorkQueue,
        ranges: Vec<ScanRange>,
        runtime: tokio::runtime::Handle,
        pacing: SourcePacing,
    ) -> StreamVec<'scope, u64, Candidate> {
        let scope = self;
        source(scope, "WorkQueueSource", move |cap, info| {
            let wake = scope.worker().sync_activator_for(info.address.to_vec());
            let me = scope.activator_for(info.address.clone());
            let (tx, rx) = crossbeam_channel::bounded::<Msg>(8_192);
            runtime.spawn(scan(queue, ranges, tx, wake));
            let mut cap = Some(cap);
            if let Some(c) = cap.as_mut() {
                c.downgrade(&pacing.clock.advance_to(pacing.start_epoch));
            }
            // Dropping the receiver on stop ends the scan task at its next send.
            let mut rx = Some(rx);
            let mut open = OpenEpoch::new();
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                if pacing.stop.is_stopped() {
                    cap = None;
                    rx = None;
                    return;
                }
                let Some(rx) = rx.as_ref() else { return };
                open.follow(&pacing, c);
                if open.docs() > 0 && (open.due(&pacing) || open.full(&pacing)) {
                    open.close(&pacing, c);
                }
                if pacing.too_far_ahead(*c.time()) {
                    me.activate_after(Duration::from_millis(5));
                    return;
                }
                let mut done = false;
                {
                    let mut session = output.session(c);
                    for _ in 0..4_096 {
                        match rx.try_recv() {
                            Ok(Msg::Doc(d)) => {
                                session.give(d);
                                open.add();
                                if open.full(&pacing) {
                                    break;
                                }
                            }
                            Ok(Msg::Done) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                                done = true;
                                break;
                            }
                            Err(crossbeam_channel::TryRecvError::Empty) => break,
                        }
                    }
                }
                if done {
                    cap = None;
                    return;
                }
                // Come back for more input, and to close the epoch on time even if idle.
                me.activate_after(open.next_wake(&pacing, !rx.is_empty()));
            }
        })
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

/// Scans every range in `_id` order; on a failed read, waits and resumes after the last `_id`.
async fn scan(queue: WorkQueue, ranges: Vec<ScanRange>, tx: Sender<Msg>, wake: SyncActivator) {
    for range in ranges {
        let mut after = range.after.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut filter = queue.filter(Some(&range.partition));
            let mut id = doc! {};
            if let Some(a) = &after {
                id.insert("$gt", a.clone());
            }
            if let Some(u) = &range.upto {
                id.insert("$lte", u.clone());
            }
            if !id.is_empty() {
                filter.insert("_id", id);
            }
            let projection = doc! {"_id": 1, &queue.text_field: 1, "lang": 1, "created_at": 1};
            let result: Result<(), mongodb::error::Error> = async {
                let mut cursor = queue
                    .coll
                    .find(filter)
                    .sort(doc! {"_id": 1})
                    .hint(Hint::Name(WORK_QUEUE_INDEX.into()))
                    .projection(projection)
                    .batch_size(1_000)
                    .await?;
                let mut n = 0u64;
                while cursor.advance().await? {
                    let d = cursor.deserialize_current()?;
                    let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                    let cand = to_candidate(d, &queue.text_field, Origin::Backfill);
                    // A blocking send keeps the channel bounded; this task runs on the runtime's
                    // own threads, never on a timely worker.
                    if tokio::task::block_in_place(|| send_blocking(&tx, Msg::Doc(cand), &wake)).is_err() {
                        return Ok(());
                    }
                    after = Some(id);
                    n += 1;
                    if n.is_multiple_of(256) {
                        let _ = wake.activate();
                    }
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(partition = %range.partition.key(), error = %e, "work-queue scan failed; resuming after the last _id");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let _ = wake.activate();
    }
    let _ = tokio::task::block_in_place(|| send_blocking(&tx, Msg::Done, &wake));
    let _ = wake.activate();
}
