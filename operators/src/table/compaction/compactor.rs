//! [`Compactor`]: the thread that merges staged files into the output directory (the switch of
//! the parent module), and [`compact_step`], one merge, for tools and tests that drive it by hand.
//! A failure stops the run through its failure slot; the checkpoint stays valid whatever the
//! instant, and the next run's recovery finishes or forgets what was under way.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::deletions::{apply_pending, compact_deletion_log, DeletionIndex};
use super::policy::pick;
use super::stats::{thread_cpu_ns, CompactionStats};
use crate::clock::steady_ms;
use crate::run::failure::Failure;
use crate::table::checkpoint::{remove_compacted_inputs, Ledger, Switch};
use crate::table::output::{key_values, merge_files, sync_dir, FileKind, FileMeta, PartName, RowFilter};

/// How often the compactor looks at the checkpoint when nothing wakes it.
const POLL: Duration = Duration::from_millis(250);

/// What the compactor needs to know.
#[derive(Clone, Debug)]
pub struct CompactionSettings {
    /// The output directory (cold storage).
    pub out: PathBuf,
    /// The staging directory the writers seal into.
    pub staging: PathBuf,
    /// Files are merged once this many bytes are staged, and stop growing past it.
    pub target_file_bytes: u64,
    /// Below target, staged files older than this are merged anyway (continuous mode); `None`
    /// waits for the target or the end of the run.
    pub max_file_age: Option<Duration>,
    /// Rows per row group of the merged files.
    pub row_group_rows: usize,
    /// Recorded deletions leave the output directory's files within this time.
    pub delete_within: Duration,
    /// Test hook: pause this long after writing a merged file and again after recording its
    /// switch, to widen the window a crash test aims at.
    #[cfg(feature = "test-hooks")]
    pub pause: Option<Duration>,
}

enum Order {
    /// Merge everything staged and marked (the tail), then stop.
    FlushAndStop,
    /// Stop after the merge under way.
    Stop,
}

/// The running compactor of a leading process.
pub struct Compactor {
    orders: Sender<Order>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Compactor {
    /// Starts the thread over `ledger`. A failure is also put in `failure`, which stops the graph.
    pub fn start(ledger: Ledger, settings: CompactionSettings, stats: Arc<CompactionStats>, failure: Failure) -> Self {
        let (orders, rx) = crossbeam_channel::bounded(1);
        stats.watch(&ledger);
        let failed = failure.clone();
        let thread = std::thread::Builder::new().name("tweet-embed-compactor".into()).spawn(move || {
            let result = run(&ledger, &settings, &stats, &rx);
            if let Err(e) = &result {
                failed.report(format!("compacting the output: {e:#}"));
            }
            result
        });
        match thread {
            Ok(t) => Compactor { orders, thread: Some(t) },
            Err(e) => {
                failure.report(format!("starting the compactor thread: {e}"));
                Compactor { orders, thread: None }
            }
        }
    }

    /// Stops the thread: with `flush_tail` after merging everything staged (the end of a
    /// backfill: at most one file below target per kind), else after the merge under way.
    pub fn finish(mut self, flush_tail: bool) -> Result<()> {
        let _ = self.orders.send(if flush_tail { Order::FlushAndStop } else { Order::Stop });
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("the compactor thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.orders.send(Order::Stop);
            let _ = t.join();
        }
    }
}

fn run(ledger: &Ledger, s: &CompactionSettings, stats: &CompactionStats, orders: &Receiver<Order>) -> Result<()> {
    let mut deletions = DeletionIndex::default();
    loop {
        let order = match orders.recv_timeout(POLL) {
            Ok(order) => Some(order),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Order::Stop),
        };
        let flush = matches!(order, Some(Order::FlushAndStop));
        let (committed, applied, oldest_staged) =
            ledger.read(|cp| (cp.committed(), cp.deletions_applied(), cp.staged().iter().map(|f| f.epoch_lo).min()));
        // Settled deletions are dropped, and never read back (a restart does not load them).
        deletions.forget_settled(applied, oldest_staged.unwrap_or(committed.saturating_add(1)));
        deletions.refresh(&s.out, committed, applied)?;
        // Catch up, but hear a stop between merges. Every staged row is at least as new as the
        // oldest staged file: when no deletion reaches that far, merges read no id at all.
        let deleted = |id: &str, epoch: u64| deletions.deletes(id, epoch);
        let reaches = oldest_staged.is_some_and(|oldest| deletions.may_delete_from(oldest));
        let drop: Option<RowFilter<'_>> = if reaches { Some(&deleted) } else { None };
        while compact_step(ledger, s, stats, drop, flush)? {
            if !flush && !orders.is_empty() {
                break;
            }
        }
        if deletions.due(s.delete_within) {
            counting_cpu(stats, || apply_pending(ledger, &s.out, s.row_group_rows, &mut deletions, stats))?;
        }
        compact_deletion_log(ledger, &s.out)?;
        stats.set_pending(deletions.pending());
        if order.is_some() {
            return Ok(());
        }
    }
}

