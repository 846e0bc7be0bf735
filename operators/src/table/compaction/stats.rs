//! Counters and gauges of compaction and deletions, for progress, `status` and `/metrics`. The
//! compactor adds to them; readers take a [`CompactionSnapshot`]. They never decide anything.
//! The staged-files gauges are read from the checkpoint when a snapshot is taken, so they are
//! never older than the counters beside them (a commit that stages a file and the documents it
//! counts are seen together).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use serde::Serialize;

use crate::table::checkpoint::Ledger;

/// Shared by the compactor and whatever displays it.
#[derive(Debug, Default)]
pub struct CompactionStats {
    compactions: AtomicU64,
    files_merged: AtomicU64,
    bytes_written: AtomicU64,
    rows_written: AtomicU64,
    rewrites: AtomicU64,
    files_unread: AtomicU64,
    deleted_rows: AtomicU64,
    deletions_applied: AtomicU64,
    deletions_pending: AtomicU64,
    /// The checkpoint whose staged list the gauges show; unset where no compactor runs (a
    /// cluster's followers), where they read 0.
    ledger: OnceLock<Ledger>,
    cpu_ns: AtomicU64,
}

/// The counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompactionSnapshot {
    /// Compacted files written to the output directory.
    pub compactions: u64,
    /// Staged files merged into them.
    pub files_merged: u64,
    /// Bytes written by compaction and deletion rewrites.
    pub bytes_written: u64,
    /// Rows written by compaction and deletion rewrites.
    pub rows_written: u64,
    /// Output files rewritten to drop deleted rows.
    pub rewrites: u64,
    /// Output files a deletion pass left unread: their name's epochs or their row groups' `id`
    /// statistics showed no pending deletion could match a row.
    pub files_unread: u64,
    /// Rows dropped because a recorded deletion removes them.
    pub deleted_rows: u64,
    /// Recorded deletions applied to every file of the output directory.
    pub deletions_applied: u64,
    /// Recorded deletions not yet applied to the output directory's files.
    pub deletions_pending: u64,
    /// Committed files waiting in the staging directory, with the inputs of a switch under way.
    pub staged_files: u64,
    /// Their bytes (a switch's inputs counted as the size of the file they merged into).
    pub staged_bytes: u64,
    /// Thread CPU time the compactor spent merging and rewriting, in ns (0 where the platform
    /// does not tell).
    pub cpu_ns: u64,
}

impl CompactionStats {
    /// The counters now.
    pub fn snapshot(&self) -> CompactionSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // The checkpoint before the counters: the compactor counts a compaction before it
        // forgets the switch, so a snapshot that sees nothing staged sees every compaction that
        // emptied the staging directory.
        let (staged_files, staged_bytes) =
            self.ledger.get().map_or((0, 0), |ledger| ledger.read(|cp| cp.staged_size()));
        CompactionSnapshot {
            compactions: get(&self.compactions),
            files_merged: get(&self.files_merged),
            bytes_written: get(&self.bytes_written),
            rows_written: get(&self.rows_written),
            rewrites: get(&self.rewrites),
            files_unread: get(&self.files_unread),
            deleted_rows: get(&self.deleted_rows),
            deletions_applied: get(&self.deletions_applied),
            deletions_pending: get(&self.deletions_pending),
            staged_files,
            staged_bytes,
            cpu_ns: get(&self.cpu_ns),
        }
    }

    pub(crate) fn compacted(&self, inputs: usize, rows: u64, bytes: u64, dropped: u64) {
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.files_merged.fetch_add(inputs as u64, Ordering::Relaxed);
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.deleted_rows.fetch_add(dropped, Ordering::Relaxed);
    }

    pub(crate) fn rewrote(&self, rows: u64, bytes: u64, dropped: u64) {
        self.rewrites.fetch_add(1, Ordering::Relaxed);
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.deleted_rows.fetch_add(dropped, Ordering::Relaxed);
    }

    pub(crate) fn skipped_unread(&self) {
        self.files_unread.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn applied(&self, deletions: u64) {
        self.deletions_applied.fetch_add(deletions, Ordering::Relaxed);
    }

    pub(crate) fn spent_cpu(&self, ns: u64) {
        self.cpu_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn set_pending(&self, pending: u64) {
        self.deletions_pending.store(pending, Ordering::Relaxed);
    }

    /// Shows `ledger`'s staged files in the gauges from now on (the first call wins).
    pub(crate) fn watch(&self, ledger: &Ledger) {
        let _ = self.ledger.set(ledger.clone());
    }
}

/// CPU time of the calling thread in ns, from `/proc/thread-self/schedstat` (Linux); `None`
/// elsewhere.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
