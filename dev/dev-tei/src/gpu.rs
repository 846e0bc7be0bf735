//! One simulated GPU: TEI's router queue (`core/src/queue.rs`) and a service-time model of the
//! backend, and nothing about HTTP.
//!
//! Inputs of every request go into one FIFO of single inputs. A single batcher task cuts a
//! server batch from the head, always at least one input, and at most `max_batch_requests`
//! inputs if set, under TEI 1.9's token rule (`queue_blocking_task`):
//! - unpadded (flash models on CUDA): while the plain token sum stays within `max_batch_tokens`;
//!   the batch computes that sum;
//! - padded (`is_padded()`: Gemma3/EmbeddingGemma everywhere, every non-flash model, every CPU
//!   backend): while `(n + 1) × longest ≤ max_batch_tokens`, where `longest` includes the
//!   candidate; the batch computes `n × longest` tokens, every input padded to the longest.
//!
//! It then "runs" the batch for `base + computed / tokens_per_second` and completes every input
//! in it. One batch runs at a time; there is no timer waiting for a batch to fill and no length
//! sorting. Real tokens (the inputs' own) and computed tokens (with padding) are both counted,
//! so padding can be measured. Inputs whose request went away (client gone, connection closed)
//! are skipped when a batch is cut, as TEI does.
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
    /// Batches are padded to their longest input (see the module docs).
    pub padded: bool,
}

impl GpuModel {
    /// Modelled time to run a batch that computes `tokens` tokens (padding included).
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
    /// Real tokens completed: the inputs' own, after truncation.
    pub tokens: u64,
    /// Tokens the batches computed: `n × longest` per batch when padded, else the real tokens.
    /// `tokens / computed_tokens` is the share of GPU work that was not padding.
    pub computed_tokens: u64,
    /// Sum of the modelled service times of the completed batches.
    pub busy: Duration,
    /// Inputs waiting in the queue now (not counting the running batch).
    pub queue_len: usize,
    /// Largest computed tokens of any batch so far (the token sum; `n × longest` when padded).
    pub max_batch_tokens_seen: usize,
    /// Largest input count of any batch so far.
    pub max_batch_size_seen: usize,
    /// When the last batch's inputs were completed (wall clock, at or just after its modelled
    /// end; None before the first batch). Tokens completed between two snapshots over the time
    /// between their `last_batch_end`s is the GPU's measured throughput.
    pub last_batch_end: Option<std::time::Instant>,
    /// When the first batch started (wall clock; None before the first batch). With
    /// `last_batch_end`, the span over which the GPU's capacity was on offer.
    pub first_batch_start: Option<std::time::Instant>,
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
            let batch = Fill::from_head(rest, model);
            let computed = batch.computed(model);
            self.shared.metrics.observe_batch(batch.n, batch.sum, computed, Duration::ZERO);
            record(&self.shared.stats, &batch, computed, Duration::ZERO, now, now);
            rest = &rest[batch.n..];
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

/// A server batch as it is cut: inputs, their real token sum and the longest input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fill {
    pub n: usize,
    pub sum: usize,
    pub longest: usize,
}

impl Fill {
    /// Whether an input of `t` tokens may join: always when the batch is empty, so an input
    /// larger than the budget still runs; then TEI's rule (padded: `(n + 1) × max(longest, t)`
    /// within `max_batch_tokens`; unpadded: `sum + t`) and `max_batch_requests`.
    pub fn admits(&self, t: usize, model: &GpuModel) -> bool {
        if self.n == 0 {
            return true;
        }
        let total = if model.padded { (self.n + 1) * self.longest.max(t) } else { self.sum + t };
        let full_requests = model.max_batch_requests.is_some_and(|max| self.n >= max);
        total <= model.max_batch_tokens && !full_requests
    }

    /// The batch cut from the head of `tokens` (at least one input).
    pub fn from_head(tokens: &[usize], model: &GpuModel) -> Self {
        let mut fill = Fill::default();
        for &t in tokens {
            if !fill.admits(t, model) {
                break;
            }
            fill.add(t);
        }
        fill
    }

    pub fn add(&mut self, t: usize) {
        self.n += 1;
        self.sum += t;
        self.longest = self.longest.max(t);
    }

    /// Tokens the GPU computes for this batch.
    pub fn computed(&self, model: &GpuModel) -> usize {
        if model.padded {
            self.n * self.longest
        } else {
            self.sum
        }
    }
}