/// Runs `work`, adding the thread CPU time it took to `stats`.
fn counting_cpu<T>(stats: &CompactionStats, work: impl FnOnce() -> T) -> T {
    let before = thread_cpu_ns();
    let result = work();
    if let (Some(before), Some(after)) = (before, thread_cpu_ns()) {
        stats.spent_cpu(after.saturating_sub(before));
    }
    result
}

/// Merges the staged files that are due (see [`pick`]) of one kind, rows first, into one output
/// file, through the switch of the parent module; `drop` removes deleted rows on the way (None:
/// no deletion can reach the staged rows).
/// Returns whether it merged anything. With `flush`, files below target are due too.
pub fn compact_step(
    ledger: &Ledger,
    s: &CompactionSettings,
    stats: &CompactionStats,
    drop: Option<RowFilter<'_>>,
    flush: bool,
) -> Result<bool> {
    for kind in [FileKind::Rows, FileKind::Rejects] {
        let (due, seq) = ledger.read(|cp| {
            (
                pick(cp.staged(), kind, cp.marked(), s.target_file_bytes, s.max_file_age, flush, steady_ms()),
                cp.next_file_seq(),
            )
        });
        let Some(inputs) = due else { continue };
        counting_cpu(stats, || merge_into_output(ledger, s, stats, drop, kind, &inputs, seq))?;
        return Ok(true);
    }
    Ok(false)
}

fn merge_into_output(
    ledger: &Ledger,
    s: &CompactionSettings,
    stats: &CompactionStats,
    drop: Option<RowFilter<'_>>,
    kind: FileKind,
    inputs: &[FileMeta],
    seq: u64,
) -> Result<()> {
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else { return Ok(()) };
    let dir = s.out.join(kind.subdir());
    let name = |hi: u64| PartName { epoch_lo: first.epoch_lo, epoch_hi: hi, worker: 0, seq };
    // 1. The merged file, durable under a name readers skip and recovery removes.
    let planned = name(last.epoch_hi).partial_name();
    let paths: Vec<PathBuf> = inputs.iter().map(|f| s.staging.join(&f.path)).collect();
    let kv = key_values(&paths[0])?;
    let merged =
        merge_files(&paths, kind, &dir.join(&planned), Some(s.target_file_bytes), s.row_group_rows, &kv, drop)?;
    let used = &inputs[..merged.inputs_used.max(1)];
    let hi = used.iter().map(|f| f.epoch_hi).max().unwrap_or(last.epoch_hi);
    let final_name = name(hi);
    let partial = final_name.partial_name();
    if partial != planned {
        fs::rename(dir.join(&planned), dir.join(&partial)).with_context(|| format!("renaming {planned}"))?;
    }
    let dest = dir.join(final_name.file_name());
    if dest.exists() {
        return Err(anyhow!("{} exists already: is another run writing into this --out?", dest.display()));
    }
    pause(s);
    // 2. The switch: from this save on, the merged file is listed and its inputs are not.
    let output = FileMeta {
        path: Path::new(kind.subdir()).join(final_name.file_name()),
        kind,
        epoch_lo: first.epoch_lo,
        epoch_hi: hi,
        rows: merged.rows,
        bytes: merged.bytes,
        worker: 0,
        staged_at_ms: steady_ms(),
    };
    let inputs_listed: Vec<PathBuf> = used.iter().map(|f| f.path.clone()).collect();
    let switch = Switch { output, partial: partial.clone(), inputs: inputs_listed.clone() };
    ledger.begin_switch(switch, seq)?;
    pause(s);
    // 3. Into place.
    fs::rename(dir.join(&partial), &dest).with_context(|| format!("renaming {partial} into place"))?;
    sync_dir(&dir)?;
    // 4. The inputs go, then the switch is forgotten.
    remove_compacted_inputs(&s.staging, &inputs_listed)?;
    // Counted before the switch is forgotten: the staged gauges count a switch's inputs, so a
    // reader never sees them gone and the compaction not yet counted.
    stats.compacted(used.len(), merged.rows, merged.bytes, merged.dropped);
    ledger.end_switch()?;
    tracing::info!(
        file = %dest.display(),
        inputs = used.len(),
        rows = merged.rows,
        bytes = merged.bytes,
        dropped = merged.dropped,
        "compacted staged files into the output"
    );
    Ok(())
}

#[cfg(feature = "test-hooks")]
fn pause(s: &CompactionSettings) {
    if let Some(p) = s.pause {
        std::thread::sleep(p);
    }
}

#[cfg(not(feature = "test-hooks"))]
fn pause(_: &CompactionSettings) {}
