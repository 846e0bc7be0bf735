//! `Commit`: the commit order of the checkpoint protocol (see the parent module), run by worker 0.
//! For an epoch `e` that the frontier has passed everywhere, the files holding epochs ≤ `e` are
//! already durable in the staging directory (the Parquet writers sealed them); the committer then
//! 1. records `committed = e` with those files in the checkpoint (as staged, and as to re-mark),
//! 2. marks the epoch's documents in Mongo,
//! 3. records `marked = e`.
//!
//! It never marks before the commit is durable, and never commits an epoch the frontier has not
//! passed. Its output's frontier is the committed frontier, which every worker of a cluster can
//! probe (the `IdGate` does). A failure stops commits (the failure slot says why); the checkpoint
//! stays valid.

use super::ledger::Ledger;
use super::state::Checkpoint;
use crate::clock::steady_ms;
use crate::dataflow::write_parquet::Sealed;
use crate::mongo::change_stream::{token_to_json, StreamPositions};
use crate::mongo::marker::Marker;
use crate::run::failure::Failure;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::StreamVec;

/// Running totals of committed work, for progress and the summary.
#[derive(Debug, Default)]
pub struct CommitTotals {
    /// Last epoch committed and marked.
    pub committed_epoch: AtomicU64,
    /// When it was committed, ms since the Unix epoch.
    pub committed_at_ms: AtomicU64,
    /// Cluster time (seconds) of the change-stream position committed last; 0 without a stream.
    pub stream_time_s: AtomicU64,
    /// Documents written and marked embedded.
    pub embedded: AtomicU64,
    /// Documents written and marked rejected.
    pub rejected: AtomicU64,
    /// Tokens of the embedded documents.
    pub tokens: AtomicU64,
    /// Files committed.
    pub files: AtomicU64,
    /// Deletions from the change stream recorded in `_deletions/`.
    pub deletions: AtomicU64,
    /// Rows of documents inserted and deleted within one epoch, never committed.
    pub cancelled: AtomicU64,
    /// Of the rejected, documents whose `_id` does not fit the output's id column (strays).
    pub strays: AtomicU64,
    /// Rejections committed per kind of reason ([`reason_kind`]).
    pub rejects_by_kind: parking_lot::Mutex<BTreeMap<String, u64>>,
}

impl CommitTotals {
    /// Rejections committed per kind of reason.
    pub fn rejects_by_reason(&self) -> BTreeMap<String, u64> {
        self.rejects_by_kind.lock().clone()
    }
}

/// The kind of a rejection reason, for a metric label of bounded cardinality: the reason up to
/// its first `:` or `(` (details such as a server's message or a BSON type are dropped).
pub fn reason_kind(reason: &str) -> String {
    let cut = reason.find([':', '(']).unwrap_or(reason.len());
    let kind: String = reason[..cut].trim().chars().take(60).collect();
    if kind.is_empty() {
        "other".into()
    } else {
        kind
    }
}

/// Everything the committer needs.
pub struct Committer {
    /// The checkpoint, shared with the compactor.
    pub ledger: Ledger,
    /// Marks documents.
    pub marker: Marker,
    /// Runs the marker's async calls.
    pub runtime: tokio::runtime::Handle,
    /// Totals.
    pub totals: Arc<CommitTotals>,
    /// Failure slot.
    pub failure: Failure,
    /// Test hook: abort the process right after the n-th commit is recorded, before marking
    /// (`TWEET_EMBED_CRASH_AFTER_COMMIT`), to prove recovery re-marks committed epochs.
    #[cfg(feature = "test-hooks")]
    pub crash_after_commit: Option<u64>,
    /// Commits recorded in this run.
    pub commits: u64,
    /// The change stream's positions per epoch, saved with each commit (continuous mode).
    pub positions: Option<StreamPositions>,
    /// Where documents deleted before their marking are recorded as deletions.
    pub vanished: super::VanishedLog,
    /// Stops the run before an epoch rejected wholesale by a likely settings mistake is committed.
    pub guard: super::RejectionGuard,
}

