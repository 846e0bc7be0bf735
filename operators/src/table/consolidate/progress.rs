//! What a consolidate run counts while it works: the current phase (scanning, reading, merging),
//! its rows to do and done, and the input bytes read. The run bumps these counters; whoever shows
//! progress reads them from another thread. It never draws, logs or blocks the run.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// The figures of a run, updated by the run and read by a progress display.
#[derive(Default)]
pub struct Figures {
    /// Rows done in the current phase (files, in the scanning phase).
    pub rows: AtomicU64,
    /// Input bytes read (the reading phase only).
    pub bytes: AtomicU64,
    phase: Mutex<(&'static str, u64)>,
}

impl Figures {
    /// Starts `phase` with `total` rows to do.
    pub fn phase(&self, phase: &'static str, total: u64) {
        *self.phase.lock() = (phase, total);
        self.rows.store(0, Ordering::Relaxed);
    }

    /// The current phase's name (empty before the first) and its rows to do.
    pub fn current(&self) -> (&'static str, u64) {
        *self.phase.lock()
    }
}
