//! How many requests one endpoint may have in flight: pinned ([`Concurrency::Fixed`]), or found
//! by a delay-based adaptive limit ([`Concurrency::Adaptive`], the default).
//!
//! This module owns the per-endpoint limit, the in-flight count, the endpoint's unloaded latency
//! (its *baseline*) and the rule that moves the limit. It never waits (the dispatcher asks with
//! `try_acquire` and waits itself), never chooses an endpoint and never sees a request's inputs.
//!
//! ## The rule: a Vegas-style gradient, not AIMD
//! TEI runs one batch per GPU, cut from one FIFO of every request's inputs (`notes/tei.md`). Once
//! the GPU is busy, every extra request in flight adds its whole service time to everyone's
//! latency, and nothing to throughput. So the latency of a request dispatched with `n` in flight,
//! over the endpoint's unloaded latency, says how many requests were queued ahead of it:
//! `queued = n × (1 − baseline / latency)` (latencies per token, so requests of different sizes
//! compare). The limit grows by one per round trip while `queued` stays under [`GROW_BELOW`]
//! (latency near its unloaded level: the GPU may have room), holds while about one request waits
//! (which covers the client's round trip, so the GPU never idles), and shrinks by one per round
//! trip over [`SHRINK_ABOVE`] (queueing latency). A 429, 503, 424 or timeout cuts it by a quarter
//! at once. AIMD would need a loss or a latency threshold to back off from: TEI answers 429 only
//! when its 512 permits are gone, thousands of documents past the knee, and a threshold is the
//! hand tuning this replaces. The gradient finds the knee from latency alone, whatever the GPU,
//! model or text length.
//!
//! The baseline is the least per-token latency over the last one or two [`BASELINE_WINDOW`]s. At
//! a steady backlog every request waits behind another, so no sample is unloaded; when no
//! request has been dispatched alone for [`PROBE_EVERY`], the limit is held at 1 until one has
//! (a probe costs about one round trip of GPU time), so a GPU that gets slower or faster is
//! re-measured. `--p95-slo` bounds the limit: it does not grow when one more request would push a
//! latency past the SLO, and shrinks while the p95 of the last [`RECENT`] requests is over it.
//!
//! ## A full server batch waiting, whatever the request size
//! Latency counts requests, but a GPU works in server batches. When requests are much smaller
//! than a server batch (tweets: a 32-input request is ~1,100 tokens against TEI's 16,384-token
//! batches), one request queued is a sliver of a batch: the GPU runs small batches, pays their
//! fixed cost often and waits between them. So an adaptive limit also lets requests in while the
//! tokens in flight at the endpoint, counted under the server's padded rule (`n × longest` per
//! request), stay within [`FLOOR_BATCHES`] server batches (and, where the server caps a batch's
//! inputs, `max_batch_requests`, their inputs within as many batches): the GPU always has its
//! next batch waiting and a request waits well under two batches. More queued buys nothing and
//! mixes more lengths into each padded batch (bench `backfill_gpus`, 4 padded GPUs, tweets: 0.87
//! of capacity and p95 2.0 batches with a floor of 1.5, 0.91 and 1.55 with 1.25). The permits
//! still cap it (`max`). The latency rule decides above that floor. A pinned limit has no floor.
//!
//! ## Permits shared with others
//! The cap (`max`) keeps this pool's own inputs in flight within the server's permits, but other
//! clients, other processes of a cluster, or a request the client gave up on and the server still
//! runs hold permits too: then some requests get 429. A 429 cuts the limit by a quarter (once per
//! round trip), even a pinned one, which grows back by one per round trip of answered requests
//! up to its pinned value: so clients sharing permits settle where their requests fit together,
//! instead of all retrying into a full server forever. Latency never moves a pinned limit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How an endpoint's concurrency limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Found per endpoint from latency, between 1 and what the server's permits allow.
    #[default]
    Adaptive,
    /// Pinned at this many requests in flight per endpoint (`--concurrency N`), still capped so
    /// the inputs in flight fit the server's permits, and lowered for a while when the server
    /// answers 429 (its permits are shared with other clients).
    Fixed(usize),
}

