//! Which endpoint serves the next request: among those whose breaker lets them and whose
//! concurrency limit has a free slot, the one with the least outstanding tokens, weighted by its
//! measured speed, so a GPU half as fast gets half the work.
//!
//! This module owns the endpoint slots (endpoint, concurrency limit, circuit breaker, outstanding
//! tokens, counters) and the wait for a free slot. Requests get slots first come, first served:
//! the batcher cuts requests in length order (see `batcher`), and a small request taking a slot
//! ahead of a larger one that waits (it fits the token floor sooner) would leave that larger one
//! to land later among requests of other lengths, padding TEI's batches. It never gives up: when every endpoint's
//! breaker is open it waits and says so every [`ALL_DOWN_WARN_EVERY`]. It never decides what a
//! failure means for the request (see `request`) and never moves a limit itself (see `limiter`).
//!
//! A 429 ("Model is overloaded": no free permits) is an answer from a healthy server whose
//! permits are taken, by this pool's own requests or by other clients: it moves the concurrency
//! limit (see `limiter`), never the breaker, so an endpoint is not taken out of rotation for being
//! busy. When an endpoint answers nothing but 429 for a while, that is said once per
//! [`OVERLOADED_WARN_EVERY`]. Vectors an endpoint returned that are not usable (see `vectors`)
//! are counted per endpoint and reported at most once per [`INVALID_WARN_EVERY`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::breaker::{Breaker, Transition};
use super::endpoint::Endpoint;
use super::error::{CallError, FailureKind};
use super::limiter::{ConcurrencyLimit, Sample, Signal};
use super::stats::{EndpointMetrics, EndpointStats};

/// At most one "every endpoint is failing" warning per this period.
pub(crate) const ALL_DOWN_WARN_EVERY: Duration = Duration::from_secs(10);
/// At most one "answers only 429" warning per endpoint per this period.
pub(crate) const OVERLOADED_WARN_EVERY: Duration = Duration::from_secs(10);
/// 429s in a row, with no answered request between them, before that warning.
const OVERLOADED_WARN_AFTER: u64 = 20;
/// At most one "returned vectors that are not numbers" warning per endpoint per this period.
pub(crate) const INVALID_WARN_EVERY: Duration = Duration::from_secs(10);
/// Longest a waiting request sleeps between checks, in case a wake-up is missed.
const RECHECK: Duration = Duration::from_millis(250);

/// A warning said at most once per period, however often its cause recurs.
struct WarnEvery {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl WarnEvery {
    fn new(every: Duration) -> Self {
        Self { every, last: Mutex::new(None) }
    }

