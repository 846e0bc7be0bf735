//! One simulated GPU: TEI's router queue (`core/src/queue.rs`) and a service-time model of the
//! backend, and nothing about HTTP.
//!
//! Inputs of every request go into one FIFO. A single batcher task cuts a server batch from the
//! head, up to `max_batch_tokens` (the plain token sum, as TEI's unpadded flash CUDA backends
//! count it) and `max_batch_requests` inputs if set, always at least one input; then it "runs"
//! the batch for `base + tokens / tokens_per_second` and completes every input in it. One batch
//! runs at a time; there is no timer waiting for a batch to fill and no length sorting.
//! Inputs whose request went away (client gone, connection closed) are skipped when a batch is
//! cut, as TEI does.
//!
//! Time is scheduled by deadlines: a batch starts at the later of the previous batch's end and
//! the arrival of its first input, and the task sleeps until the batch's computed end. Waking
//! late (timer slack) therefore never delays the next batch, so measured capacity converges to
//! the configured one. In instant mode nothing queues or sleeps: a request's inputs are counted
//! as batches inline and complete at once.
//!
//! It must never block a request on anything but its own batches, and never hold its lock
//! across an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::metrics::Metrics;

/// The service-time model and batching limits of one GPU.
#[derive(Debug, Clone)]
pub(crate) struct GpuModel {
    pub base: Duration,
    pub tokens_per_second: f64,
    pub instant: bool,
    pub max_batch_tokens: usize,
    pub max_batch_requests: Option<usize>,
}

impl GpuModel {
    /// Modelled time to run a batch of `tokens` tokens.
    pub fn service_time(&self, tokens: usize) -> Duration {
        if self.instant {
            return Duration::ZERO;
        }
        self.base + Duration::from_secs_f64(tokens as f64 / self.tokens_per_second)
    }
}

/// Counters of one GPU since start, for benchmarks and tests. `busy` is the modelled service time
/// of the completed batches, so `tokens / busy` is the configured capacity at the batch fill
/// actually reached, and `busy / wall time` the utilization.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuStats {
    /// Server batches completed.
    pub batches: u64,
    /// Inputs completed.
    pub inputs: u64,
    /// Tokens completed (after truncation).
    pub tokens: u64,
    /// Sum of the modelled service times of the completed batches.
    pub busy: Duration,
    /// Inputs waiting in the queue now (not counting the running batch).
    pub queue_len: usize,
    /// Largest token sum of any batch so far.
    pub max_batch_tokens_seen: usize,
    /// Largest input count of any batch so far.
    pub max_batch_size_seen: usize,
    /// When the last batch's inputs were completed (wall clock, at or just after its modelled
    /// end; None before the first batch). Tokens completed between two snapshots over the time
    /// between their `last_batch_end`s is the GPU's measured throughput.
    pub last_batch_end: Option<std::time::Instant>,
}

/// What a request's inputs spent, summed over its inputs (TEI's headers report per-input means).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timing {
    pub queue: Duration,
    pub inference: Duration,
}

/// The request's inputs were dropped without completing (the GPU shut down).
#[derive(Debug)]
pub(crate) struct Cancelled;

/// The queue and its batcher task. Dropping it stops the task.
pub(crate) struct GpuQueue {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

struct Shared {
    model: GpuModel,
    queue: Mutex<VecDeque<Entry>>,
    wake: Notify,
    stats: Mutex<GpuStats>,
    /// Modelled end of the batch in flight, for health checks that queue behind it.
    running_end: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

struct Entry {
    tokens: usize,
    enqueued: Instant,
    request: Arc<Pending>,
}

/// One request's completion state, shared by its inputs' entries.
struct Pending {
    remaining: AtomicUsize,
    queue_ns: AtomicU64,
    inference_ns: AtomicU64,
    done: Mutex<Option<oneshot::Sender<Timing>>>,
}

impl Pending {
    fn is_cancelled(&self) -> bool {
        self.done.lock().as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn complete_one(&self, queue: Duration, inference: Duration) {
        self.queue_ns.fetch_add(queue.as_nanos() as u64, Ordering::Relaxed);
        self.inference_ns.fetch_add(inference.as_nanos() as u64, Ordering::Relaxed);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let timing = Timing {
                queue: Duration::from_nanos(self.queue_ns.load(Ordering::Relaxed)),
                inference: Duration::from_nanos(self.inference_ns.load(Ordering::Relaxed)),
            };
            if let Some(tx) = self.done.lock().take() {
                // The receiver may be gone (client left); nothing to tell then.
                let _ = tx.send(timing);
            }
        }
    }
}

impl GpuQueue {
    /// Starts the batcher task (none in instant mode). Must run inside a tokio runtime.
    pub fn start(model: GpuModel, metrics: Arc<Metrics>) -> Self {
        let shared = Arc::new(Shared {
            model,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            stats: Mutex::new(GpuStats::default()),
            running_end: Mutex::new(None),
            metrics,
        });
        let task = (!shared.model.instant).then(|| tokio::spawn(batcher(shared.clone())));
        Self { shared, task }
    }