/// Server batches' worth of tokens an adaptive limit lets into flight at an endpoint whatever
/// latency says (see the module docs).
pub(crate) const FLOOR_BATCHES: f64 = 1.25;
/// Grow while fewer requests than this are estimated queued ahead.
pub(crate) const GROW_BELOW: f64 = 0.5;
/// Shrink while more than this are estimated queued ahead.
pub(crate) const SHRINK_ABOVE: f64 = 1.5;
/// Factor applied to the limit on an overload answer (429, 503, 424, timeout).
const OVERLOAD_CUT: f64 = 0.75;
/// The baseline is the least per-token latency seen in the current and the previous window.
pub(crate) const BASELINE_WINDOW: Duration = Duration::from_secs(30);
/// Longest time without a request dispatched alone before the limit is held at 1 to re-measure.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(30);
/// Latencies kept for the p95 check of `--p95-slo`.
pub(crate) const RECENT: usize = 40;

/// How a call went, as far as the limit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Vectors came back: a latency sample.
    Ok,
    /// The server is overloaded or failing under load (503, 424, 5xx, timeout).
    Overload,
    /// The server had no permits for the request's inputs (429): they are shared with others.
    NoPermit,
    /// Says nothing about load (refused input, connection refused, cancelled).
    Neutral,
}

/// One finished call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// From dispatch to answer.
    pub latency: Duration,
    /// Budget tokens of the request.
    pub tokens: u64,
    /// Requests in flight on the endpoint right after this one was dispatched (itself included).
    pub in_flight_at_start: usize,
    /// How it went.
    pub signal: Signal,
}

/// The limit of one endpoint and its in-flight count.
#[derive(Debug)]
pub(crate) struct ConcurrencyLimit {
    mode: Concurrency,
    max: usize,
    /// The limit in force now (1 while probing), read by `try_acquire` without the lock.
    current: AtomicUsize,
    in_flight: AtomicUsize,
    /// Tokens and inputs in flight that are always let in (0: no floor); see the module docs.
    floor: Floor,
    state: Mutex<Gradient>,
}

/// How much an adaptive limit lets into flight at an endpoint regardless of latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Floor {
    /// Padded tokens in flight (0: no floor).
    pub tokens: u64,
    /// Inputs in flight, where the server caps a batch's inputs.
    pub inputs: Option<u64>,
}

impl Floor {
    /// [`FLOOR_BATCHES`] server batches of `max_batch_tokens` (and `max_batch_requests` inputs).
    pub fn batches(max_batch_tokens: usize, max_batch_requests: Option<usize>) -> Self {
        let of = |n: usize| (n as f64 * FLOOR_BATCHES).floor() as u64;
        Self { tokens: of(max_batch_tokens), inputs: max_batch_requests.map(of) }
    }

    /// Whether `tokens` and `inputs` in flight (the new request's included) are within it.
    fn holds(&self, tokens: u64, inputs: u64) -> bool {
        self.tokens > 0 && tokens <= self.tokens && self.inputs.is_none_or(|max| inputs <= max)
    }
}

#[derive(Debug)]
struct Gradient {
    limit: f64,
    baseline: WindowedMin,
    last_alone: Option<Instant>,
    probing: bool,
    recent: VecDeque<Duration>,
    slo: Option<Duration>,
    last_cut: Option<Instant>,
}

impl ConcurrencyLimit {
    /// A limit in `mode`, never above `max` (what the server's permits allow), bounded by `slo`
    /// when adaptive.
    pub fn new(mode: Concurrency, max: usize, slo: Option<Duration>) -> Self {
        let mut max = max.max(1);
        let start = match mode {
            Concurrency::Fixed(n) => {
                max = n.clamp(1, max);
                max
            }
            // One at first: its latency is the endpoint's unloaded level.
            Concurrency::Adaptive => 1,
        };
        let state = Gradient {
            limit: start as f64,
            baseline: WindowedMin::default(),
            last_alone: None,
            probing: false,
            recent: VecDeque::with_capacity(RECENT),
            slo,
            last_cut: None,
        };
        Self {
            mode,
            max,
            current: AtomicUsize::new(start),
            in_flight: AtomicUsize::new(0),
            floor: Floor::default(),
            state: Mutex::new(state),
        }
    }

    /// The same with a floor of work always let in (adaptive only: a pinned limit stays pinned).
    pub fn with_floor(mut self, floor: Floor) -> Self {
        if self.mode == Concurrency::Adaptive {
            self.floor = floor;
        }
        self
    }

