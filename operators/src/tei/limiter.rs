//! How many requests one endpoint may have in flight.
//!
//! This module owns the per-endpoint concurrency limit behind a small type, [`ConcurrencyLimit`],
//! so the fixed limit of today can be swapped for an adaptive one (AIMD or gradient, driven by
//! [`ConcurrencyLimit::on_done`]) without touching dispatch. It never waits: the dispatcher asks
//! with `try_acquire` and waits itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A fixed limit on requests in flight: a few concurrent requests of up to
/// `max_client_batch_size` items keep a TEI GPU's queue full (one running batch plus one
/// prefetched) without the queueing latency of hundreds.
#[derive(Debug)]
pub(crate) struct ConcurrencyLimit {
    limit: usize,
    in_flight: AtomicUsize,
}

impl ConcurrencyLimit {
    pub fn new(limit: usize) -> Self {
        Self { limit: limit.max(1), in_flight: AtomicUsize::new(0) }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Takes a slot if fewer than `min(limit, cap)` are in flight (`cap` lets a recovering
    /// endpoint be probed with one request at a time).
    pub fn try_acquire(&self, cap: usize) -> bool {
        let max = self.limit.min(cap.max(1));
        self.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Gives a slot back, with how its request went: the hook of an adaptive limit.
    pub fn on_done(&self, _latency: Duration, _ok: bool) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
