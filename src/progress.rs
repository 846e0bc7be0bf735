//! Progress of a run as the committer sees it: documents embedded and rejected, docs/s and
//! tok/s, the committed (frontier) epoch and its age, and in continuous mode the stream's lag
//! (now − cluster time of the last event committed). A bar on a terminal (indicatif), structured `tracing` lines
//! otherwise. It only reads counters; it never slows the pipeline down.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tweet_embed_operators::commit::CommitTotals;

/// A background reporter; stops when dropped or on [`Reporter::stop`].
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting `totals` (to a bar when stderr is a terminal).
    pub fn start(totals: Arc<CommitTotals>) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("progress".into()).spawn(move || report(totals, s)).ok();
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

fn report(totals: Arc<CommitTotals>, stop: Arc<AtomicBool>) {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = Instant::now();
    let (mut last_docs, mut last_tokens, mut last_t) = (0u64, 0u64, Instant::now());
    let (mut docs_rate, mut tok_rate) = (0.0f64, 0.0f64);
    let mut last_log = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let embedded = totals.embedded.load(Ordering::Relaxed);
        let rejected = totals.rejected.load(Ordering::Relaxed);
        let tokens = totals.tokens.load(Ordering::Relaxed);
        let epoch = totals.committed_epoch.load(Ordering::Relaxed);
        let dt = last_t.elapsed().as_secs_f64();
        if dt >= 1.0 {
            // EWMA over about five seconds.
            let a = (dt / 5.0).min(1.0);
            docs_rate += a * ((embedded + rejected - last_docs) as f64 / dt - docs_rate);
            tok_rate += a * ((tokens - last_tokens) as f64 / dt - tok_rate);
            (last_docs, last_tokens, last_t) = (embedded + rejected, tokens, Instant::now());
        }
        let now_ms = tweet_embed_operators::output::now_ms().max(0) as u64;
        let committed_at = totals.committed_at_ms.load(Ordering::Relaxed);
        let epoch_age_s = if committed_at > 0 { now_ms.saturating_sub(committed_at) as f64 / 1e3 } else { 0.0 };
        let stream_s = totals.stream_time_s.load(Ordering::Relaxed);
        let lag_s = (stream_s > 0).then(|| (now_ms / 1000).saturating_sub(stream_s));
        let lag = lag_s.map(|l| format!(" · stream lag {l} s")).unwrap_or_default();
        let msg = format!(
            "{embedded} embedded, {rejected} rejected · {docs_rate:.0} docs/s · {tok_rate:.0} tok/s · epoch {epoch} ({epoch_age_s:.1} s ago){lag}"
        );
        if tty {
            bar.set_message(msg);
            bar.tick();
        } else if last_log.elapsed() >= Duration::from_secs(10) {
            tracing::info!(
                embedded,
                rejected,
                docs_per_s = docs_rate as u64,
                tok_per_s = tok_rate as u64,
                epoch,
                epoch_age_s,
                stream_lag_s = lag_s,
                elapsed_s = started.elapsed().as_secs(),
                "progress"
            );
            last_log = Instant::now();
        }
    }
    bar.finish_and_clear();
}
