//! `WorkQueueSource`: the backfill's source operator. A tokio task per worker scans that worker's
//! `_id` ranges of the work queue and sends candidates over a bounded channel; the operator emits
//! them at its current epoch, advances the epoch every interval, and holds back while the end of
//! the graph is more than a few epochs behind, so memory is bounded by configuration, not by the
//! collection's size.
//!
//! It never marks anything and never skips a document: a read that fails with an error that heals
//! is retried from the last `_id` it emitted; one that cannot heal stops the run.

use crate::dataflow::record::{Candidate, Origin};
use crate::dataflow::source_pacing::{send_blocking, OpenEpoch, SourcePacing};
use crate::mongo::candidate::from_raw;
use crate::mongo::error::{describe, Attempts};
use crate::mongo::work_queue::{ScanRange, WorkQueue};
use crate::run::failure::Failure;
use crossbeam_channel::Sender;
use mongodb::bson::doc;
use mongodb::options::Hint;
use std::time::Duration;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};
use timely::scheduling::SyncActivator;

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
    /// # // Needs a MongoDB; see tests/backfill/main.rs for a runnable use.
    /// use timely::dataflow::ProbeHandle;
    /// use tweet_embed_operators::dataflow::source_pacing::SourcePacing;
    /// use tweet_embed_operators::dataflow::work_queue_source::WorkQueueSource;
    /// # fn build<'s>(scope: timely::dataflow::Scope<'s, u64>, queue: tweet_embed_operators::mongo::work_queue::WorkQueue, rt: tokio::runtime::Handle) {
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
            runtime.spawn(scan(queue, ranges, tx, wake, pacing.failure.clone()));
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
                if open.held_back(&pacing, *c.time()) {
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
                                if open.full(&pacing) || open.docs_ahead() >= pacing.max_docs_ahead {
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

/// Scans every range in `_id` order. A read that fails with an error that heals (an election, a
/// dropped connection, a lost cursor) waits with backoff and resumes after the last `_id` sent,
/// for as long as it lasts; one that cannot heal (a missing index, no permission) stops the run
/// through `failure` with one line.
async fn scan(queue: WorkQueue, ranges: Vec<ScanRange>, tx: Sender<Msg>, wake: SyncActivator, failure: Failure) {
    for range in ranges {
        let mut after = range.after.clone();
        let what = format!("scanning the work queue ({})", range.partition.key());
        let mut attempts = Attempts::new(&queue.retry, what.clone());
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
            let mut sent = 0u64;
            let result: Result<bool, mongodb::error::Error> = async {
                let mut cursor = queue
                    .coll
                    .find(filter)
                    .sort(doc! {"_id": 1})
                    .hint(Hint::Name(queue.index_name()))
                    .projection(projection)
                    .batch_size(1_000)
                    .await?;
                while cursor.advance().await? {
                    // Raw: a typed read refuses a whole document for one string that is not
                    // UTF-8, and resuming after the last `_id` would read it again for ever.
                    let (id, cand) = from_raw(cursor.current(), &queue.text_field, Origin::Backfill);
                    // A blocking send keeps the channel bounded; this task runs on the runtime's
                    // own threads, never on a timely worker.
                    if tokio::task::block_in_place(|| send_blocking(&tx, Msg::Doc(cand), &wake)).is_err() {
                        return Ok(false);
                    }
                    after = Some(id);
                    sent += 1;
                    if sent.is_multiple_of(256) {
                        let _ = wake.activate();
                    }
                }
                Ok(true)
            }
            .await;
            match result {
                Ok(true) => {
                    attempts.succeeded();
                    break;
                }
                // The operator stopped listening: the pass is over.
                Ok(false) => return,
                Err(e) => {
                    if sent > 0 {
                        // It got further: a new failure, not the same one again.
                        attempts.succeeded();
                    }
                    match attempts.failed(e) {
                        Ok(wait) => tokio::time::sleep(wait).await,
                        Err(e) => {
                            failure.report(format!("{what}: {}", describe(&e)));
                            let _ = wake.activate();
                            return;
                        }
                    }
                }
            }
        }
        let _ = wake.activate();
    }
    let _ = tokio::task::block_in_place(|| send_blocking(&tx, Msg::Done, &wake));
    let _ = wake.activate();
}