/// Extension trait: the committer.
pub trait Commit<'scope> {
    /// Commits and marks epochs as the frontier passes them. The returned stream carries no data:
    /// its frontier is the committed frontier — it passes an epoch only once that epoch is
    /// committed and marked — which every worker of every process can probe.
    fn commit(self, committer: Option<Committer>) -> StreamVec<'scope, u64, ()>;
}

impl<'scope> Commit<'scope> for StreamVec<'scope, u64, Sealed> {
    fn commit(self, committer: Option<Committer>) -> StreamVec<'scope, u64, ()> {
        // Every worker builds the operator; only worker 0 receives data and holds the committer.
        let mut committer = committer;
        let mut pending: BTreeMap<u64, Vec<Sealed>> = BTreeMap::new();
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_| 0),
            "Commit",
            move |cap, _info| {
                // Worker 0 holds back the committed frontier with this capability until it has
                // committed and marked; the others have nothing to hold.
                let mut held = committer.is_some().then_some(cap);
                move |(input, frontier), _output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(&t) = cap.least() else { return };
                        pending.entry(t).or_default().extend(data.flat_map(|d| d.drain(..)));
                    });
                    let Some(c) = committer.as_mut() else { return };
                    if c.failure.is_set() {
                        return;
                    }
                    let ready: Vec<u64> = pending.keys().copied().filter(|t| !frontier.less_equal(t)).collect();
                    for t in ready {
                        let sealed = pending.remove(&t).unwrap_or_default();
                        if let Err(e) = commit_epoch(c, t, sealed) {
                            c.failure.report(e);
                            return;
                        }
                    }
                    // Epochs with no output still carry the stream's position forward (an idle stream).
                    let complete = frontier.frontier().first().map_or(u64::MAX, |f| f.saturating_sub(1));
                    if let Err(e) = commit_position(c, complete) {
                        c.failure.report(e);
                        return;
                    }
                    // Not yet committed: what is pending, and whatever the input may still bring.
                    let uncommitted =
                        pending.keys().next().copied().into_iter().chain(frontier.frontier().first().copied()).min();
                    match uncommitted {
                        Some(t) => {
                            if let Some(h) = held.as_mut().filter(|h| *h.time() < t) {
                                h.downgrade(&t);
                            }
                        }
                        None => held = None,
                    }
                }
            },
        )
    }
}

fn commit_epoch(c: &mut Committer, epoch: u64, sealed: Vec<Sealed>) -> Result<(), String> {
    let mut embedded = Vec::new();
    let mut rejected = Vec::new();
    let mut tokens = 0;
    let mut staged = Vec::new();
    let (mut deletions, mut cancelled, mut strays) = (0, 0, 0);
    for s in sealed {
        deletions += s.deletions;
        cancelled += s.cancelled;
        strays += s.strays;
        staged.extend(s.files);
        embedded.extend(s.embedded);
        rejected.extend(s.rejected);
        tokens += s.tokens;
    }
    let files = staged.len() as u64;
    // 0. Not an epoch a settings mistake rejected wholesale (nothing of it is committed if so).
    if let Err(m) =
        c.guard.judge(epoch, embedded.len(), &rejected, strays as usize, c.totals.embedded.load(Ordering::Relaxed))
    {
        let fields = match (&m.example, m.text_field_suspect) {
            (Some(id), true) => c.runtime.block_on(string_fields(&c.marker.coll, id)),
            _ => None,
        };
        return Err(match fields {
            Some(f) if !f.is_empty() => format!("{}. One of them has the string fields: {}", m.line, f.join(", ")),
            _ => m.line,
        });
    }
    // 1. The files are durable in staging: record the commit, and where the stream had got to.
    let position = stream_position(c, epoch)?;
    c.ledger
        .commit(epoch, staged, deletions, position.as_ref().map(|(token, time)| (token.as_str(), *time)))
        .map_err(|e| format!("saving the checkpoint: {e}"))?;
    c.commits += 1;
    #[cfg(feature = "test-hooks")]
    if c.crash_after_commit == Some(c.commits) {
        std::process::abort();
    }
    // 2. and 3. Mark the epoch's documents, then record the marks.
    let (marked, vanished) =
        super::mark_epoch(&c.ledger, &c.marker, &c.runtime, &c.vanished, epoch, &embedded, &rejected)?;
    let t = &c.totals;
    note_commit(t, epoch, position.map(|(_, time)| time.map_or(0, |(s, _)| s as u64)));
    t.embedded.fetch_add(embedded.len() as u64, Ordering::Relaxed);
    t.rejected.fetch_add(rejected.len() as u64, Ordering::Relaxed);
    t.strays.fetch_add(strays, Ordering::Relaxed);
    {
        let mut kinds = t.rejects_by_kind.lock();
        for (_, reason) in &rejected {
            *kinds.entry(reason_kind(reason)).or_insert(0) += 1;
        }
    }
    t.tokens.fetch_add(tokens, Ordering::Relaxed);
    t.files.fetch_add(files, Ordering::Relaxed);
    t.deletions.fetch_add(deletions + vanished, Ordering::Relaxed);
    t.cancelled.fetch_add(cancelled, Ordering::Relaxed);
    tracing::debug!(
        epoch,
        stream_time_s = t.stream_time_s.load(Ordering::Relaxed),
        embedded = embedded.len(),
        rejected = rejected.len(),
        marked = marked.embedded,
        "epoch committed and marked"
    );
    Ok(())
}

