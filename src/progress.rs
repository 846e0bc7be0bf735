//! Progress of a run: done / total (total = done + the work queue's hinted count, recounted every
//! 30 s), docs/s and tok/s (EWMA), ETA, rejects, retries, per-endpoint in-flight/limit, the
//! committed (frontier) epoch and its age, and in continuous mode the stream's lag (now − cluster
//! time of the last position committed). A bar on a terminal (indicatif), structured `tracing`
//! lines every 10 s otherwise.
//!
//! It only reads counters and counts the queue through its index from its own thread; it never
//! slows the pipeline down.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tweet_embed_operators::checkpoint::CommitTotals;
use tweet_embed_operators::tei::EndpointPool;
use tweet_embed_operators::work_queue::WorkQueue;

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
    pub compaction: Option<Arc<tweet_embed_operators::compaction::CompactionStats>>,
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

/// Seconds until `remaining` documents are done at `docs_per_s`; `None` (shown as unknown) while
/// nothing moves, rather than a count of seconds longer than the universe is old.
pub fn eta_seconds(remaining: u64, docs_per_s: f64) -> Option<f64> {
    if remaining == 0 {
        return Some(0.0);
    }
    // Under one document every 100 s is not a rate to extrapolate from.
    if !docs_per_s.is_finite() || docs_per_s < 0.01 {
        return None;
    }
    Some(remaining as f64 / docs_per_s)
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

fn report(sources: ProgressSources, stop: Arc<AtomicBool>) {
    let totals = &sources.totals;
    let tty = std::io::stderr().is_terminal();
    let bar = if tty { ProgressBar::new(0) } else { ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} · {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let done_now = || totals.embedded.load(Ordering::Relaxed) + totals.rejected.load(Ordering::Relaxed);
    let mut queue = count(&sources, done_now());
    let (mut last_docs, mut last_tokens, mut last_t) =
        (done_now(), totals.tokens.load(Ordering::Relaxed), Instant::now());
    let (mut docs_rate, mut tok_rate) = (0.0f64, 0.0f64);
    let mut last_log = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let embedded = totals.embedded.load(Ordering::Relaxed);
        let rejected = totals.rejected.load(Ordering::Relaxed);
        let done = embedded + rejected;
        let tokens = totals.tokens.load(Ordering::Relaxed);
        let epoch = totals.committed_epoch.load(Ordering::Relaxed);
        let dt = last_t.elapsed().as_secs_f64();
        if dt >= 1.0 {
            // EWMA over about five seconds.
            let a = (dt / 5.0).min(1.0);
            docs_rate += a * (done.saturating_sub(last_docs) as f64 / dt - docs_rate);
            tok_rate += a * (tokens.saturating_sub(last_tokens) as f64 / dt - tok_rate);
            (last_docs, last_tokens, last_t) = (done, tokens, Instant::now());
        }
        if queue.as_ref().is_some_and(|q| q.at.elapsed() >= Duration::from_secs(30)) {
            queue = count(&sources, done).or(queue);
        }
        let remaining = queue.as_ref().map(|q| q.remaining.saturating_sub(done - q.done_then.min(done)));
        let total = remaining.map(|r| done + r);
        let eta_s = remaining.and_then(|r| eta_seconds(r, docs_rate));
        // An epoch's age on the steady clock it was stamped with; the stream's lag against the
        // wall clock, as cluster times are the server's wall clock.
        let steady_now = tweet_embed_operators::clock::steady_ms().max(0) as u64;
        let committed_at = totals.committed_at_ms.load(Ordering::Relaxed);
        let epoch_age_s = if committed_at > 0 { steady_now.saturating_sub(committed_at) as f64 / 1e3 } else { 0.0 };
        let stream_s = totals.stream_time_s.load(Ordering::Relaxed);
        let wall_s = tweet_embed_operators::clock::wall_ms().max(0) as u64 / 1000;
        let lag_s = (stream_s > 0).then(|| wall_s.saturating_sub(stream_s));
        let pool = sources.pool.as_ref().map(|p| p.stats());
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
            "{docs_rate:.0} docs/s · {tok_rate:.0} tok/s{padding} · ETA {} · {rejected} rejected · {retries} retries · in-flight/limit {endpoints} · epoch {epoch} ({epoch_age_s:.1}s ago){lag} · staged {staged_mib:.1} MiB · {} compacted · {} deletions pending",
            eta_s.map_or("unknown".into(), eta),
            c.compactions,
            c.deletions_pending
        );
        if tty {
            bar.set_length(total.unwrap_or(done));
            bar.set_position(done);
            bar.set_message(msg);
        } else if last_log.elapsed() >= Duration::from_secs(10) {
            tracing::info!(
                done,
                total,
                embedded,
                rejected,
                docs_per_s = docs_rate as u64,
                tok_per_s = tok_rate as u64,
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
        assert_eq!(eta_seconds(20_000, 0.0), None);
        assert_eq!(eta_seconds(20_000, 1e-9), None);
        assert_eq!(eta_seconds(20_000, f64::NAN), None);
        assert_eq!(eta_seconds(0, 0.0), Some(0.0));
        assert_eq!(eta_seconds(20_000, 100.0), Some(200.0));
        assert_eq!(eta(200.0), "3m20s");
        assert_eq!(eta(f64::INFINITY), "unknown");
    }
}
