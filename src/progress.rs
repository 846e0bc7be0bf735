//! Progress of a run: done / total (total = done + the work queue's hinted count, recounted every
//! 30 s), the documents embedded but not yet committed beside them, docs/s and tok/s, ETA,
//! rejects, retries, per-endpoint in-flight/limit, the committed (frontier) epoch and its age,
//! and in continuous mode the stream's lag (now − cluster time of the last position committed).
//! A bar on a terminal (indicatif), structured `tracing` lines every 10 s otherwise.
//!
//! Done is what is committed (written and marked), which moves in steps, one per epoch; a large
//! epoch would leave it still for minutes while every GPU is busy. So the line also shows the work
//! not committed yet ([`Work`]: the TEI pool's answered inputs since the last commit), and the
//! rates and ETA come from that sum over a sliding window ([`RateWindow`], [`RATE_WINDOW`]), which
//! does not jump when an epoch commits.
//!
//! It only reads counters and counts the queue through its index from its own thread; it never
//! slows the pipeline down.

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tweet_embed_operators::mongo::work_queue::WorkQueue;
use tweet_embed_operators::run::status::eta_seconds;
use tweet_embed_operators::table::checkpoint::CommitTotals;
use tweet_embed_operators::tei::{EndpointPool, PoolStats};

/// What the reporter reads.
#[derive(Clone)]
pub struct ProgressSources {
    /// Committed totals.
    pub totals: Arc<CommitTotals>,
    /// The TEI pool, for retries and per-endpoint figures.
    pub pool: Option<Arc<EndpointPool>>,
    /// The work queue and a runtime to count it on, for the total and ETA.
    pub queue: Option<(WorkQueue, tokio::runtime::Handle)>,
    /// Compaction and deletions: staged bytes, compacted files, pending deletions.
    pub compaction: Option<Arc<tweet_embed_operators::table::compaction::CompactionStats>>,
}

/// A background reporter; stops when dropped or on [`Reporter::stop`].
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting (to a bar when stderr is a terminal).
    pub fn start(sources: ProgressSources) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("progress".into()).spawn(move || report(sources, s)).ok();
        Reporter { stop, thread }
    }

    /// Stops and waits for the last report.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The work queue's size as of the last count, and the documents done then.
struct QueueCount {
    remaining: u64,
    done_then: u64,
    at: Instant,
}

fn count(sources: &ProgressSources, done: u64) -> Option<QueueCount> {
    let (queue, rt) = sources.queue.as_ref()?;
    let remaining = rt.block_on(queue.remaining()).ok()?;
    Some(QueueCount { remaining, done_then: done, at: Instant::now() })
}

fn eta(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "unknown".into();
    }
    let s = seconds as u64;
    match s {
        0..=99 => format!("{s}s"),
        100..=5_999 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// The span rates and the ETA are measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);
/// No rate until the samples span this long: a count over a fraction of a second is noise.
const MIN_RATE_SPAN: Duration = Duration::from_secs(2);

/// A rate over a sliding window of `(time, count)` samples: the count's change from the oldest
/// sample in the window to the newest, over their span. A step in the count (an epoch
/// committing) moves it by at most step / window, and only while the step is in the window,
/// where an EWMA of the count would spike.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// An empty window of `window`.
    pub fn new(window: Duration) -> RateWindow {
        RateWindow { window, samples: VecDeque::new() }
    }

    /// Adds the count at `at` (samples come in time order), forgetting the samples the window
    /// no longer needs: it keeps one at or before its start, so its span is the whole window.
    pub fn push(&mut self, at: Instant, count: u64) {
        self.samples.push_back((at, count));
        if let Some(start) = at.checked_sub(self.window) {
            while self.samples.get(1).is_some_and(|(t, _)| *t <= start) {
                self.samples.pop_front();
            }
        }
    }

    /// Per second over the window; `None` until the samples span [`MIN_RATE_SPAN`]. A count
    /// that went down (work counted as in flight that a commit did not bring) counts as none.
    pub fn per_second(&self) -> Option<f64> {
        let ((t0, c0), (t1, c1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1.saturating_duration_since(*t0);
        (span >= MIN_RATE_SPAN).then(|| c1.saturating_sub(*c0) as f64 / span.as_secs_f64())
    }
}

/// Work done, committed or not, from what the reporter can read: the committed totals, and the
/// TEI pool's answered inputs (embedded or refused) and their tokens. Not yet committed is
/// the pool's answers since the last commit the reporter saw. It is a floor: texts answered
/// before that commit for a later epoch, copies of a text sent once and vector-cache hits count
/// when they commit; and on a cluster the leading process sees its own pool only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Documents committed (embedded and rejected) when last seen.
    committed: u64,
    /// The pool's answered inputs and their tokens at the last commit seen.
    pool_at_commit: (u64, u64),
}

/// What [`Work::update`] reads off the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Documents committed: embedded and rejected.
    pub committed: u64,
    /// Tokens of the committed documents.
    pub committed_tokens: u64,
    /// Inputs the TEI pool answered (embedded or refused) since it connected.
    pub pool_answered: u64,
    /// Their tokens as the pool's budget counted them.
    pub pool_tokens: u64,
}