    /// Whether to warn at `now`; if so, the period starts again.
    fn due(&self, now: Instant) -> bool {
        let mut last = self.last.lock();
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// One endpoint and its dispatch state.
pub(crate) struct Slot {
    pub endpoint: Endpoint,
    pub limit: ConcurrencyLimit,
    breaker: Breaker,
    metrics: EndpointMetrics,
    outstanding_tokens: AtomicU64,
    outstanding_inputs: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    embedded: AtomicU64,
    /// 429s since the last answered request.
    overloaded_streak: AtomicU64,
    overloaded_warn: WarnEvery,
    invalid_vectors: AtomicU64,
    invalid_warn: WarnEvery,
    /// When the endpoint last returned vectors.
    last_answer: Mutex<Option<Instant>>,
    /// Out of rotation until its identity is checked: it did not answer at start, or went away
    /// (see `pool::watch_identity`), with
    /// the last reason it is not in rotation yet.
    waiting: Mutex<Option<String>>,
}

impl Slot {
    pub fn new(endpoint: Endpoint, limit: ConcurrencyLimit) -> Self {
        Self {
            endpoint,
            limit,
            breaker: Breaker::default(),
            metrics: EndpointMetrics::new(),
            outstanding_tokens: AtomicU64::new(0),
            outstanding_inputs: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            embedded: AtomicU64::new(0),
            overloaded_streak: AtomicU64::new(0),
            overloaded_warn: WarnEvery::new(OVERLOADED_WARN_EVERY),
            invalid_vectors: AtomicU64::new(0),
            invalid_warn: WarnEvery::new(INVALID_WARN_EVERY),
            last_answer: Mutex::new(None),
            waiting: Mutex::new(None),
        }
    }

    /// A slot out of rotation until [`Slot::join`]: its endpoint did not answer at start
    /// (`error`).
    pub fn waiting(endpoint: Endpoint, limit: ConcurrencyLimit, error: String) -> Self {
        let slot = Self::new(endpoint, limit);
        *slot.waiting.lock() = Some(error);
        slot
    }

    /// Puts a waiting slot in rotation.
    pub fn join(&self) {
        *self.waiting.lock() = None;
    }

    /// Takes the slot out of rotation until its identity is checked again (`why`).
    pub fn hold_out(&self, why: &str) {
        *self.waiting.lock() = Some(why.to_string());
    }

    /// Whether it is out of rotation until its identity is checked.
    pub fn is_waiting(&self) -> bool {
        self.waiting.lock().is_some()
    }

    /// Whether it takes requests, and how many at once now (its breaker's cap).
    fn usable(&self, now: Instant) -> Option<usize> {
        if self.waiting.lock().is_some() {
            return None;
        }
        self.breaker.cap(now)
    }

    /// Adds its successful calls' latencies (µs) to `into`.
    pub fn add_latencies(&self, into: &mut hdrhistogram::Histogram<u64>) {
        self.metrics.add_latencies(into);
    }

    pub fn stats(&self) -> EndpointStats {
        let now = Instant::now();
        let (breaker_opened, breaker_closed) = self.breaker.counts();
        let mut stats = EndpointStats {
            url: self.endpoint.url().to_string(),
            in_flight: self.limit.in_flight(),
            // The latency rule's limit, or what the token floor lets in flight now if more.
            concurrency_limit: self.limit.limit().max(self.limit.in_flight()),
            concurrency_max: self.limit.max(),
            adaptive: self.limit.is_adaptive(),
            outstanding_tokens: self.outstanding_tokens.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            embedded_inputs: self.embedded.load(Ordering::Relaxed),
            invalid_vectors: self.invalid_vectors.load(Ordering::Relaxed),
            breaker: self.breaker.state(now),
            breaker_opened,
            breaker_closed,
            skipped: self.usable(now).is_none(),
            joining: self.waiting.lock().is_some(),
            ..EndpointStats::default()
        };
        self.metrics.fill(&mut stats);
        stats
    }
}

/// The endpoints of a pool and the wait for one of them.
pub(crate) struct Dispatcher {
    pub slots: Vec<Slot>,
    freed: Notify,
    all_down_warn: WarnEvery,
    /// Tickets of the requests waiting for a slot, in arrival order: only the first may take one.
    line: Mutex<VecDeque<u64>>,
    next_ticket: AtomicU64,
}

/// A request's place in the dispatcher's line; leaves it when dropped (taken or cancelled).
struct Ticket<'a> {
    dispatcher: &'a Dispatcher,
    number: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut line = self.dispatcher.line.lock();
        let was_first = line.front() == Some(&self.number);
        line.retain(|&t| t != self.number);
        drop(line);
        if was_first {
            // The next in line may fit where this one did not wait.
            self.dispatcher.freed.notify_waiters();
        }
    }
}

/// A slot taken for one call. Dropping it without [`Lease::finish`] (the request was cancelled)
/// gives the slot back without touching health.
pub(crate) struct Lease<'a> {
    dispatcher: &'a Dispatcher,
    index: usize,
    tokens: u64,
    inputs: u64,
    in_flight_at_start: usize,
    started: Instant,
    done: bool,
}

impl Dispatcher {
    pub fn new(slots: Vec<Slot>) -> Self {
        Self {
            slots,
            freed: Notify::new(),
            all_down_warn: WarnEvery::new(ALL_DOWN_WARN_EVERY),
            line: Mutex::new(VecDeque::new()),
            next_ticket: AtomicU64::new(0),
        }
    }

