//! `Commit`: the checkpoint protocol of design.md, run by worker 0. For an epoch `e` that the
//! frontier has passed everywhere, the files holding epochs ≤ `e` are already durable (the
//! Parquet sinks sealed them); the committer then
//! 1. records `committed = e` with those files in the checkpoint,
//! 2. marks the epoch's documents in Mongo,
//! 3. records `marked = e`.
//!
//! Marking runs on the async runtime, one epoch at a time and in epoch order, while worker 0 goes
//! on with its share of the graph; later epochs may be recorded as committed meanwhile (recovery
//! re-marks `(marked, committed]`). It never marks before the commit is durable, and never
//! commits an epoch the frontier has not passed. Its output's frontier is the marked frontier,
//! which every worker of a cluster can probe (the `IdGate` does). A failure stops commits (the
//! failure slot says why); the checkpoint stays valid.

use crate::change_stream::{token_to_json, StreamPositions};
use crate::marker::{Marked, Marker};
use crate::output::{now_ms, Checkpoint, CheckpointStore};
use crate::parquet_sink::{Failure, Sealed};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

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
    /// The checkpoint file.
    pub store: CheckpointStore,
    /// The checkpoint as of the start of the run (after recovery).
    pub checkpoint: Checkpoint,
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
    pub crash_after_commit: Option<u64>,
    /// Commits recorded in this run.
    pub commits: u64,
    /// The change stream's positions per epoch, saved with each commit (continuous mode).
    pub positions: Option<StreamPositions>,
}

/// Extension trait: the committer.
pub trait Commit<'scope> {
    /// Commits and marks epochs as the frontier passes them. The returned stream carries no data:
    /// its frontier is the committed frontier — it passes an epoch only once that epoch is
    /// committed and marked — which every worker of every process can probe.
    fn commit(self, committer: Option<Committer>) -> StreamVec<'scope, u64, ()>;
}

/// An epoch recorded as committed whose documents are not marked yet.
struct Committed {
    epoch: u64,
    embedded: u64,
    rejected: u64,
    kinds: BTreeMap<String, u64>,
    tokens: u64,
    files: u64,
    /// The stream's cluster time (s) recorded with it.
    position: Option<u64>,
}

/// The ids of a committed epoch, to mark.
type Ids = (Vec<String>, Vec<(String, String)>);

/// The marking in flight: one at a time, so `marked` moves in epoch order.
struct Marking {
    committed: Committed,
    started: std::time::Instant,
    done: crossbeam_channel::Receiver<Result<Marked, String>>,
}

