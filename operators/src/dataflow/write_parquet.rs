//! `WriteParquet`: writes each worker's rows and rejections to Parquet as they arrive, each epoch
//! into its own files on hot storage (the writer keeps one lane per open epoch, so a file never
//! mixes epochs). When the frontier passes an epoch, its files are finished, fsynced and moved
//! into the output directory, and a [`Sealed`] record tells the committer which files and ids the
//! epoch holds. Memory is the writer's staging per open epoch, not the epoch's rows.
//!
//! Deletions from the change stream (broadcast, so every worker sees every one) join at the
//! seal: an epoch's rows of documents deleted in that same epoch are cancelled from its files
//! before they are committed, and worker 0 records the epoch's deletions in `_deletions/` of
//! the output directory, where readers can anti-join at once and compaction applies them.
//!
//! A row whose `_id` does not fit the dataset's id column (a stray, see
//! `crate::table::output::id_type`) is written and marked as a rejection with the reason instead.
//!
//! A write failure (disk full, unwritable directory) stops the epoch where it is: its capability
//! is kept, so nothing after it can be committed, and the failure is reported for the run to
//! exit with it.

use crate::dataflow::record::{Deleted, Rejection, Written};
use crate::run::failure::Failure;
use crate::table::output::{Deletion, EpochWriter, FileMeta};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// A worker's durable output for one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    /// The epoch.
    pub epoch: u64,
    /// Files now durable in the output directory.
    pub files: Vec<FileMeta>,
    /// Ids written as rows.
    pub embedded: Vec<String>,
    /// Ids written as rejections, with reasons.
    pub rejected: Vec<(String, String)>,
    /// Tokens of the rows.
    pub tokens: u64,
    /// Deletions recorded in `_deletions/` for this epoch (worker 0 only).
    pub deletions: u64,
    /// Rows of documents inserted and deleted within this epoch, cancelled before the commit.
    pub cancelled: u64,
    /// Of `rejected`, the documents embedded whose `_id` does not fit the id column (strays).
    pub strays: u64,
}

/// Extension trait: the Parquet writer.
pub trait WriteParquet<'scope> {
    /// Writes epochs as both frontiers complete them, applying `deletions` (every worker must
    /// see every deletion); `records` on the one worker that records them. Reports write
    /// failures in `failure`.
    fn write_parquet(
        self,
        deletions: StreamVec<'scope, u64, Deleted>,
        writer: EpochWriter,
        records: bool,
        failure: Failure,
    ) -> StreamVec<'scope, u64, Sealed>;
}

impl<'scope> WriteParquet<'scope> for StreamVec<'scope, u64, Written> {
    fn write_parquet(
        self,
        deletions: StreamVec<'scope, u64, Deleted>,
        mut writer: EpochWriter,
        records: bool,
        failure: Failure,
    ) -> StreamVec<'scope, u64, Sealed> {
        self.binary_frontier(deletions, Pipeline, Pipeline, "WriteParquet", move |_cap, _info| {
            // Per open epoch: its capability and what the committer will need to mark.
            let mut open: HashMap<u64, (Capability<u64>, Sealed)> = HashMap::new();
            // Per epoch: the deletions seen.
            let mut deleted: HashMap<u64, Vec<Deleted>> = HashMap::new();
            let mut failed = false;
            move |(input, frontier), (deletes, deletes_frontier), output| {
                deletes.for_each_stamp(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    let t = *c.time();
                    deleted.entry(t).or_default().extend(data.flat_map(|d| d.drain(..)));
                    // An epoch with only deletions still needs a seal (worker 0 records them).
                    open.entry(t).or_insert_with(|| (c, Sealed::empty(t)));
                });
                input.for_each_stamp(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    let t = *c.time();
                    let entry = open.entry(t).or_insert_with(|| (c, Sealed::empty(t)));
                    for record in data.flat_map(|d| d.drain(..)) {
                        if failed {
                            continue;
                        }
                        if let Err(e) = push(&mut writer, &mut entry.1, record) {
                            failure.report(e);
                            failed = true;
                        }
                    }
                });
                if failed {
                    // Keep every capability: nothing from here on may be committed.
                    return;
                }
                let passed = |t: &u64| !frontier.less_equal(t) && !deletes_frontier.less_equal(t);
                let mut ready: Vec<u64> = open.keys().copied().filter(passed).collect();
                ready.sort_unstable();
                for t in ready {
                    let Some((cap, mut sealed)) = open.remove(&t) else { continue };
                    let gone = deleted.remove(&t).unwrap_or_default();
                    match seal(&mut writer, &mut sealed, t, &gone, records) {
                        Ok(()) => output.session(&cap).give(sealed),
                        Err(e) => {
                            failure.report(e.to_string());
                            failed = true;
                            open.insert(t, (cap, sealed));
                            return;
                        }
                    }
                }
            }
        })
    }
}

impl Sealed {
    fn empty(epoch: u64) -> Sealed {
        Sealed {
            epoch,
            files: Vec::new(),
            embedded: Vec::new(),
            rejected: Vec::new(),
            tokens: 0,
            deletions: 0,
            cancelled: 0,
            strays: 0,
        }
    }
}

/// Seals epoch `t`: its files into staging, minus the documents `gone` deletes in `t` itself,
/// and (when `records`) its deletions into `_deletions/`.
fn seal(writer: &mut EpochWriter, sealed: &mut Sealed, t: u64, gone: &[Deleted], records: bool) -> Result<(), String> {
    let ids: HashSet<String> = gone.iter().map(|d| d.id.clone()).collect();
    let (files, cancelled) = writer.seal_cancelling(t, &ids).map_err(|e| e.to_string())?;
    sealed.files = files;
    if gone.is_empty() {
        return Ok(());
    }
    sealed.cancelled = cancelled;
    sealed.embedded.retain(|id| !ids.contains(id));
    sealed.rejected.retain(|(id, _)| !ids.contains(id));
    if records {
        let recorded: Vec<Deletion> = gone
            .iter()
            .filter(|d| d.recorded)
            .map(|d| Deletion { id: d.id.clone(), epoch: t, cluster_time_ms: d.cluster_time_ms })
            .collect();
        sealed.deletions = recorded.len() as u64;
        // Not in `files`: the checkpoint lists staged files; deletion files are judged by name.
        writer.seal_deletions(t, &recorded).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn push(writer: &mut EpochWriter, sealed: &mut Sealed, record: Written) -> Result<(), String> {
    match record {
        Written::Row(row) => {
            if let Err(reason) = writer.id_type().value(&row.doc.id) {
                // A stray: its vector has no row to go to; its document is a rejection.
                sealed.strays += 1;
                return push(writer, sealed, Written::Reject(Rejection { doc: row.doc, reason }));
            }
            writer.push_row(sealed.epoch, &row).map_err(|e| e.to_string())?;
            sealed.tokens += row.tokens as u64;
            sealed.embedded.push(row.doc.id);
        }
        Written::Reject(rej) => {
            writer.push_reject(sealed.epoch, &rej).map_err(|e| e.to_string())?;
            sealed.rejected.push((rej.doc.id, rej.reason));
        }
    }
    Ok(())
}