    /// Waits for a slot on the usable endpoint with the least outstanding tokens and takes it for
    /// a request of `inputs` inputs costing `tokens` padded tokens (`n × longest`, what a padded
    /// server computes for it).
    /// Requests take slots in the order they asked. Endpoints in `avoid` (where this request
    /// failed in a way that may follow its inputs) are taken only when no other has room.
    pub async fn acquire(&self, tokens: u64, inputs: u64, avoid: &[usize]) -> Lease<'_> {
        let number = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.line.lock().push_back(number);
        let _ticket = Ticket { dispatcher: self, number };
        loop {
            // Registered before looking, so a slot freed in between still wakes this request.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let now = Instant::now();
            let first = self.line.lock().front() == Some(&number);
            if let Some((index, in_flight_at_start)) =
                first.then(|| self.try_take(now, tokens, inputs, avoid)).flatten()
            {
                let started = Instant::now();
                return Lease { dispatcher: self, index, tokens, inputs, in_flight_at_start, started, done: false };
            }
            let wait = self.next_reopen(now).map_or(RECHECK, |at| at.saturating_duration_since(now).min(RECHECK));
            if self.slots.iter().all(|slot| slot.usable(now).is_none()) {
                self.warn_all_down(now);
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
            }
        }
    }

    /// Takes a slot on the best usable endpoint: its index and its in-flight count with this one.
    fn try_take(&self, now: Instant, tokens: u64, inputs: u64, avoid: &[usize]) -> Option<(usize, usize)> {
        let usable: Vec<(usize, usize)> =
            self.slots.iter().enumerate().filter_map(|(i, slot)| Some((i, slot.usable(now)?))).collect();
        // Outstanding tokens in seconds of each endpoint's own unloaded speed, once every usable
        // one is measured; plain tokens until then.
        let speeds: Option<Vec<f64>> = usable.iter().map(|&(i, _)| self.slots[i].limit.seconds_per_token()).collect();
        let mut order: Vec<(bool, f64, usize, usize, usize)> = usable
            .iter()
            .enumerate()
            .map(|(k, &(i, cap))| {
                let slot = &self.slots[i];
                let outstanding = (slot.outstanding_tokens.load(Ordering::SeqCst) + tokens) as f64;
                let key = speeds.as_ref().map_or(outstanding, |s| outstanding * s[k]);
                (avoid.contains(&i), key, slot.limit.in_flight(), i, cap)
            })
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
        for (_, _, _, i, cap) in order {
            let slot = &self.slots[i];
            let tokens_with = slot.outstanding_tokens.load(Ordering::SeqCst) + tokens;
            let inputs_with = slot.outstanding_inputs.load(Ordering::SeqCst) + inputs;
            if let Some(in_flight) = slot.limit.try_acquire(cap, tokens_with, inputs_with) {
                slot.outstanding_tokens.fetch_add(tokens, Ordering::SeqCst);
                slot.outstanding_inputs.fetch_add(inputs, Ordering::SeqCst);
                slot.requests.fetch_add(1, Ordering::Relaxed);
                return Some((i, in_flight));
            }
        }
        None
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.line.lock().len()
    }

    /// Wakes every request waiting for a slot (an endpoint joined).
    pub fn wake(&self) {
        self.freed.notify_waiters();
    }

    fn next_reopen(&self, now: Instant) -> Option<Instant> {
        self.slots.iter().filter_map(|slot| slot.breaker.reopens_at(now)).min()
    }

    fn warn_all_down(&self, now: Instant) {
        if !self.all_down_warn.due(now) {
            return;
        }
        let errors: Vec<String> = self
            .slots
            .iter()
            .map(|slot| {
                let why = slot.waiting.lock().clone().unwrap_or_else(|| slot.breaker.last_error());
                format!("{} ({why})", slot.endpoint.url())
            })
            .collect();
        tracing::warn!(
            endpoints = %errors.join("; "),
            "every TEI endpoint is failing; requests wait for one to come back, nothing is dropped"
        );
    }
}