    /// The limit in force now.
    pub fn limit(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    /// The most it may ever be.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether it adapts.
    pub fn is_adaptive(&self) -> bool {
        self.mode == Concurrency::Adaptive
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The endpoint's unloaded latency per budget token, once measured: its speed, for dispatch.
    pub fn seconds_per_token(&self) -> Option<f64> {
        self.state.lock().baseline.get()
    }

    /// Takes a slot if fewer than `min(limit, cap)` are in flight, or, within the permits
    /// (`max`) and `cap`, if the endpoint's padded tokens and inputs in flight with this request
    /// (`tokens`, `inputs`) are within the floor. `cap` lets a recovering endpoint be probed with
    /// one request at a time. Returns the in-flight count with this one.
    pub fn try_acquire(&self, cap: usize, tokens: u64, inputs: u64) -> Option<usize> {
        let by_latency = self.limit();
        let by_floor = if self.floor.holds(tokens, inputs) { self.max } else { 0 };
        let max = by_latency.max(by_floor).min(cap.max(1));
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|before| before + 1)
    }

    /// Gives a slot back with how its call went, and moves the limit. Returns how many more
    /// requests the endpoint takes now than before (so the dispatcher wakes that many waiters).
    pub fn on_done(&self, sample: Sample, now: Instant) -> usize {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let before = self.limit();
        let mut state = self.state.lock();
        state.observe(&sample, now, self.mode == Concurrency::Adaptive, self.max);
        let after = match self.mode {
            Concurrency::Adaptive if state.probing => 1,
            _ => (state.limit.floor() as usize).clamp(1, self.max),
        };
        self.current.store(after, Ordering::SeqCst);
        after.saturating_sub(before)
    }
}

impl Gradient {
    fn observe(&mut self, sample: &Sample, now: Instant, adaptive: bool, max: usize) {
        match sample.signal {
            Signal::Neutral => return,
            Signal::Overload | Signal::NoPermit => {
                // One cut per round trip: a burst of 429s from one moment is one signal. A pinned
                // limit gives way to a 429 only: the permits it was capped to are not all free.
                let round = self.recent.back().copied().unwrap_or(Duration::from_millis(100));
                let cuts = adaptive || sample.signal == Signal::NoPermit;
                if cuts && self.last_cut.is_none_or(|at| now.saturating_duration_since(at) >= round) {
                    self.limit = (self.limit * OVERLOAD_CUT).max(1.0);
                    self.last_cut = Some(now);
                }
                return;
            }
            Signal::Ok => {}
        }
        let per_token = sample.latency.as_secs_f64() / sample.tokens.max(1) as f64;
        self.baseline.update(per_token, now);
        if sample.in_flight_at_start <= 1 {
            self.last_alone = Some(now);
            self.probing = false;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(sample.latency);
        if !adaptive {
            // Back toward the pinned value after a 429 cut it: one per round trip.
            self.limit = (self.limit + 1.0 / self.limit).min(max as f64);
            return;
        }
        let baseline = self.baseline.get().unwrap_or(per_token);
        let n = sample.in_flight_at_start.max(1) as f64;
        let queued = n * (1.0 - baseline / per_token.max(f64::MIN_POSITIVE));
        let step = 1.0 / self.limit;
        let over_slo = self.slo.is_some_and(|slo| sample.latency > slo && self.p95() > slo);
        // One more in flight adds about one request's service time to each latency.
        let room_under_slo = self.slo.is_none_or(|slo| sample.latency.mul_f64((n + 1.0) / n) <= slo);
        // Grow only a limit in use: an endpoint with spare slots has no latency to learn from.
        let in_use = n >= self.limit.floor();
        if queued > SHRINK_ABOVE || over_slo {
            self.limit = (self.limit - step).max(1.0);
        } else if queued < GROW_BELOW && in_use && room_under_slo {
            self.limit = (self.limit + step).min(max as f64);
        }
        if self.last_alone.is_none_or(|at| now.saturating_duration_since(at) >= PROBE_EVERY) {
            self.probing = true;
        }
    }

    /// The 95th percentile of the recent latencies.
    fn p95(&self) -> Duration {
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        let rank = (sorted.len() * 95).div_ceil(100).saturating_sub(1);
        sorted.get(rank).copied().unwrap_or_default()
    }
}

/// The least value over the current and the previous window: old minima expire, so the baseline
/// follows an endpoint that got slower, without forgetting it within one window.
#[derive(Debug, Default)]
struct WindowedMin {
    current: Option<(Instant, f64)>,
    previous: Option<f64>,
}

impl WindowedMin {
    fn update(&mut self, value: f64, now: Instant) {
        match &mut self.current {
            Some((start, min)) if now.saturating_duration_since(*start) < BASELINE_WINDOW => *min = min.min(value),
            current => {
                self.previous = current.map(|(_, min)| min);
                *current = Some((now, value));
            }
        }
    }