impl<'scope> Commit<'scope> for StreamVec<'scope, u64, Sealed> {
    fn commit(self, committer: Option<Committer>) -> StreamVec<'scope, u64, ()> {
        // Every worker builds the operator; only worker 0 receives data and holds the committer.
        let mut committer = committer;
        let mut pending: BTreeMap<u64, Vec<Sealed>> = BTreeMap::new();
        let scope = self.scope();
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_| 0),
            "Commit",
            move |cap, info| {
                let wake = scope.worker().sync_activator_for(info.address.to_vec());
                // Worker 0 holds back the committed frontier with this capability until it has
                // committed and marked; the others have nothing to hold.
                let mut held = committer.is_some().then_some(cap);
                // Marking runs on the async runtime while the worker goes on with the graph.
                let mut to_mark: VecDeque<(Committed, Ids)> = VecDeque::new();
                let mut marking: Option<Marking> = None;
                move |(input, frontier), _output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(&t) = cap.least() else { return };
                        pending.entry(t).or_default().extend(data.flat_map(|d| d.drain(..)));
                    });
                    let Some(c) = committer.as_mut() else { return };
                    if c.failure.lock().is_some() {
                        return;
                    }
                    let step = (|| -> Result<(), String> {
                        if let Some(m) = &marking {
                            match m.done.try_recv() {
                                Ok(result) => {
                                    let m = marking.take().ok_or("no marking")?;
                                    finish_marking(c, m, result?)?;
                                }
                                Err(crossbeam_channel::TryRecvError::Empty) => {}
                                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                                    return Err("the marking task ended without an answer".into())
                                }
                            }
                        }
                        let ready: Vec<u64> = pending.keys().copied().filter(|t| !frontier.less_equal(t)).collect();
                        for t in ready {
                            let sealed = pending.remove(&t).unwrap_or_default();
                            to_mark.push_back(record_commit(c, t, sealed)?);
                        }
                        if marking.is_none() {
                            if let Some((committed, ids)) = to_mark.pop_front() {
                                marking = Some(start_marking(c, committed, ids, wake.clone()));
                            }
                        }
                        // Epochs with no output still carry the stream's position forward (an idle
                        // stream) — once every earlier epoch is marked.
                        if marking.is_none() {
                            let complete = frontier.frontier().first().map_or(u64::MAX, |f| f.saturating_sub(1));
                            commit_position(c, complete)?;
                        }
                        Ok(())
                    })();
                    if let Err(e) = step {
                        *c.failure.lock() = Some(e);
                        return;
                    }
                    // Not yet marked: the marking in flight, what awaits it, what is pending, and
                    // whatever the input may still bring.
                    let unmarked = marking.as_ref().map(|m| m.committed.epoch).into_iter();
                    let unmarked = unmarked
                        .chain(to_mark.front().map(|(m, _)| m.epoch))
                        .chain(pending.keys().next().copied())
                        .chain(frontier.frontier().first().copied())
                        .min();
                    match unmarked {
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

/// Step 1 of the protocol: the epoch's files are durable; records the commit (and where the
/// stream had got to) and returns what is left to mark.
fn record_commit(c: &mut Committer, epoch: u64, sealed: Vec<Sealed>) -> Result<(Committed, Ids), String> {
    let (mut embedded, mut rejected) = (Vec::new(), Vec::new());
    let (mut tokens, mut files) = (0, 0);
    for s in sealed {
        files += s.files.len() as u64;
        c.checkpoint.files.extend(s.files);
        embedded.extend(s.embedded);
        rejected.extend(s.rejected);
        tokens += s.tokens;
    }
    let position = take_position(c, epoch)?;
    c.checkpoint.committed = epoch;
    c.checkpoint.updated_at_ms = now_ms();
    c.store.save(&c.checkpoint).map_err(|e| format!("saving the checkpoint: {e}"))?;
    c.commits += 1;
    if c.crash_after_commit == Some(c.commits) {
        std::process::abort();
    }
    let mut kinds = BTreeMap::new();
    for (_, reason) in &rejected {
        *kinds.entry(reason_kind(reason)).or_insert(0) += 1;
    }
    let committed = Committed {
        epoch,
        embedded: embedded.len() as u64,
        rejected: rejected.len() as u64,
        kinds,
        tokens,
        files,
        position,
    };
    Ok((committed, (embedded, rejected)))
}

/// Step 2: marks the epoch's documents on the runtime, waking the operator when done.
fn start_marking(c: &Committer, committed: Committed, (embedded, rejected): Ids, wake: SyncActivator) -> Marking {
    let (tx, done) = crossbeam_channel::bounded(1);
    let (marker, epoch) = (c.marker.clone(), committed.epoch);
    c.runtime.spawn(async move {
        let result =
            marker.mark(&embedded, &rejected).await.map_err(|e| format!("marking epoch {epoch} in MongoDB: {e}"));
        let _ = tx.send(result);
        let _ = wake.activate();
    });
    Marking { committed, started: std::time::Instant::now(), done }
}

/// Step 3: records the marks; files of marked epochs need no re-marking after a crash.
fn finish_marking(c: &mut Committer, m: Marking, marked: Marked) -> Result<(), String> {
    let k = &m.committed;
    c.checkpoint.marked = k.epoch;
    c.checkpoint.note_marked(k.embedded + k.rejected);
    c.checkpoint.files.retain(|f| f.epoch_hi > k.epoch);
    c.store.save(&c.checkpoint).map_err(|e| format!("saving the checkpoint: {e}"))?;
    let t = &c.totals;
    note_commit(t, k.epoch, k.position);
    t.embedded.fetch_add(k.embedded, Ordering::Relaxed);
    t.rejected.fetch_add(k.rejected, Ordering::Relaxed);
    {
        let mut kinds = t.rejects_by_kind.lock();
        for (kind, n) in &k.kinds {
            *kinds.entry(kind.clone()).or_insert(0) += n;
        }
    }
    t.tokens.fetch_add(k.tokens, Ordering::Relaxed);
    t.files.fetch_add(k.files, Ordering::Relaxed);
    tracing::debug!(
        epoch = k.epoch,
        stream_time_s = t.stream_time_s.load(Ordering::Relaxed),
        embedded = k.embedded,
        rejected = k.rejected,
        marked = marked.embedded,
        marking_ms = m.started.elapsed().as_millis() as u64,
        "epoch committed and marked"
    );
    Ok(())
}

/// Moves the stream's latest position up to `epoch` into the checkpoint (not yet saved); returns
/// its cluster time.
fn take_position(c: &mut Committer, epoch: u64) -> Result<Option<u64>, String> {
    let Some((_, pos)) = c.positions.as_ref().and_then(|p| p.take_upto(epoch)) else { return Ok(None) };
    c.checkpoint.sources.resume_token = Some(token_to_json(&pos.token)?);
    c.checkpoint.sources.cluster_time = pos.cluster_time;
    Ok(Some(pos.cluster_time.map_or(0, |(s, _)| s as u64)))
}

/// Commits the stream position of an epoch ≤ `complete` that had no output: there is nothing
/// to write or mark, so committed and marked move together.
fn commit_position(c: &mut Committer, complete: u64) -> Result<(), String> {
    let Some(positions) = c.positions.as_ref() else { return Ok(()) };
    if complete <= c.checkpoint.committed {
        return Ok(());
    }
    let Some((epoch, pos)) = positions.take_upto(complete) else { return Ok(()) };
    let epoch = epoch.max(c.checkpoint.committed);
    c.checkpoint.sources.resume_token = Some(token_to_json(&pos.token)?);
    c.checkpoint.sources.cluster_time = pos.cluster_time;
    c.checkpoint.committed = epoch;
    c.checkpoint.marked = epoch;
    c.checkpoint.updated_at_ms = now_ms();
    c.store.save(&c.checkpoint).map_err(|e| format!("saving the checkpoint: {e}"))?;
    note_commit(&c.totals, epoch, Some(pos.cluster_time.map_or(0, |(s, _)| s as u64)));
    Ok(())
}

fn note_commit(t: &CommitTotals, epoch: u64, stream_time_s: Option<u64>) {
    t.committed_epoch.store(epoch, Ordering::SeqCst);
    t.committed_at_ms.store(now_ms().max(0) as u64, Ordering::Relaxed);
    if let Some(s) = stream_time_s.filter(|s| *s > 0) {
        t.stream_time_s.store(s, Ordering::Relaxed);
    }
}
