//! The dataflow of one pass, built on one worker: work-queue source (+ change-stream source and
//! `IdGate` when streaming) → dedup → embed (rejections split off after dedup and joined again at
//! the writer) → write Parquet → commit. [`PassGraph`] holds what a worker brings to it; building
//! it is all this module does (agreeing on a pass and stepping it are `super::passes`'s).

use std::sync::Arc;

use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, Exchange, OkErr, Probe};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use super::engine::Engine;
use crate::dataflow::change_stream_source::{ChangeStreamSource, StreamFeed};
use crate::dataflow::dedup::Dedup;
use crate::dataflow::embed::{Embed, Embedder};
use crate::dataflow::id_gate::IdGate;
use crate::dataflow::record::{text_hash, Candidate, Change, Deleted, TextJob, Work, Written};
use crate::dataflow::source_pacing::SourcePacing;
use crate::dataflow::work_queue_source::WorkQueueSource;
use crate::dataflow::write_parquet::WriteParquet;
use crate::mongo::work_queue::ScanRange;
use crate::run::failure::Failure;
use crate::table::checkpoint::{Commit, Committer};
use crate::table::output::EpochWriter;

/// Vectors of recent texts each worker keeps, so recurring texts are embedded once: about
/// 12 MiB of 768-float vectors per worker, and 1.5 MiB more for the window of texts seen once.
const VECTOR_CACHE: usize = 4_096;

/// What one worker brings to a pass's graph.
pub(super) struct PassGraph {
    /// This worker's share of the scan (empty: no scan).
    pub ranges: Vec<ScanRange>,
    /// This worker's Parquet writer.
    pub writer: EpochWriter,
    /// The committer (worker 0 of the leading process only).
    pub committer: Option<Committer>,
    /// The change stream to follow (worker 0 of the leading process only, when streaming).
    pub feed: Option<StreamFeed>,
    /// The sources' pacing; its probe watches the end of the graph.
    pub pacing: SourcePacing,
    /// The TEI endpoint pool.
    pub embedder: Arc<dyn Embedder>,
    /// Requests the embedding worker keeps outstanding.
    pub in_flight: usize,
}

impl PassGraph {
    /// Builds the pass's dataflow on `worker`; `streaming` adds the change stream. Returns the
    /// probe at the end of the graph (done when the pass is).
    pub(super) fn build(
        self,
        worker: &mut Worker,
        engine: &Engine,
        streaming: bool,
        fail: Failure,
    ) -> ProbeHandle<u64> {
        let PassGraph { ranges, writer, committer, feed, pacing, embedder, in_flight } = self;
        let rt = engine.runtime.handle();
        let (index, threads) = (worker.index(), engine.config.workers.max(1));
        let probe = pacing.probe.clone();
        let committed = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let scanned = scope.work_queue_source(engine.queue.clone(), ranges, rt.clone(), pacing.clone());
            let (candidates, deletions) = if streaming {
                let streamed = scope.change_stream_source(feed, rt.clone(), pacing);
                let (upserts, deletes) =
                    streamed.ok_err::<Vec<Candidate>, _, Vec<Deleted>, _, _>(|change| match change {
                        Change::Upsert(c) => Ok(c),
                        Change::Delete(d) => Err(d),
                    });
                // Two sources can read one document: the gate lets it through once.
                let gated = scanned.concat(upserts).id_gate(engine.queue.clone(), rt.clone(), committed.clone());
                // Every writer must see every deletion: a deleted document's row may be on any.
                (gated, deletes.broadcast())
            } else {
                (scanned, empty(scope))
            };
            // Rejections skip the GPUs: split off after dedup, joined again at the writer.
            let (jobs, rejects) = candidates.dedup().ok_err::<Vec<TextJob>, _, Vec<Written>, _, _>(|w| match w {
                Work::Job(job) => Ok(job),
                Work::Reject(r) => Err(Written::Reject(r)),
            });
            // One batching owner per process: every text job goes to the process's first
            // worker, whose batcher orders them all by length. Workers cutting their own
            // shares would each sweep the lengths at their own pace, and the endpoints'
            // queues would mix their requests into padded batches (bench backfill_gpus:
            // 0.75 of capacity with 2 workers, 0.86 with 1). The rows go back to the
            // process's workers by id for writing (never across processes).
            let (funnel, local) = ((index / threads * threads) as u64, threads as u64);
            jobs.exchange(move |_| funnel)
                .embed(embedder, rt.clone(), in_flight, VECTOR_CACHE)
                .exchange(move |w| funnel + text_hash(w.id()) % local)
                .concat(rejects)
                .write_parquet(deletions, writer, index == 0, fail)
                .probe_with(&probe)
                .commit(committer)
                .probe_with(&committed);
        });
        probe
    }
}