/// The top-level fields holding strings of the document with the engine's id `id` (at most 12),
/// to show what `--text-field` could be; `None` if it cannot be read.
async fn string_fields(coll: &mongodb::Collection<mongodb::bson::Document>, id: &str) -> Option<Vec<String>> {
    let key = crate::mongo::document_id::DocId::decode(id)?;
    let raw = coll.clone_with_type::<mongodb::bson::RawDocumentBuf>();
    let doc = raw.find_one(mongodb::bson::doc! {"_id": key}).await.ok()??;
    let fields = doc
        .iter_elements()
        .flatten()
        .filter(|e| e.element_type() == mongodb::bson::spec::ElementType::String)
        .map(|e| e.key().to_string())
        .take(12)
        .collect();
    Some(fields)
}

/// The stream's latest position recorded for an epoch ≤ `epoch` (forgetting those up to it):
/// the resume token as JSON and its cluster time.
type Position = (String, Option<(u32, u32)>);

fn stream_position(c: &Committer, epoch: u64) -> Result<Option<Position>, String> {
    let Some((_, pos)) = c.positions.as_ref().and_then(|p| p.take_upto(epoch)) else { return Ok(None) };
    Ok(Some((token_to_json(&pos.token)?, pos.cluster_time)))
}

/// Commits the stream position of an epoch ≤ `complete` that had no output: there is nothing
/// to write or mark, so committed and marked move together.
fn commit_position(c: &mut Committer, complete: u64) -> Result<(), String> {
    let Some(positions) = c.positions.as_ref() else { return Ok(()) };
    let committed = c.ledger.read(Checkpoint::committed);
    if complete <= committed {
        return Ok(());
    }
    let Some((epoch, pos)) = positions.take_upto(complete) else { return Ok(()) };
    let epoch = epoch.max(committed);
    let token = token_to_json(&pos.token)?;
    c.ledger.commit_position(epoch, token, pos.cluster_time).map_err(|e| format!("saving the checkpoint: {e}"))?;
    note_commit(&c.totals, epoch, Some(pos.cluster_time.map_or(0, |(s, _)| s as u64)));
    Ok(())
}

fn note_commit(t: &CommitTotals, epoch: u64, stream_time_s: Option<u64>) {
    t.committed_epoch.store(epoch, Ordering::SeqCst);
    t.committed_at_ms.store(steady_ms().max(0) as u64, Ordering::Relaxed);
    if let Some(s) = stream_time_s.filter(|s| *s > 0) {
        t.stream_time_s.store(s, Ordering::Relaxed);
    }
}