fn record(
    stats: &Mutex<GpuStats>,
    batch: &Fill,
    computed: usize,
    service: Duration,
    start: std::time::Instant,
    end: std::time::Instant,
) {
    let mut stats = stats.lock();
    stats.batches += 1;
    stats.inputs += batch.n as u64;
    stats.tokens += batch.sum as u64;
    stats.computed_tokens += computed as u64;
    stats.busy += service;
    stats.max_batch_tokens_seen = stats.max_batch_tokens_seen.max(computed);
    stats.max_batch_size_seen = stats.max_batch_size_seen.max(batch.n);
    stats.last_batch_end = Some(end);
    stats.first_batch_start.get_or_insert(start);
}

/// Cuts the next batch from the head, dropping cancelled inputs. Returns the entries, the
/// batch's fill and the earliest arrival among them.
fn cut(shared: &Shared) -> Option<(Vec<Entry>, Fill, Instant)> {
    let mut queue = shared.queue.lock();
    let mut batch = Vec::new();
    let (mut fill, mut first) = (Fill::default(), None::<Instant>);
    while let Some(entry) = queue.front() {
        if entry.request.is_cancelled() {
            queue.pop_front();
            continue;
        }
        if !fill.admits(entry.tokens, &shared.model) {
            break;
        }
        let Some(entry) = queue.pop_front() else {
            break;
        };
        fill.add(entry.tokens);
        first = Some(first.map_or(entry.enqueued, |f| f.min(entry.enqueued)));
        batch.push(entry);
    }
    shared.metrics.queue_size.set(queue.len() as i64);
    first.map(|first| (batch, fill, first))
}

async fn batcher(shared: Arc<Shared>) {
    let mut prev_end: Option<Instant> = None;
    loop {
        let Some((batch, fill, first)) = cut(&shared) else {
            shared.wake.notified().await;
            continue;
        };
        // Deadline scheduling: back-to-back batches chain on computed ends, not on wake-ups.
        let start = prev_end.map_or(first, |end| end.max(first));
        let computed = fill.computed(&shared.model);
        let service = shared.model.service_time(computed);
        let end = start + service;
        shared.metrics.observe_batch(batch.len(), fill.sum, computed, service);
        *shared.running_end.lock() = Some(end);
        tokio::time::sleep_until(end).await;
        let done_at = std::time::Instant::now();
        *shared.running_end.lock() = None;
        for entry in &batch {
            let queue = start.saturating_duration_since(entry.enqueued);
            entry.request.complete_one(queue, service);
        }
        record(&shared.stats, &fill, computed, service, start.into_std(), done_at);
        prev_end = Some(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(padded: bool, max_batch_requests: Option<usize>) -> GpuModel {
        GpuModel {
            base: Duration::from_millis(5),
            tokens_per_second: 1_000.0,
            instant: false,
            max_batch_tokens: 100,
            max_batch_requests,
            padded,
        }
    }

    fn cut_all(tokens: &[usize], model: &GpuModel) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut rest = tokens;
        while !rest.is_empty() {
            let fill = Fill::from_head(rest, model);
            out.push((fill.n, fill.computed(model)));
            rest = &rest[fill.n..];
        }
        out
    }

    #[test]
    fn padded_batches_follow_teis_rule_in_arrival_order() {
        let padded = model(true, None);
        // 10, 10, 30: (2+1) × 30 = 90 fits; a 4th of 10 would make 4 × 30 = 120: cut.
        assert_eq!(cut_all(&[10, 10, 30, 10, 10], &padded), vec![(3, 90), (2, 20)]);
        // A long input after short ones pads all of them: 5 × 20 = 100 fits exactly.
        assert_eq!(cut_all(&[5, 5, 5, 5, 20, 5], &padded), vec![(5, 100), (1, 5)]);
        // Alone over the budget still runs, alone.
        assert_eq!(cut_all(&[150, 1], &padded), vec![(1, 150), (1, 1)]);
        // The same inputs unpadded: the plain sum.
        assert_eq!(cut_all(&[10, 10, 30, 10, 10], &model(false, None)), vec![(5, 70)]);
        // max_batch_requests applies under either rule.
        assert_eq!(cut_all(&[1, 1, 1, 1, 1], &model(true, Some(2))), vec![(2, 2), (2, 2), (1, 1)]);
    }

    #[test]
    fn sorted_inputs_pad_less_than_arrival_order() {
        let padded = model(true, None);
        let arrival = [3, 40, 2, 5, 30, 4, 3, 25, 2, 6];
        let mut sorted = arrival;
        sorted.sort_unstable();
        let computed = |t: &[usize]| cut_all(t, &padded).iter().map(|b| b.1).sum::<usize>();
        let real: usize = arrival.iter().sum();
        assert!(computed(&arrival) > 2 * real, "{} vs {real}", computed(&arrival));
        assert!(computed(&sorted) * 10 < computed(&arrival) * 7);
    }
}