impl Lease<'_> {
    /// The endpoint to call.
    pub fn endpoint(&self) -> &Endpoint {
        &self.dispatcher.slots[self.index].endpoint
    }

    /// The endpoint's index in the pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Takes the endpoint out of rotation until its identity is checked again: it failed to
    /// connect or dropped the connection, and a server that went away may come back serving
    /// another model (see `pool::watch_identity`).
    pub fn hold_out_for_check(&self, why: &str) {
        let slot = &self.dispatcher.slots[self.index];
        if !slot.is_waiting() {
            tracing::info!(
                endpoint = slot.endpoint.url(),
                error = why,
                "TEI endpoint went away; out of rotation until it answers as this run's model again"
            );
        }
        slot.hold_out(why);
    }

    /// Whether the endpoint returned vectors for some request within `window` before now: a
    /// failure of this call then more likely follows its inputs than the endpoint.
    pub fn answered_within(&self, window: Duration) -> bool {
        let last = *self.dispatcher.slots[self.index].last_answer.lock();
        last.is_some_and(|at| at.elapsed() <= window)
    }

    /// Gives the slot back after a failure that follows the request's inputs, not the endpoint
    /// (a backend error on an endpoint that answers other requests): counted as an error of the
    /// endpoint, but neither its breaker nor its limit moves.
    pub fn finish_input_failure(mut self, err: &CallError) {
        self.done = true;
        let slot = &self.dispatcher.slots[self.index];
        slot.failures.fetch_add(1, Ordering::Relaxed);
        slot.metrics.error(&err.cause);
        self.release(slot, self.started.elapsed(), Signal::Neutral);
    }

    /// Counts `count` vectors of this call's answer that were refused (`reason`: one of them),
    /// and says so, at most once per [`INVALID_WARN_EVERY`] for the endpoint.
    pub fn invalid_vectors(&self, count: usize, reason: &str) {
        if count == 0 {
            return;
        }
        let slot = &self.dispatcher.slots[self.index];
        let total = slot.invalid_vectors.fetch_add(count as u64, Ordering::Relaxed) + count as u64;
        if !slot.invalid_warn.due(Instant::now()) {
            return;
        }
        tracing::warn!(
            endpoint = slot.endpoint.url(),
            in_this_answer = count,
            since_start = total,
            example = reason,
            "TEI endpoint returned vectors that are not usable; those inputs are rejected, never written \
             (`tweet-embed requeue` takes them again once the server is fixed)"
        );
    }

    /// Gives the slot back with the call's outcome: `Ok((inputs, tokens))` embedded, or the
    /// error. Refusals of the request or an input mean the server is healthy, and so does a 429
    /// (its permits are taken: a cue for the limit, not the breaker); anything else counts
    /// against it.
    pub fn finish(mut self, outcome: Result<(usize, u64), &CallError>) {
        self.done = true;
        let slot = &self.dispatcher.slots[self.index];
        let latency = self.started.elapsed();
        let (signal, transition) = match outcome {
            Ok((inputs, tokens)) => {
                *slot.last_answer.lock() = Some(Instant::now());
                slot.embedded.fetch_add(inputs as u64, Ordering::Relaxed);
                slot.metrics.success(latency, tokens);
                slot.overloaded_streak.store(0, Ordering::Relaxed);
                (Signal::Ok, slot.breaker.on_success())
            }
            Err(err) if matches!(err.kind, FailureKind::TooLarge | FailureKind::InputRefused) => {
                slot.overloaded_streak.store(0, Ordering::Relaxed);
                (Signal::Neutral, slot.breaker.on_success())
            }
            Err(err) if err.is_overloaded() => {
                slot.failures.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error(&err.cause);
                let streak = slot.overloaded_streak.fetch_add(1, Ordering::Relaxed) + 1;
                if streak >= OVERLOADED_WARN_AFTER {
                    slot.warn_overloaded(streak);
                }
                (Signal::NoPermit, Transition::None)
            }
            Err(err) => {
                slot.failures.fetch_add(1, Ordering::Relaxed);
                slot.metrics.error(&err.cause);
                let at_once = err.is_connect() || err.kind == FailureKind::Rejected;
                (overload_signal(err), slot.breaker.on_failure(err.to_string(), at_once, Instant::now()))
            }
        };
        match (transition, outcome) {
            (Transition::Opened, Err(err)) => tracing::warn!(
                endpoint = slot.endpoint.url(),
                error = %err,
                "TEI endpoint failing; out of rotation, its work goes to the others, probing it with backoff"
            ),
            (Transition::Closed, _) => {
                tracing::info!(endpoint = slot.endpoint.url(), "TEI endpoint answers again; back in rotation")
            }
            _ => {}
        }
        self.release(slot, latency, signal);
    }

    fn release(&self, slot: &Slot, latency: Duration, signal: Signal) {
        slot.outstanding_tokens.fetch_sub(self.tokens, Ordering::SeqCst);
        slot.outstanding_inputs.fetch_sub(self.inputs, Ordering::SeqCst);
        let sample = Sample { latency, tokens: self.tokens, in_flight_at_start: self.in_flight_at_start, signal };
        slot.limit.on_done(sample, std::time::Instant::now());
        // Every waiter looks again: only the first in line may take the slot, and a wake-up of
        // another would be lost.
        self.dispatcher.freed.notify_waiters();
    }
}

impl Slot {
    fn warn_overloaded(&self, streak: u64) {
        if !self.overloaded_warn.due(Instant::now()) {
            return;
        }
        tracing::warn!(
            endpoint = self.endpoint.url(),
            answers_429_in_a_row = streak,
            concurrency_limit = self.limit.limit(),
            "TEI endpoint answers every request 429 (Model is overloaded): its permits \
             (--max-concurrent-requests) are taken by other clients or processes; requests back off \
             and retry, nothing is dropped"
        );
    }
}

/// Whether a failure says the server is overloaded (5xx, timeout; a 429 is told apart before):
/// the limit's cue to back off. A connection refused or a refused client says the endpoint is down or misconfigured (the breaker's job).
fn overload_signal(err: &CallError) -> Signal {
    let overloaded = err.cause == "timeout" || err.cause.parse::<u16>().is_ok_and(|status| status >= 500);
    if overloaded {
        Signal::Overload
    } else {
        Signal::Neutral
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.done {
            let slot = &self.dispatcher.slots[self.index];
            self.release(slot, self.started.elapsed(), Signal::Neutral);
        }
    }
}