    /// Runs a request's inputs (their token counts) through the GPU; resolves when all are done.
    pub async fn run(&self, tokens: &[usize]) -> Result<Timing, Cancelled> {
        if tokens.is_empty() {
            return Ok(Timing::default());
        }
        if self.shared.model.instant {
            self.run_instant(tokens);
            return Ok(Timing::default());
        }
        let (tx, rx) = oneshot::channel();
        let request = Arc::new(Pending {
            remaining: AtomicUsize::new(tokens.len()),
            queue_ns: AtomicU64::new(0),
            inference_ns: AtomicU64::new(0),
            done: Mutex::new(Some(tx)),
        });
        let enqueued = Instant::now();
        let len = {
            let mut queue = self.shared.queue.lock();
            queue.extend(tokens.iter().map(|&tokens| Entry { tokens, enqueued, request: request.clone() }));
            queue.len()
        };
        self.shared.metrics.queue_size.set(len as i64);
        self.shared.wake.notify_one();
        rx.await.map_err(|_| Cancelled)
    }

    /// Resolves when the batch in flight now (if any) has run.
    pub async fn wait_running(&self) {
        let end = *self.shared.running_end.lock();
        if let Some(end) = end {
            tokio::time::sleep_until(end).await;
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> GpuStats {
        let mut stats = self.shared.stats.lock().clone();
        stats.queue_len = self.shared.queue.lock().len();
        stats
    }

    /// Instant mode: cut the request's own inputs into batches for the counters, nothing else.
    fn run_instant(&self, tokens: &[usize]) {
        let model = &self.shared.model;
        let mut rest = tokens;
        let now = std::time::Instant::now();
        while !rest.is_empty() {
            let (n, sum) = fill(rest.iter().copied(), model);
            self.shared.metrics.observe_batch(n, sum, Duration::ZERO);
            record(&self.shared.stats, n, sum, Duration::ZERO, now);
            rest = &rest[n..];
        }
    }
}

impl Drop for GpuQueue {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Whether an input of `t` tokens may join a batch of `n` inputs and `sum` tokens: always when
/// the batch is empty, so an input larger than the budget still runs.
fn fits(n: usize, sum: usize, t: usize, model: &GpuModel) -> bool {
    let full_tokens = n > 0 && sum + t > model.max_batch_tokens;
    let full_requests = model.max_batch_requests.is_some_and(|max| n >= max);
    !(full_tokens || full_requests)
}

/// How many of `tokens` (from the head) fit one batch, and their token sum.
fn fill(tokens: impl Iterator<Item = usize>, model: &GpuModel) -> (usize, usize) {
    let (mut n, mut sum) = (0, 0);
    for t in tokens {
        if !fits(n, sum, t, model) {
            break;
        }
        n += 1;
        sum += t;
    }
    (n, sum)
}

fn record(stats: &Mutex<GpuStats>, n: usize, sum: usize, service: Duration, end: std::time::Instant) {
    let mut stats = stats.lock();
    stats.batches += 1;
    stats.inputs += n as u64;
    stats.tokens += sum as u64;
    stats.busy += service;
    stats.max_batch_tokens_seen = stats.max_batch_tokens_seen.max(sum);
    stats.max_batch_size_seen = stats.max_batch_size_seen.max(n);
    stats.last_batch_end = Some(end);
}

/// Cuts the next batch from the head, dropping cancelled inputs. Returns the entries, their token
/// sum and the earliest arrival among them.
fn cut(shared: &Shared) -> Option<(Vec<Entry>, usize, Instant)> {
    let mut queue = shared.queue.lock();
    let mut batch = Vec::new();
    let (mut sum, mut first) = (0, None::<Instant>);
    while let Some(entry) = queue.front() {
        if entry.request.is_cancelled() {
            queue.pop_front();
            continue;
        }
        if !fits(batch.len(), sum, entry.tokens, &shared.model) {
            break;
        }
        let Some(entry) = queue.pop_front() else {
            break;
        };
        sum += entry.tokens;
        first = Some(first.map_or(entry.enqueued, |f| f.min(entry.enqueued)));
        batch.push(entry);
    }
    shared.metrics.queue_size.set(queue.len() as i64);
    first.map(|first| (batch, sum, first))
}

async fn batcher(shared: Arc<Shared>) {
    let mut prev_end: Option<Instant> = None;
    loop {
        let Some((batch, tokens, first)) = cut(&shared) else {
            shared.wake.notified().await;
            continue;
        };
        // Deadline scheduling: back-to-back batches chain on computed ends, not on wake-ups.
        let start = prev_end.map_or(first, |end| end.max(first));
        let service = shared.model.service_time(tokens);
        let end = start + service;
        shared.metrics.observe_batch(batch.len(), tokens, service);
        *shared.running_end.lock() = Some(end);
        tokio::time::sleep_until(end).await;
        let done_at = std::time::Instant::now();
        *shared.running_end.lock() = None;
        for entry in &batch {
            let queue = start.saturating_duration_since(entry.enqueued);
            entry.request.complete_one(queue, service);
        }
        record(&shared.stats, batch.len(), tokens, service, done_at);
        prev_end = Some(end);
    }
}
