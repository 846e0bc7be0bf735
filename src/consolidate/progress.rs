//! Progress of a consolidate run: rows done of the current phase (reading, merging) as a bar on a
//! terminal, a `tracing` line every 10 seconds otherwise. It only reads the counters the run
//! bumps ([`Figures`]); it never blocks the run.

use std::io::IsTerminal;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tweet_embed_operators::table::consolidate::Figures;

/// How often a line is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The background reporter; stops when dropped.
pub struct Reporter {
    figures: Arc<Figures>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting.
    pub fn start() -> Reporter {
        let figures = Arc::new(Figures::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (figures.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("consolidate-progress".into()).spawn(move || report(&f, &s)).ok();
        Reporter { figures, stop, thread }
    }
}

impl Deref for Reporter {
    type Target = Figures;

    /// The figures the run updates.
    fn deref(&self) -> &Figures {
        &self.figures
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn report(figures: &Figures, stop: &AtomicBool) {
    let tty = std::io::stderr().is_terminal();
    let bar =
        if tty { ProgressBar::new(0) } else { ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden()) };
    bar.set_style(
        ProgressStyle::with_template("{msg:14} {bar:40} {pos}/{len} · {per_sec} · ETA {eta} · {prefix}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut shown = "";
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let (phase, total) = figures.current();
        let rows = figures.rows.load(Ordering::Relaxed);
        let mib = figures.bytes.load(Ordering::Relaxed) as f64 / (1u64 << 20) as f64;
        if tty {
            if phase != shown {
                bar.reset();
                bar.set_length(total);
                bar.set_message(phase);
                shown = phase;
            }
            bar.set_position(rows);
            bar.set_prefix(format!("{mib:.0} MiB read"));
        } else if last_log.elapsed() >= LOG_EVERY && !phase.is_empty() {
            tracing::info!(
                phase,
                rows,
                total,
                mib_read = mib as u64,
                elapsed_s = started.elapsed().as_secs(),
                "consolidate progress"
            );
            last_log = Instant::now();
        }
    }
    bar.finish_and_clear();
}
