//! Counters of an endpoint pool, for logs, progress and metrics.
//!
//! This module owns the pool-wide counters ([`Counters`], lock-free but for the per-cause map and
//! the latency histogram) and the snapshot the pool hands out ([`PoolStats`]). It never decides
//! anything: the pool records, readers read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::breaker::BreakerState;

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
    /// Inputs refused for good (each with a reason), the invalid vectors' inputs included.
    pub rejected_inputs: u64,
    /// Vectors the servers returned that were refused (NaN or infinite components, a zero or
    /// non-unit norm, another dimension): each one's input is a rejection, never a row.
    pub invalid_vectors: u64,
    /// Tokens of the embedded inputs as the budget counted them before sending.
    pub budget_tokens: u64,
    /// Tokens the servers reported computing (`x-compute-tokens`) for successful calls.
    pub compute_tokens: u64,
    /// What a padded server computes for the successful calls as sent: per request, its inputs
    /// times its longest input (budget tokens). `budget_tokens / padded_tokens` is the share of
    /// a padded GPU's work that is real tokens (TEI pads EmbeddingGemma on every device).
    pub padded_tokens: u64,
    /// The budget's calibration factor (1.0 with a tokenizer).
    pub token_scale: f64,
    /// Latency of successful calls, median, in milliseconds.
    pub latency_p50_ms: u64,
    /// Latency of successful calls, 95th percentile, in milliseconds.
    pub latency_p95_ms: u64,
    /// Per endpoint, in the order of the configured URLs.
    pub endpoints: Vec<EndpointStats>,
    /// Requests waiting for an endpoint slot now (every endpoint full, or out of rotation).
    pub requests_waiting: usize,
}

impl PoolStats {
    /// Real tokens over the tokens a padded server computes for the requests as sent
    /// (`budget_tokens / padded_tokens`): 1.0 is no padding. None before any request.
    pub fn real_share(&self) -> Option<f64> {
        (self.padded_tokens > 0).then(|| self.budget_tokens as f64 / self.padded_tokens as f64)
    }
}

/// One endpoint's share of a [`PoolStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    /// Its base URL, credentials removed.
    pub url: String,
    /// Calls in flight now.
    pub in_flight: usize,
    /// Its concurrency limit now: the latency rule's (1 while it re-measures the unloaded
    /// latency), or the requests in flight when the token floor let more in.
    pub concurrency_limit: usize,
    /// The most the limit may be (what the server's permits allow, or the pinned value).
    pub concurrency_max: usize,
    /// Whether the limit adapts (false: pinned by `--concurrency`).
    pub adaptive: bool,
    /// Budget tokens of the calls in flight now.
    pub outstanding_tokens: u64,
    /// Calls made to it.
    pub requests: u64,
    /// Calls to it that failed (transient or refused client), not counting refusals of inputs.
    pub failures: u64,
    /// Failed calls by cause: the HTTP status (`"429"`, `"503"`) or `connect`, `timeout`, ...
    pub errors_by_cause: BTreeMap<String, u64>,
    /// Inputs it embedded.
    pub embedded_inputs: u64,
    /// Vectors it returned that were refused (their inputs are rejections).
    pub invalid_vectors: u64,
    /// Tokens it embedded (the server's count when it reports one, else the budget's).
    pub tokens: u64,
    /// Tokens it embedded per second over the last [`RATE_WINDOW`].
    pub tokens_per_second: f64,
    /// Latency of its successful calls, from dispatch to answer: median.
    pub latency_p50: Duration,
    /// 95th percentile.
    pub latency_p95: Duration,
    /// 99th percentile.
    pub latency_p99: Duration,
    /// Its circuit breaker now.
    pub breaker: BreakerState,
    /// Times its breaker opened (taken out of rotation) and closed (re-admitted) since start.
    pub breaker_opened: u64,
    /// Times its breaker closed again.
    pub breaker_closed: u64,
    /// Whether dispatch is skipping it now (its breaker is open, or it has not joined yet).
    pub skipped: bool,
    /// Whether it did not answer at start and has not joined yet (see `EndpointPool::connect`).
    pub joining: bool,
}