    fn get(&self) -> Option<f64> {
        let current = self.current.map(|(_, min)| min);
        match (current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TEI GPU as the limiter sees it at a steady backlog: each request takes `service`, and
    /// one dispatched with `n` in flight waits for the `n - 1` ahead of it.
    fn drive(limit: &ConcurrencyLimit, service: Duration, rounds: usize, start: Instant) -> Instant {
        let mut now = start;
        for _ in 0..rounds {
            let n = limit.limit();
            let mut slots = Vec::new();
            while let Some(at_start) = limit.try_acquire(usize::MAX, 0, 0) {
                slots.push(at_start);
            }
            assert_eq!(slots.len(), n);
            for at_start in slots {
                now += service;
                let latency = service * at_start as u32;
                limit
                    .on_done(Sample { latency, tokens: 13_376, in_flight_at_start: at_start, signal: Signal::Ok }, now);
            }
        }
        now
    }

    #[test]
    fn grows_to_about_one_request_queued_and_holds() {
        let limit = ConcurrencyLimit::new(Concurrency::Adaptive, 16, None);
        assert_eq!(limit.limit(), 1);
        let now = drive(&limit, Duration::from_millis(690), 20, Instant::now());
        assert_eq!(limit.limit(), 2, "one running, one waiting: the GPU never idles, nothing more queues");
        // A GPU whose latency does not grow with load (room to batch) lets it grow to the cap.
        let flat = ConcurrencyLimit::new(Concurrency::Adaptive, 16, None);
        let mut t = now;
        for _ in 0..300 {
            let mut slots = Vec::new();
            while let Some(at_start) = flat.try_acquire(usize::MAX, 0, 0) {
                slots.push(at_start);
            }
            for at_start in slots {
                t += Duration::from_millis(10);
                let latency = Duration::from_millis(100);
                flat.on_done(Sample { latency, tokens: 100, in_flight_at_start: at_start, signal: Signal::Ok }, t);
            }
        }
        assert_eq!(flat.limit(), 16);
    }

    #[test]
    fn shrinks_on_queueing_and_on_overload() {
        let limit = ConcurrencyLimit::new(Concurrency::Adaptive, 16, None);
        let now = drive(&limit, Duration::from_millis(100), 5, Instant::now());
        let before = limit.state.lock().limit;
        // Four times the unloaded latency at two in flight: three queued ahead.
        let queued =
            Sample { latency: Duration::from_millis(800), tokens: 13_376, in_flight_at_start: 2, signal: Signal::Ok };
        limit.try_acquire(usize::MAX, 0, 0);
        limit.on_done(queued, now);
        assert!(limit.state.lock().limit < before);
        let state_before = limit.state.lock().limit;
        limit.try_acquire(usize::MAX, 0, 0);
        let overload = Sample { signal: Signal::Overload, ..queued };
        limit.on_done(overload, now + Duration::from_secs(1));
        assert!((limit.state.lock().limit - (state_before * OVERLOAD_CUT).max(1.0)).abs() < 1e-9);
        assert_eq!(limit.in_flight(), 0);
    }

    #[test]
    fn the_slo_bounds_growth() {
        let slo = Some(Duration::from_millis(1000));
        let limit = ConcurrencyLimit::new(Concurrency::Adaptive, 16, slo);
        // Flat latency of 400 ms: without an SLO it would grow to 16; 3 × 400 ms > 1 s stops it.
        let mut t = Instant::now();
        for _ in 0..300 {
            let Some(at_start) = limit.try_acquire(usize::MAX, 0, 0) else { break };
            t += Duration::from_millis(10);
            let latency = Duration::from_millis(400) * at_start as u32;
            limit.on_done(Sample { latency, tokens: 100, in_flight_at_start: at_start, signal: Signal::Ok }, t);
        }
        assert!(limit.limit() <= 2, "{}", limit.limit());
    }

    #[test]
    fn probes_alone_when_the_baseline_is_old() {
        let limit = ConcurrencyLimit::new(Concurrency::Adaptive, 16, None);
        let t = drive(&limit, Duration::from_millis(100), 10, Instant::now());
        assert_eq!(limit.limit(), 2);
        // Past PROBE_EVERY with every request queued behind another: held at 1 until one alone.
        let later = t + PROBE_EVERY + Duration::from_secs(1);
        limit.try_acquire(usize::MAX, 0, 0);
        let s =
            Sample { latency: Duration::from_millis(200), tokens: 13_376, in_flight_at_start: 2, signal: Signal::Ok };
        limit.on_done(s, later);
        assert_eq!(limit.limit(), 1);
        limit.try_acquire(usize::MAX, 0, 0);
        limit.on_done(Sample { in_flight_at_start: 1, latency: Duration::from_millis(100), ..s }, later);
        assert_eq!(limit.limit(), 2);
    }

    #[test]
    fn a_pinned_limit_gives_way_to_429_only_and_grows_back() {
        let limit = ConcurrencyLimit::new(Concurrency::Fixed(8), 16, None);
        assert_eq!((limit.limit(), limit.max()), (8, 8));
        let t = Instant::now();
        let s = Sample { latency: Duration::from_millis(100), tokens: 100, in_flight_at_start: 8, signal: Signal::Ok };
        limit.try_acquire(usize::MAX, 0, 0);
        limit.on_done(Sample { signal: Signal::Overload, ..s }, t);
        assert_eq!(limit.limit(), 8, "a 503 or a timeout does not move a pinned limit");
        limit.try_acquire(usize::MAX, 0, 0);
        limit.on_done(Sample { signal: Signal::NoPermit, ..s }, t);
        assert_eq!(limit.limit(), 6, "a 429: the permits are shared, give way");
        // A burst of 429s from the same moment is one signal.
        limit.try_acquire(usize::MAX, 0, 0);
        limit.on_done(Sample { signal: Signal::NoPermit, ..s }, t);
        assert_eq!(limit.limit(), 6);
        let back = drive(&limit, Duration::from_millis(100), 10, t);
        assert_eq!(limit.limit(), 8, "back to the pinned value, never past it");
        drive(&limit, Duration::from_millis(100), 10, back);
        assert_eq!(limit.limit(), 8);
    }

    #[test]
    fn fixed_stays_put_within_the_permits() {
        let limit = ConcurrencyLimit::new(Concurrency::Fixed(32), 16, None);
        assert_eq!((limit.limit(), limit.is_adaptive()), (16, false));
        drive(&limit, Duration::from_millis(100), 3, Instant::now());
        assert_eq!(limit.limit(), 16);
        let mut window = WindowedMin::default();
        let t = Instant::now();
        window.update(1.0, t);
        window.update(2.0, t + BASELINE_WINDOW);
        assert_eq!(window.get(), Some(1.0), "the previous window still counts");
        window.update(3.0, t + BASELINE_WINDOW * 2);
        assert_eq!(window.get(), Some(2.0), "two windows old: forgotten");
    }

    #[test]
    fn the_floor_lets_a_server_batch_wait_and_never_past_the_permits() {
        let floor = Floor::batches(16_384, None);
        assert_eq!(floor, Floor { tokens: 20_480, inputs: None });
        let limit = ConcurrencyLimit::new(Concurrency::Adaptive, 16, None).with_floor(floor);
        assert_eq!(limit.limit(), 1);
        // Small requests (1,100 padded tokens each): in while the endpoint holds at most 1.25
        // batches, even though the latency limit is 1.
        let mut tokens = 0;
        let mut taken = 0;
        while let Some(n) = limit.try_acquire(usize::MAX, tokens + 1_100, 0) {
            tokens += 1_100;
            taken = n;
        }
        assert_eq!(taken, 16, "the permits (max) cap it: 16 × 1,100 is under the floor");
        // Large requests: the floor lets the first in, the latency limit decides the rest.
        let big = ConcurrencyLimit::new(Concurrency::Adaptive, 16, None).with_floor(floor);
        assert_eq!(big.try_acquire(usize::MAX, 13_376, 0), Some(1));
        assert_eq!(big.try_acquire(usize::MAX, 26_752, 0), None);
        // A breaker's probe cap holds under the floor too.
        let probing = ConcurrencyLimit::new(Concurrency::Adaptive, 16, None).with_floor(floor);
        assert_eq!(probing.try_acquire(1, 100, 0), Some(1));
        assert_eq!(probing.try_acquire(1, 200, 0), None);
        // Where the server caps a batch's inputs (a CPU router: 4), inputs count too.
        let cpu = ConcurrencyLimit::new(Concurrency::Adaptive, 16, None).with_floor(Floor::batches(16_384, Some(4)));
        assert_eq!(cpu.try_acquire(usize::MAX, 100, 4), Some(1));
        assert_eq!(cpu.try_acquire(usize::MAX, 200, 8), None, "8 inputs > 1.25 batches of 4");
        // A pinned limit has none.
        let pinned = ConcurrencyLimit::new(Concurrency::Fixed(1), 16, None).with_floor(floor);
        assert_eq!(pinned.try_acquire(usize::MAX, 100, 1), Some(1));
        assert_eq!(pinned.try_acquire(usize::MAX, 200, 2), None);
    }
}
