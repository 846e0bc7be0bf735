//! The stall watch: a run that makes no progress while work remains, for whatever cause, says so
//! at WARN every `stall_warn_every` with its best guess why (MongoDB operations waiting out an
//! election or an outage, every TEI endpoint open-circuit, requests in flight that never finish,
//! epochs that do not commit), and counts the stalled time for `/metrics`
//! (`tweet_embed_stalled_seconds`).
//!
//! Progress is anything moving: documents committed, the committed epoch, inputs the GPUs
//! embedded. Work remains while something waits on MongoDB, a TEI request is in flight or waits
//! for an endpoint (a total TEI outage is a stall), or the sources have closed epochs that are
//! not yet committed; an idle stream is not a stall.
//! It only reads counters, from its own thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::Monitor;
use crate::tei::{redact, BreakerState};

/// The watch's thread; stops when dropped.
pub(crate) struct StallWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StallWatch {
    /// Watches `monitor`'s run, warning every `every` while it is stalled.
    pub(crate) fn start(monitor: Monitor, every: Duration) -> StallWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread =
            std::thread::Builder::new().name("stall-watch".into()).spawn(move || watch(monitor, every, s)).ok();
        StallWatch { stop, thread }
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(monitor: Monitor, every: Duration, stop: Arc<AtomicBool>) {
    let tick = (every / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut last = None;
    let mut since = Instant::now();
    let mut warned: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        let t = &monitor.totals;
        let pool = monitor.pool.stats();
        let now = (
            t.embedded.load(Ordering::Relaxed) + t.rejected.load(Ordering::Relaxed),
            t.committed_epoch.load(Ordering::Relaxed),
            pool.embedded_inputs,
        );
        let pending = monitor.work_pending(&pool);
        if last != Some(now) || !pending {
            last = Some(now);
            since = Instant::now();
            warned = None;
            monitor.stalled_ms.store(0, Ordering::Relaxed);
            continue;
        }
        let stalled = since.elapsed();
        monitor.stalled_ms.store(stalled.as_millis() as u64, Ordering::Relaxed);
        if stalled >= every && warned.is_none_or(|w| w.elapsed() >= every) {
            tracing::warn!(
                stalled_s = stalled.as_secs(),
                "no progress for {} s while work remains: {}",
                stalled.as_secs(),
                monitor.stall_guess(&pool)
            );
            warned = Some(Instant::now());
        }
    }
}

impl Monitor {
    /// Whether the run has work it has not finished: something waits on MongoDB, a TEI request
    /// is in flight or waits for an endpoint, or closed epochs are not committed.
    pub(crate) fn work_pending(&self, pool: &crate::tei::PoolStats) -> bool {
        let committed = self.totals.committed_epoch.load(Ordering::SeqCst);
        !self.waits.is_empty()
            || pool.requests_waiting > 0
            || pool.endpoints.iter().any(|e| e.in_flight > 0)
            || self.clock.now() > committed.saturating_add(1)
    }

    /// The best guess why nothing moves.
    pub(crate) fn stall_guess(&self, pool: &crate::tei::PoolStats) -> String {
        let waits = self.waits.snapshot();
        if !waits.is_empty() {
            let each: Vec<String> = waits
                .iter()
                .map(|(what, w)| {
                    format!(
                        "{what} waits on MongoDB ({}: {}; {} tries over {} s)",
                        w.why,
                        w.error,
                        w.attempts,
                        w.since.elapsed().as_secs()
                    )
                })
                .collect();
            return each.join("; ");
        }
        let open: Vec<String> = pool
            .endpoints
            .iter()
            .filter(|e| e.breaker != BreakerState::Closed || e.skipped)
            .map(|e| redact(&e.url))
            .collect();
        if !open.is_empty() && open.len() == pool.endpoints.len() {
            return format!(
                "every TEI endpoint is out of rotation (down, failing, or being checked after it went away), {} \
                 requests wait for one: {}",
                pool.requests_waiting,
                open.join(", ")
            );
        }
        let in_flight: usize = pool.endpoints.iter().map(|e| e.in_flight).sum();
        if in_flight > 0 {
            let extra = if open.is_empty() { String::new() } else { format!("; open-circuit: {}", open.join(", ")) };
            return format!("{in_flight} TEI requests are in flight and none finishes{extra}");
        }
        format!("{} (nothing waits on MongoDB or TEI)", self.epochs_open())
    }

    /// `epochs A..=B open (committed C)` or `no epoch open`.
    pub fn epochs_open(&self) -> String {
        let committed = self.totals.committed_epoch.load(Ordering::SeqCst);
        let open = self.clock.now();
        if open > committed {
            format!("epochs {}..={open} not yet committed (committed up to {committed})", committed + 1)
        } else {
            format!("every epoch committed (up to {committed})")
        }
    }

    /// What is still in flight, in one phrase: open epochs, TEI requests, MongoDB waits. For the
    /// line a stop that cannot drain in time prints.
    pub fn in_flight(&self) -> String {
        let pool = self.pool.stats();
        let requests: usize = pool.endpoints.iter().map(|e| e.in_flight).sum();
        let mut parts = vec![self.epochs_open(), format!("{requests} TEI requests in flight")];
        for (what, w) in self.waits.snapshot() {
            parts.push(format!("{what} waiting on MongoDB ({})", w.why));
        }
        parts.join(", ")
    }

    /// Seconds the run has made no progress while work remains (0 while it moves).
    pub fn stalled_seconds(&self) -> f64 {
        self.stalled_ms.load(Ordering::Relaxed) as f64 / 1e3
    }
}