/// Documents and tokens not yet committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uncommitted {
    /// Documents embedded (or refused by the servers) and not committed yet.
    pub docs: u64,
    /// Their tokens.
    pub tokens: u64,
}

impl Work {
    /// Starts from `c`: what the pool answered so far is taken as committed or never to be.
    pub fn new(c: Counts) -> Work {
        Work { committed: c.committed, pool_at_commit: (c.pool_answered, c.pool_tokens) }
    }

    /// The work not yet committed as of `c`; a change of the committed count is a commit, from
    /// which the pool's answers count again.
    pub fn update(&mut self, c: Counts) -> Uncommitted {
        if c.committed != self.committed {
            self.committed = c.committed;
            self.pool_at_commit = (c.pool_answered, c.pool_tokens);
        }
        Uncommitted {
            docs: c.pool_answered.saturating_sub(self.pool_at_commit.0),
            tokens: c.pool_tokens.saturating_sub(self.pool_at_commit.1),
        }
    }
}

/// The start of the progress line: documents committed (of the total, when counted), those not
/// committed yet, and the rates (`None` while measuring). One string, so that a redraw never
/// shows one figure of a tick beside another of the tick before.
pub fn headline(
    done: u64,
    total: Option<u64>,
    uncommitted: u64,
    docs_per_s: Option<f64>,
    tok_per_s: Option<f64>,
) -> String {
    let of = total.map(|t| format!("/{}", HumanCount(t))).unwrap_or_default();
    let rates = match (docs_per_s, tok_per_s) {
        (Some(d), Some(t)) => format!("{d:.0} docs/s · {t:.0} tok/s"),
        _ => "measuring docs/s, tok/s".to_string(),
    };
    format!("{}{of} done · {} embedded, not yet committed · {rates}", HumanCount(done), HumanCount(uncommitted))
}

