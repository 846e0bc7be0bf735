//! `WorkQueueSource`: the backfill's source operator. A tokio task per worker scans that worker's
//! `_id` ranges of the work queue and sends candidates over a bounded channel; the operator emits
//! them at its current epoch, advances the epoch every interval, and holds back while the end of
//! the graph is more than a few epochs behind, so memory is bounded by configuration, not by the
//! collection's size.
//!
//! It never marks anything and never skips a document: a read that fails with an error that heals
//! is retried from the last `_id` it emitted; one that cannot heal stops the run.
//!
//! The operator is `crate::dataflow::async_source` over `ScanState`; `scan` is the task.

use crate::dataflow::async_source::{async_source, SourceSender, SourceState, Step};
use crate::dataflow::record::{Candidate, Origin};
use crate::dataflow::source_pacing::SourcePacing;
use crate::mongo::candidate::from_raw;
use crate::mongo::error::{describe, Attempts};
use crate::mongo::work_queue::{ScanRange, WorkQueue};
use crate::run::failure::Failure;
use mongodb::bson::doc;
use mongodb::options::Hint;
use timely::dataflow::{Scope, StreamVec};

/// What the scan task sends.
#[derive(Debug, PartialEq)]
pub(crate) enum Msg {
    /// A candidate, in `_id` order.
    Doc(Candidate),
    /// Every range is scanned.
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
        let failure = pacing.failure.clone();
        let task = move |tx| scan(queue, ranges, tx, failure);
        async_source(self, "WorkQueueSource", runtime, pacing, Some((ScanState, task)))
    }
}

/// What the scan's messages mean to the operator: a candidate to emit, until the scan is done
/// (or its task is gone).
pub(crate) struct ScanState;

impl SourceState for ScanState {
    type Msg = Msg;
    type Out = Candidate;
    const ENDS_WITH_TASK: bool = true;

    fn take(&mut self, msg: Msg) -> Step<Candidate, Msg> {
        match msg {
            Msg::Doc(d) => Step::Emit(d),
            Msg::Done => Step::Finished,
        }
    }
}

/// Scans every range in `_id` order. A read that fails with an error that heals (an election, a
/// dropped connection, a lost cursor) waits with backoff and resumes after the last `_id` sent,
/// for as long as it lasts; one that cannot heal (a missing index, no permission) stops the run
/// through `failure` with one line.
async fn scan(queue: WorkQueue, ranges: Vec<ScanRange>, tx: SourceSender<Msg>, failure: Failure) {
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
                    if tx.send(Msg::Doc(cand)).is_err() {
                        return Ok(false);
                    }
                    after = Some(id);
                    sent += 1;
                    if sent.is_multiple_of(256) {
                        tx.wake();
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
                            tx.wake();
                            return;
                        }
                    }
                }
            }
        }
        tx.wake();
    }
    let _ = tx.send(Msg::Done);
    tx.wake();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::record::DocMeta;

    fn cand(id: &str) -> Candidate {
        let doc = DocMeta { id: id.into(), lang: None, created_at_ms: None, origin: Origin::Backfill };
        Candidate { doc, text: Ok("t".into()) }
    }

    #[test]
    fn emits_candidates_until_the_scan_is_done() {
        let mut s = ScanState;
        assert_eq!(s.take(Msg::Doc(cand("a"))), Step::Emit(cand("a")));
        assert_eq!(s.take(Msg::Done), Step::Finished);
        // A scan task that ended (a failure) ends the source.
        const { assert!(ScanState::ENDS_WITH_TASK) };
    }

    #[test]
    fn closes_only_an_epoch_with_documents() {
        use crate::dataflow::async_source::OpenView;
        let s = ScanState;
        assert!(!s.closes(OpenView { docs: 0, due: true, full: false }));
        assert!(s.closes(OpenView { docs: 1, due: true, full: false }));
        assert!(s.closes(OpenView { docs: 5, due: false, full: true }));
        assert!(!s.closes(OpenView { docs: 5, due: false, full: false }));
    }
}
