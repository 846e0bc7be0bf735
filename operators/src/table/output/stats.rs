//! Progress counters of the output: what was accepted, what is durable. Writers on worker
//! threads add to them; progress bars and `/metrics` read them from elsewhere, so they are
//! atomics behind an `Arc` that any number of writers may share. They never decide anything.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters shared by the writers of a run.
#[derive(Debug, Default)]
pub struct OutputStats {
    rows_pushed: AtomicU64,
    rejects_pushed: AtomicU64,
    rows_sealed: AtomicU64,
    rejects_sealed: AtomicU64,
    bytes_sealed: AtomicU64,
    files_sealed: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Embedded rows accepted by writers (buffered or written).
    pub rows_pushed: u64,
    /// Rejections accepted by writers.
    pub rejects_pushed: u64,
    /// Embedded rows in files moved to the output directory.
    pub rows_sealed: u64,
    /// Rejections in files moved to the output directory.
    pub rejects_sealed: u64,
    /// Bytes of files moved to the output directory.
    pub bytes_sealed: u64,
    /// Files moved to the output directory.
    pub files_sealed: u64,
}

impl OutputStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            rows_pushed: get(&self.rows_pushed),
            rejects_pushed: get(&self.rejects_pushed),
            rows_sealed: get(&self.rows_sealed),
            rejects_sealed: get(&self.rejects_sealed),
            bytes_sealed: get(&self.bytes_sealed),
            files_sealed: get(&self.files_sealed),
        }
    }

    pub(crate) fn pushed(&self, reject: bool) {
        let c = if reject { &self.rejects_pushed } else { &self.rows_pushed };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sealed(&self, reject: bool, rows: u64, bytes: u64) {
        let c = if reject { &self.rejects_sealed } else { &self.rows_sealed };
        c.fetch_add(rows, Ordering::Relaxed);
        self.bytes_sealed.fetch_add(bytes, Ordering::Relaxed);
        self.files_sealed.fetch_add(1, Ordering::Relaxed);
    }
}
