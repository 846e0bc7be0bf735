//! `IdGate`: lets each document through once when two sources can read it — the backfill scan
//! and the change stream (an insert during the scan, an update on a document the scan has yet to
//! reach), or the stream twice (two updates before the mark lands). Candidates are exchanged by
//! `_id`, so every copy of a document meets on one worker, where the gate
//! 1. drops a copy whose `_id` already passed in an epoch not yet marked (`in_flight`), and
//! 2. asks MongoDB, for the rest, which are still unmarked, and lets only those through.
//!
//! Why that is exactly once: say copies A then B of a document both passed. When B came, its
//! `_id` was not in flight, so A's epoch had been marked (ids leave `in_flight` only after the
//! committer has marked their epoch), and B's query ran after that mark and saw it: B could not
//! pass. If A's epoch never committed, the run failed and restart removes its files. The
//! backfill alone never needs the gate: a pass reads each document once.
//!
//! It holds the ids of unmarked epochs (bounded by the sources' pacing). It never lets a copy
//! through on a failed query: it retries, holding the worker, as marking does.

use crate::dataflow::record::{text_hash, Candidate};
use crate::mongo::document_id::DocId;
use crate::mongo::error::{describe, Attempts};
use crate::mongo::work_queue::WorkQueue;
use mongodb::bson::{doc, Bson, Document};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::{ProbeHandle, StreamVec};

/// Ids per query: one `$in` well under the 16 MiB command limit.
const CHUNK: usize = 2_000;

/// Extension trait: the gate between the sources and dedup.
pub trait IdGate<'scope> {
    /// Lets each `_id` through once; `committed` probes the committer's output
    /// ([`crate::table::checkpoint::Commit`]), whose frontier passes an epoch once its marks have landed —
    /// on every worker of every process.
    ///
    /// ```no_run
    /// # // Needs a MongoDB; see tests/run/main.rs for a runnable use.
    /// use tweet_embed_operators::dataflow::id_gate::IdGate;
    /// # fn build<'s>(s: timely::dataflow::StreamVec<'s, u64, tweet_embed_operators::dataflow::record::Candidate>, q: tweet_embed_operators::mongo::work_queue::WorkQueue, rt: tokio::runtime::Handle) {
    /// // Attach it to the committer's output with `.probe_with(&committed)`.
    /// let committed = timely::dataflow::ProbeHandle::new();
    /// let once = s.id_gate(q, rt, committed);
    /// # }
    /// ```
    fn id_gate(
        self,
        queue: WorkQueue,
        runtime: tokio::runtime::Handle,
        committed: ProbeHandle<u64>,
    ) -> StreamVec<'scope, u64, Candidate>;
}

impl<'scope> IdGate<'scope> for StreamVec<'scope, u64, Candidate> {
    fn id_gate(
        self,
        queue: WorkQueue,
        runtime: tokio::runtime::Handle,
        committed: ProbeHandle<u64>,
    ) -> StreamVec<'scope, u64, Candidate> {
        self.unary(Exchange::new(|c: &Candidate| text_hash(&c.doc.id)), "IdGate", move |_cap, _info| {
            let mut in_flight: HashMap<String, u64> = HashMap::new();
            let mut pruned_below = 0u64;
            move |input, output| {
                // Epochs below the committed frontier are marked (an empty frontier: all are).
                let below = committed.with_frontier(|f| f.first().copied()).unwrap_or(u64::MAX);
                if below > pruned_below {
                    in_flight.retain(|_, epoch| *epoch >= below);
                    pruned_below = below;
                }
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    let epoch = *cap.time();
                    let fresh: Vec<Candidate> =
                        data.flat_map(|d| d.drain(..)).filter(|c| !in_flight.contains_key(&c.doc.id)).collect();
                    if fresh.is_empty() {
                        return;
                    }
                    let unmarked = runtime.block_on(still_unmarked(&queue, &fresh));
                    let mut session = output.session(&cap);
                    for c in fresh {
                        if unmarked.contains(&c.doc.id) && in_flight.insert(c.doc.id.clone(), epoch).is_none() {
                            session.give(c);
                        }
                    }
                });
            }
        })
    }
}

/// The ids of `cands` that are still unmarked, retrying until MongoDB answers.
async fn still_unmarked(queue: &WorkQueue, cands: &[Candidate]) -> HashSet<String> {
    let mut out = HashSet::new();
    for chunk in cands.chunks(CHUNK) {
        let ids: Vec<Bson> = chunk.iter().filter_map(|c| DocId::decode(&c.doc.id)).collect();
        let filter = doc! {"_id": {"$in": ids}, &queue.mark_field: null};
        let mut attempts = Attempts::new(&queue.retry, "checking the marks of streamed documents");
        loop {
            match query(queue, filter.clone()).await {
                Ok(found) => {
                    attempts.succeeded();
                    out.extend(found);
                    break;
                }
                Err(e) => match attempts.failed(e) {
                    Ok(wait) => tokio::time::sleep(wait).await,
                    Err(e) => {
                        // Letting the documents through unchecked could embed one twice; holding
                        // them loses nothing (the stall report names this wait).
                        tracing::error!(
                            "checking the marks of streamed documents: {}; trying again in 10 s",
                            describe(&e)
                        );
                        queue.retry.waits.waiting(
                            "checking the marks of streamed documents",
                            "an error that does not heal by itself",
                            describe(&e),
                        );
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                },
            }
        }
    }
    out
}

async fn query(queue: &WorkQueue, filter: Document) -> Result<Vec<String>, mongodb::error::Error> {
    let mut cursor = queue.coll.find(filter).projection(doc! {"_id": 1}).await?;
    let mut found = Vec::new();
    while cursor.advance().await? {
        // Raw, so that an `_id` holding a string that is not UTF-8 costs nothing here.
        let id = DocId::read_bson(cursor.current());
        if id != Bson::Null {
            found.push(DocId::of(&id).into_string());
        }
    }
    Ok(found)
}