fn report(sources: ProgressSources, stop: Arc<AtomicBool>) {
    let totals = &sources.totals;
    let tty = std::io::stderr().is_terminal();
    let bar = if tty { ProgressBar::new(0) } else { ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let counts = |pool: Option<&PoolStats>| Counts {
        committed: totals.embedded.load(Ordering::Relaxed) + totals.rejected.load(Ordering::Relaxed),
        committed_tokens: totals.tokens.load(Ordering::Relaxed),
        pool_answered: pool.map_or(0, |p| p.embedded_inputs + p.rejected_inputs),
        pool_tokens: pool.map_or(0, |p| p.budget_tokens),
    };
    let first = counts(sources.pool.as_ref().map(|p| p.stats()).as_ref());
    let mut work = Work::new(first);
    let mut queue = count(&sources, first.committed);
    let (mut docs_window, mut tok_window) = (RateWindow::new(RATE_WINDOW), RateWindow::new(RATE_WINDOW));
    let mut last_log = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let embedded = totals.embedded.load(Ordering::Relaxed);
        let rejected = totals.rejected.load(Ordering::Relaxed);
        let pool = sources.pool.as_ref().map(|p| p.stats());
        let now = counts(pool.as_ref());
        let done = now.committed;
        let uncommitted = work.update(now);
        let epoch = totals.committed_epoch.load(Ordering::Relaxed);
        let at = Instant::now();
        docs_window.push(at, done + uncommitted.docs);
        tok_window.push(at, now.committed_tokens + uncommitted.tokens);
        let (docs_per_s, tok_per_s) = (docs_window.per_second(), tok_window.per_second());
        if queue.as_ref().is_some_and(|q| q.at.elapsed() >= Duration::from_secs(30)) {
            queue = count(&sources, done).or(queue);
        }
        let remaining = queue.as_ref().map(|q| q.remaining.saturating_sub(done - q.done_then.min(done)));
        let total = remaining.map(|r| done + r);
        // What is embedded already is not left to do.
        let eta_s = remaining.and_then(|r| eta_seconds(r.saturating_sub(uncommitted.docs), docs_per_s.unwrap_or(0.0)));
        // An epoch's age on the steady clock it was stamped with; the stream's lag against the
        // wall clock, as cluster times are the server's wall clock.
        let steady_now = tweet_embed_operators::clock::steady_ms().max(0) as u64;
        let committed_at = totals.committed_at_ms.load(Ordering::Relaxed);
        let epoch_age_s = if committed_at > 0 { steady_now.saturating_sub(committed_at) as f64 / 1e3 } else { 0.0 };
        let stream_s = totals.stream_time_s.load(Ordering::Relaxed);
        let wall_s = tweet_embed_operators::clock::wall_ms().max(0) as u64 / 1000;
        let lag_s = (stream_s > 0).then(|| wall_s.saturating_sub(stream_s));
        let retries = pool.as_ref().map_or(0, |p| p.retries);
        let real_share = pool.as_ref().and_then(|p| p.real_share());
        let padding = real_share.map(|r| format!(" · padding {:.0}%", (1.0 - r) * 100.0)).unwrap_or_default();
        let endpoints = pool
            .as_ref()
            .map(|p| {
                p.endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("{i}:{}/{}", e.in_flight, e.concurrency_limit))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let lag = lag_s.map(|l| format!(" · stream lag {l}s")).unwrap_or_default();
        let c = sources.compaction.as_ref().map(|c| c.snapshot()).unwrap_or_default();
        let staged_mib = c.staged_bytes as f64 / (1u64 << 20) as f64;
        let msg = format!(
            "{}{padding} · ETA {} · {rejected} rejected · {retries} retries · in-flight/limit {endpoints} · epoch {epoch} ({epoch_age_s:.1}s ago){lag} · staged {staged_mib:.1} MiB · {} compacted · {} deletions pending",
            headline(done, total, uncommitted.docs, docs_per_s, tok_per_s),
            eta_s.map_or("unknown".into(), eta),
            c.compactions,
            c.deletions_pending
        );
        if tty {
            // The figures are all in the message, set last: a redraw the bar skips (it draws at
            // most so often) leaves the bar's fill behind, never a mix of figures.
            bar.set_length(total.unwrap_or(done));
            bar.set_position(done);
            bar.set_message(msg);
        } else if last_log.elapsed() >= Duration::from_secs(10) {
            tracing::info!(
                done,
                total,
                embedded,
                rejected,
                uncommitted = uncommitted.docs,
                docs_per_s = docs_per_s.map(|r| r as u64),
                tok_per_s = tok_per_s.map(|r| r as u64),
                eta_s = eta_s.map(|s| s as u64),
                retries,
                real_over_computed_tokens = real_share,
                endpoints = %endpoints,
                epoch,
                epoch_age_s,
                stream_lag_s = lag_s,
                staged_bytes = c.staged_bytes,
                compacted_files = c.compactions,
                deletions_pending = c.deletions_pending,
                elapsed_s = started.elapsed().as_secs(),
                "progress"
            );
            last_log = Instant::now();
        }
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_is_an_unknown_eta_not_a_huge_one() {
        assert_eq!(eta(200.0), "3m20s");
        assert_eq!(eta(f64::INFINITY), "unknown");
    }

    #[test]
    fn the_window_rate_needs_a_span_and_forgets_what_left_the_window() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut w = RateWindow::new(Duration::from_secs(30));
        w.push(at(0.0), 0);
        w.push(at(1.0), 500);
        assert_eq!(w.per_second(), None, "one second is no rate");
        w.push(at(2.0), 1_000);
        assert_eq!(w.per_second(), Some(500.0));
        // A minute at 100/s: the first seconds at 500/s have left the window.
        for i in 1..=240u32 {
            w.push(at(2.0 + f64::from(i) * 0.25), 1_000 + 25 * u64::from(i));
        }
        assert_eq!(w.per_second(), Some(100.0));
        // A step of 3,000 moves the rate by 3,000 / 30 s while it is in the window, then not at all.
        w.push(at(62.25), 7_025 + 3_000);
        assert_eq!(w.per_second(), Some(100.0 + 3_000.0 / 30.0));
        for i in 1..=200u32 {
            w.push(at(62.25 + f64::from(i) * 0.25), 10_025 + 25 * u64::from(i));
        }
        assert_eq!(w.per_second(), Some(100.0));
        // A count that went down is no negative rate.
        let mut down = RateWindow::new(Duration::from_secs(30));
        down.push(at(0.0), 500);
        down.push(at(5.0), 400);
        assert_eq!(down.per_second(), Some(0.0));
    }

    /// One epoch of 8,800 documents on slow GPUs (100 answers a second, 20 tokens each) that
    /// commits after 88 s: the line shows the work as it is embedded, the rate holds at 100
    /// docs/s before and after the commit, and the ETA counts down instead of staying unknown.
    #[test]
    fn a_long_epoch_shows_its_uncommitted_work_and_a_steady_rate() {
        let t0 = Instant::now();
        let c = |committed: u64, answered: u64| Counts {
            committed,
            committed_tokens: committed * 20,
            pool_answered: answered,
            pool_tokens: answered * 20,
        };
        let mut work = Work::new(c(0, 0));
        let (mut docs, mut toks) = (RateWindow::new(RATE_WINDOW), RateWindow::new(RATE_WINDOW));
        let queue = 40_000u64;
        let mut seen = Vec::new();
        for tick in 1..=480u64 {
            let answered = tick * 25;
            let committed = if tick >= 352 { 8_800 } else { 0 };
            let now = c(committed, answered);
            let u = work.update(now);
            let at = t0 + Duration::from_millis(250 * tick);
            docs.push(at, now.committed + u.docs);
            toks.push(at, now.committed_tokens + u.tokens);
            let eta_s = eta_seconds((queue - committed).saturating_sub(u.docs), docs.per_second().unwrap_or(0.0));
            seen.push((tick, committed, u, docs.per_second(), toks.per_second(), eta_s));
        }
        let at_s = |s: u64| seen[(s * 4 - 1) as usize];
        // 60 s in: nothing committed, 6,000 embedded, 100 docs/s, 2,000 tok/s, 340 s to go.
        let (_, committed, u, d, t, eta_s) = at_s(60);
        assert_eq!((committed, u.docs, u.tokens), (0, 6_000, 120_000));
        assert_eq!(
            headline(committed, Some(queue), u.docs, d, t),
            "0/40,000 done · 6,000 embedded, not yet committed · 100 docs/s · 2000 tok/s"
        );
        assert_eq!(eta_s, Some(340.0));
        // Right after the commit at 88 s, and after: the rate holds, the ETA keeps counting down.
        for (_, _, _, d, _, _) in &seen[(89 * 4)..] {
            assert_eq!(*d, Some(100.0));
        }
        let (_, committed, u, _, _, eta_s) = at_s(100);
        assert_eq!((committed, u.docs), (8_800, 1_200));
        assert_eq!(eta_s, Some(300.0));
        assert_eq!(
            headline(1_200, None, 0, None, None),
            "1,200 done · 0 embedded, not yet committed · measuring docs/s, tok/s"
        );
    }
}
