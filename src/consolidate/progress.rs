//! Progress of a consolidate run: rows done of the current phase (reading, merging) as a bar on a
//! terminal, a `tracing` line every 10 seconds otherwise. It only reads a counter the run bumps;
//! it never blocks the run.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;

/// How often a line is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The figures the reporter shows; the run updates them.
#[derive(Default)]
pub struct Figures {
    /// Rows done in the current phase.
    pub rows: AtomicU64,
    /// Input bytes read (the reading phase only).
    pub bytes: AtomicU64,
    phase: Mutex<(&'static str, u64)>,
}

impl Figures {
    /// Starts `phase` with `total` rows to do.
    pub fn phase(&self, phase: &'static str, total: u64) {
        *self.phase.lock() = (phase, total);
        self.rows.store(0, Ordering::Relaxed);
    }
}

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

    /// The figures to update.
    pub fn figures(&self) -> &Figures {
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
        let (phase, total) = *figures.phase.lock();
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
