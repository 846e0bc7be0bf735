//! Which endpoint serves the next request: the healthy one with the least outstanding tokens
//! that has a free concurrency slot; and each endpoint's health.
//!
//! This module owns the endpoint slots (endpoint, concurrency limit, outstanding tokens, health)
//! and the wait for a free slot. An endpoint that fails repeatedly (or refuses connections) is
//! skipped for a backoff period, then probed with one request at a time until one succeeds.
//! It never gives up: when every endpoint is failing it waits and says so every few seconds.
//! It never decides what a failure means for the request (see `request`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::error::{CallError, FailureKind};
use super::limiter::ConcurrencyLimit;
use super::stats::EndpointStats;

/// Consecutive transient failures after which an endpoint is skipped (a connection refused or a
/// refused client skips it at once). A few, so one 503 in a 5% error rate does not idle a GPU.
const SKIP_AFTER: u32 = 3;
/// First and longest skip period: short enough that a GPU back from a restart is used again
/// within seconds, long enough that a dead one costs a connection attempt per period.
const SKIP_MIN: Duration = Duration::from_millis(100);
const SKIP_MAX: Duration = Duration::from_secs(2);
/// At most one "every endpoint is failing" warning per this period.
const ALL_DOWN_WARN_EVERY: Duration = Duration::from_secs(10);
/// Longest a waiting request sleeps between checks, in case a wake-up is missed.
const RECHECK: Duration = Duration::from_millis(250);

/// One endpoint and its dispatch state.
pub(crate) struct Slot {
    pub endpoint: Endpoint,
    pub limit: ConcurrencyLimit,
    outstanding_tokens: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    embedded: AtomicU64,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    consecutive_failures: u32,
    skip_until: Option<Instant>,
    last_error: String,
}

impl Slot {
    pub fn new(endpoint: Endpoint, concurrency: usize) -> Self {
        Self {
            endpoint,
            limit: ConcurrencyLimit::new(concurrency),
            outstanding_tokens: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            embedded: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
        }
    }

    /// None while skipped; else how many requests it may have in flight (1 while recovering).
    fn cap(&self, now: Instant) -> Option<usize> {
        let health = self.health.lock();
        match health.skip_until {
            Some(until) if until > now => None,
            // Skipped before and not yet answering again: probe with one request at a time.
            Some(_) => Some(1),
            _ => Some(usize::MAX),
        }
    }

    fn skipped(&self, now: Instant) -> bool {
        self.cap(now).is_none()
    }

    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            url: self.endpoint.url().to_string(),
            in_flight: self.limit.in_flight(),
            concurrency_limit: self.limit.limit(),
            outstanding_tokens: self.outstanding_tokens.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            embedded_inputs: self.embedded.load(Ordering::Relaxed),
            skipped: self.skipped(Instant::now()),
        }
    }
}

/// The endpoints of a pool and the wait for one of them.
pub(crate) struct Dispatcher {
    pub slots: Vec<Slot>,
    freed: Notify,
    last_all_down_warn: Mutex<Option<Instant>>,
}

/// A slot taken for one call. Dropping it without [`Lease::finish`] (the request was cancelled)
/// gives the slot back without touching health.
pub(crate) struct Lease<'a> {
    dispatcher: &'a Dispatcher,
    index: usize,
    tokens: u64,
    started: Instant,
    done: bool,
}

impl Dispatcher {
    pub fn new(slots: Vec<Slot>) -> Self {
        Self { slots, freed: Notify::new(), last_all_down_warn: Mutex::new(None) }
    }

    /// Waits for a slot on the usable endpoint with the least outstanding tokens and takes it for
    /// a request of `tokens` budget tokens.
    pub async fn acquire(&self, tokens: u64) -> Lease<'_> {
        loop {
            // Registered before looking, so a slot freed in between still wakes this request.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let now = Instant::now();
            if let Some(index) = self.try_take(now, tokens) {
                return Lease { dispatcher: self, index, tokens, started: Instant::now(), done: false };
            }
            let wait = self.next_unskip(now).map_or(RECHECK, |at| at.saturating_duration_since(now).min(RECHECK));
            if self.slots.iter().all(|slot| slot.skipped(now)) {
                self.warn_all_down(now);
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
            }
        }
    }

    fn try_take(&self, now: Instant, tokens: u64) -> Option<usize> {
        let mut order: Vec<(u64, usize, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                slot.cap(now)?;
                Some((slot.outstanding_tokens.load(Ordering::SeqCst), slot.limit.in_flight(), i))
            })
            .collect();
        order.sort_unstable();
        for (_, _, i) in order {
            let slot = &self.slots[i];
            let Some(cap) = slot.cap(now) else { continue };
            if slot.limit.try_acquire(cap) {
                slot.outstanding_tokens.fetch_add(tokens, Ordering::SeqCst);
                slot.requests.fetch_add(1, Ordering::Relaxed);
                return Some(i);
            }
        }
        None
    }

    fn next_unskip(&self, now: Instant) -> Option<Instant> {
        self.slots.iter().filter_map(|slot| slot.health.lock().skip_until.filter(|&at| at > now)).min()
    }

    fn warn_all_down(&self, now: Instant) {
        let mut last = self.last_all_down_warn.lock();
        if last.is_some_and(|at| now.saturating_duration_since(at) < ALL_DOWN_WARN_EVERY) {
            return;
        }
        *last = Some(now);
        let errors: Vec<String> = self
            .slots
            .iter()
            .map(|slot| format!("{} ({})", slot.endpoint.url(), slot.health.lock().last_error))
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

    /// Gives the slot back with the call's outcome: `Ok(inputs embedded)`, or the error. Refusals
    /// of the request or an input mean the server is healthy; anything else counts against it.
    pub fn finish(mut self, outcome: Result<usize, &CallError>) {
        self.done = true;
        let slot = &self.dispatcher.slots[self.index];
        let healthy = match outcome {
            Ok(embedded) => {
                slot.embedded.fetch_add(embedded as u64, Ordering::Relaxed);
                true
            }
            Err(err) => matches!(err.kind, FailureKind::TooLarge | FailureKind::InputRefused),
        };
        let mut health = slot.health.lock();
        if healthy {
            if health.consecutive_failures >= SKIP_AFTER || health.skip_until.is_some() {
                tracing::info!(endpoint = slot.endpoint.url(), "TEI endpoint answers again");
            }
            *health = Health::default();
        } else if let Err(err) = outcome {
            slot.failures.fetch_add(1, Ordering::Relaxed);
            health.consecutive_failures += 1;
            health.last_error = err.to_string();
            let now_failing = err.is_connect() || err.kind == FailureKind::Rejected;
            if now_failing || health.consecutive_failures >= SKIP_AFTER {
                let doublings = health.consecutive_failures.saturating_sub(1).min(16);
                let skip = SKIP_MIN.saturating_mul(1 << doublings).min(SKIP_MAX);
                if health.skip_until.is_none() {
                    tracing::warn!(endpoint = slot.endpoint.url(), error = %err, "TEI endpoint failing; skipping it for now");
                }
                health.skip_until = Some(Instant::now() + skip);
            }
        }
        drop(health);
        self.release(slot, healthy);
    }

    fn release(&self, slot: &Slot, ok: bool) {
        slot.outstanding_tokens.fetch_sub(self.tokens, Ordering::SeqCst);
        slot.limit.on_done(self.started.elapsed(), ok);
        self.dispatcher.freed.notify_one();
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.done {
            let slot = &self.dispatcher.slots[self.index];
            self.release(slot, true);
        }
    }
}
