//! Counters of an endpoint pool, for logs, progress and metrics.
//!
//! This module owns the pool-wide counters ([`Counters`], lock-free but for the per-cause map and
//! the latency histogram) and the snapshot the pool hands out ([`PoolStats`]). It never decides
//! anything: the pool records, readers read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// A snapshot of a pool's counters since it connected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Embedding calls made (every attempt, split and bisection step included).
    pub requests: u64,
    /// Calls that returned vectors.
    pub succeeded: u64,
    /// Calls retried after a transient failure.
    pub retries: u64,
    /// Retries by cause: the HTTP status (`"429"`, `"503"`, `"424"`) or `connect`, `timeout`,
    /// `connection`, `body`, `decode`.
    pub retries_by_cause: BTreeMap<String, u64>,
    /// Requests split in halves because the server found them too large.
    pub splits: u64,
    /// Requests split in halves to isolate an input the server refuses.
    pub bisections: u64,
    /// Inputs that got a vector.
    pub embedded_inputs: u64,
    /// Inputs refused for good (each with a reason).
    pub rejected_inputs: u64,
    /// Tokens of the embedded inputs as the budget counted them before sending.
    pub budget_tokens: u64,
    /// Tokens the servers reported computing (`x-compute-tokens`) for successful calls.
    pub compute_tokens: u64,
    /// The budget's calibration factor (1.0 with a tokenizer).
    pub token_scale: f64,
    /// Latency of successful calls, median, in milliseconds.
    pub latency_p50_ms: u64,
    /// Latency of successful calls, 95th percentile, in milliseconds.
    pub latency_p95_ms: u64,
    /// Per endpoint, in the order of the configured URLs.
    pub endpoints: Vec<EndpointStats>,
}

/// One endpoint's share of a [`PoolStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Its base URL, credentials removed.
    pub url: String,
    /// Calls in flight now.
    pub in_flight: usize,
    /// Its concurrency limit now.
    pub concurrency_limit: usize,
    /// Budget tokens of the calls in flight now.
    pub outstanding_tokens: u64,
    /// Calls made to it.
    pub requests: u64,
    /// Calls to it that failed (transient or refused client), not counting refusals of inputs.
    pub failures: u64,
    /// Inputs it embedded.
    pub embedded_inputs: u64,
    /// Whether dispatch is skipping it now after repeated failures.
    pub skipped: bool,
}

/// The pool-wide counters.
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub succeeded: AtomicU64,
    pub retries: AtomicU64,
    pub splits: AtomicU64,
    pub bisections: AtomicU64,
    pub embedded: AtomicU64,
    pub rejected: AtomicU64,
    pub budget_tokens: AtomicU64,
    pub compute_tokens: AtomicU64,
    by_cause: Mutex<BTreeMap<String, u64>>,
    latency_ms: Mutex<Histogram<u64>>,
}

impl Counters {
    pub fn new() -> Self {
        // Constant, valid bounds (1 ms to an hour, 3 significant figures): this cannot fail.
        let histogram = Histogram::new_with_bounds(1, 3_600_000, 3).expect("constant histogram bounds are valid");
        Self {
            requests: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            splits: AtomicU64::new(0),
            bisections: AtomicU64::new(0),
            embedded: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            budget_tokens: AtomicU64::new(0),
            compute_tokens: AtomicU64::new(0),
            by_cause: Mutex::new(BTreeMap::new()),
            latency_ms: Mutex::new(histogram),
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn retry(&self, cause: &str) {
        Self::add(&self.retries, 1);
        *self.by_cause.lock().entry(cause.to_string()).or_default() += 1;
    }

    pub fn latency(&self, took: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX).max(1);
        // Values past the histogram's bound are clamped rather than lost.
        self.latency_ms.lock().saturating_record(ms);
    }

    /// The pool-wide part of a snapshot (endpoints and scale are the pool's to fill in).
    pub fn snapshot(&self) -> PoolStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let latency = self.latency_ms.lock();
        let quantile = |q: f64| if latency.is_empty() { 0 } else { latency.value_at_quantile(q) };
        PoolStats {
            requests: get(&self.requests),
            succeeded: get(&self.succeeded),
            retries: get(&self.retries),
            retries_by_cause: self.by_cause.lock().clone(),
            splits: get(&self.splits),
            bisections: get(&self.bisections),
            embedded_inputs: get(&self.embedded),
            rejected_inputs: get(&self.rejected),
            budget_tokens: get(&self.budget_tokens),
            compute_tokens: get(&self.compute_tokens),
            token_scale: 1.0,
            latency_p50_ms: quantile(0.5),
            latency_p95_ms: quantile(0.95),
            endpoints: Vec::new(),
        }
    }
}