/// The window of [`EndpointStats::tokens_per_second`].
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Buckets of that window.
const RATE_BUCKETS: usize = 10;

/// One endpoint's latency histogram, errors by cause and token rate.
pub(crate) struct EndpointMetrics {
    latency_us: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    tokens: AtomicU64,
    rate: Mutex<RateWindow>,
}

/// Tokens per bucket of `RATE_WINDOW / RATE_BUCKETS`, the oldest overwritten.
struct RateWindow {
    start: Instant,
    buckets: [(u64, u64); RATE_BUCKETS],
}

impl EndpointMetrics {
    pub fn new() -> Self {
        Self {
            latency_us: Mutex::new(latency_histogram()),
            errors: Mutex::new(BTreeMap::new()),
            tokens: AtomicU64::new(0),
            rate: Mutex::new(RateWindow { start: Instant::now(), buckets: [(u64::MAX, 0); RATE_BUCKETS] }),
        }
    }

    pub fn success(&self, latency: Duration, tokens: u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency_us.lock().saturating_record(us);
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
        let mut rate = self.rate.lock();
        let index = rate.bucket(Instant::now());
        let slot = &mut rate.buckets[(index % RATE_BUCKETS as u64) as usize];
        if slot.0 != index {
            *slot = (index, 0);
        }
        slot.1 += tokens;
    }

    /// Adds this endpoint's latencies (µs) to `into`.
    pub fn add_latencies(&self, into: &mut Histogram<u64>) {
        // Same bounds on both sides: adding cannot fail.
        let _ = into.add(&*self.latency_us.lock());
    }

    pub fn error(&self, cause: &str) {
        *self.errors.lock().entry(cause.to_string()).or_default() += 1;
    }

    /// Fills the metric fields of `stats`.
    pub fn fill(&self, stats: &mut EndpointStats) {
        let latency = self.latency_us.lock();
        let quantile =
            |q: f64| Duration::from_micros(if latency.is_empty() { 0 } else { latency.value_at_quantile(q) });
        (stats.latency_p50, stats.latency_p95, stats.latency_p99) = (quantile(0.5), quantile(0.95), quantile(0.99));
        stats.errors_by_cause = self.errors.lock().clone();
        stats.tokens = self.tokens.load(Ordering::Relaxed);
        let rate = self.rate.lock();
        let current = rate.bucket(Instant::now());
        // The current bucket is partial: the rate is over the full buckets before it.
        let full_buckets = current.min(RATE_BUCKETS as u64 - 1);
        let full: u64 = rate
            .buckets
            .iter()
            .filter(|(index, _)| *index < current && current - index <= full_buckets)
            .map(|(_, tokens)| tokens)
            .sum();
        let span = (RATE_WINDOW / RATE_BUCKETS as u32).as_secs_f64() * full_buckets as f64;
        stats.tokens_per_second = if span > 0.0 { full as f64 / span } else { 0.0 };
    }
}

impl RateWindow {
    fn bucket(&self, now: Instant) -> u64 {
        let width = RATE_WINDOW.as_nanos() / RATE_BUCKETS as u128;
        u64::try_from(now.saturating_duration_since(self.start).as_nanos() / width).unwrap_or(u64::MAX)
    }
}

/// Microseconds from 1 µs to an hour, 3 significant figures.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
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
    pub invalid_vectors: AtomicU64,
    pub budget_tokens: AtomicU64,
    pub compute_tokens: AtomicU64,
    pub padded_tokens: AtomicU64,
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
            invalid_vectors: AtomicU64::new(0),
            budget_tokens: AtomicU64::new(0),
            compute_tokens: AtomicU64::new(0),
            padded_tokens: AtomicU64::new(0),
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
            invalid_vectors: get(&self.invalid_vectors),
            budget_tokens: get(&self.budget_tokens),
            compute_tokens: get(&self.compute_tokens),
            padded_tokens: get(&self.padded_tokens),
            token_scale: 1.0,
            latency_p50_ms: quantile(0.5),
            latency_p95_ms: quantile(0.95),
            endpoints: Vec::new(),
            requests_waiting: 0,
        }
    }
}
