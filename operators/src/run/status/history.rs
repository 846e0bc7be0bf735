//! The rate history of `status`: a small JSON-lines file, `status-history.jsonl` in the state
//! directory, of `(time, processed count)` samples, one per `status` run or `--watch` refresh.
//!
//! It exists because one checkpoint file gives a position, not a speed, and the pipeline's
//! committer is not ours to change. It owns only that file: it never touches the checkpoint or
//! anything else in the state directory. The file is bounded to [`MAX_SAMPLES`] lines and replaced
//! atomically (temp file, fsync, rename), so a crash leaves the old or the new history. It is a
//! convenience, not a record: unreadable lines are skipped, and losing the file only means the
//! next rate is "measuring" again.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The history file's name in the state directory.
pub const FILE_NAME: &str = "status-history.jsonl";
/// Samples kept: 10 minutes of 1 s refreshes, or an hour of the default 5 s ones.
pub const MAX_SAMPLES: usize = 720;

/// One measurement of the collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was measured, ms since the Unix epoch.
    pub at_ms: i64,
    /// `db.collection:mark_field`, so that pointing `status` at another collection with the same
    /// state directory does not mix two collections' counts into one rate.
    pub ns: String,
    /// Documents marked `true` or `false`.
    pub processed: u64,
    /// Documents left in the work queue.
    pub remaining: u64,
}

/// Documents per second over a span of samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rate {
    /// Processed documents per second.
    pub docs_per_s: f64,
    /// Seconds between the oldest and newest sample used.
    pub span_s: f64,
    /// Samples in that span, both ends included.
    pub samples: usize,
}

/// The samples of one state directory (or of this process only, without one).
#[derive(Debug, Default)]
pub struct History {
    path: Option<PathBuf>,
    samples: Vec<Sample>,
}

impl History {
    /// A history kept in memory only: a `--watch` without `--state-dir` still gets a rate.
    pub fn in_memory() -> History {
        History::default()
    }

    /// The history file of `state_dir` (read now; a missing file is an empty history).
    pub fn open(state_dir: &Path) -> Result<History> {
        let mut h = History { path: Some(state_dir.join(FILE_NAME)), samples: Vec::new() };
        h.reload()?;
        Ok(h)
    }

    /// The file, if the history has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    fn reload(&mut self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            // Nothing saved (yet, or any more): what this process has is all there is.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot read the rate history {}", path.display())),
        };
        let mut bad = 0usize;
        self.samples = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).map_err(|_| bad += 1).ok())
            .collect();
        if bad > 0 {
            // A torn or hand-edited line costs a sample, never the status itself.
            tracing::warn!(path = %path.display(), lines = bad, "skipped unreadable lines of the rate history");
        }
        self.samples.sort_by_key(|s| s.at_ms);
        Ok(())
    }

    /// Adds a sample and, with a file, saves the history. The file is read again first, so two
    /// `status --watch` sharing a state directory add to one history instead of overwriting each
    /// other's (a lost sample between the read and the rename is harmless).
    /// On an error the sample is still kept in memory, so the rate of a `--watch` survives a
    /// full or read-only state directory.
    pub fn record(&mut self, sample: Sample) -> Result<()> {
        let reloaded = self.reload();
        self.samples.push(sample);
        self.samples.sort_by_key(|s| s.at_ms);
        let excess = self.samples.len().saturating_sub(MAX_SAMPLES);
        self.samples.drain(..excess);
        reloaded?;
        self.save()
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut text = Vec::with_capacity(self.samples.len() * 96);
        for s in &self.samples {
            serde_json::to_writer(&mut text, s).context("encoding a rate sample")?;
            text.push(b'\n');
        }
        // A per-process temp name: two writers never write into one temp file.
        let tmp = path.with_extension(format!("jsonl.tmp-{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write()
            .inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
            .with_context(|| format!("cannot write the rate history {}", path.display()))
    }

    /// The processed rate ending at the newest sample of `ns`: from the oldest sample within
    /// `window` before it; when the window holds no earlier sample (status last ran long ago), from
    /// the newest earlier one, over its longer span. `None` with fewer than two samples, with
    /// none [`MIN_RATE_SPAN`] before the newest, or when the count went down (marks were
    /// cleared), which makes no rate at all.
    pub fn rate(&self, ns: &str, window: Duration) -> Option<Rate> {
        let mine: Vec<(i64, u64)> =
            self.samples.iter().filter(|s| s.ns == ns).map(|s| (s.at_ms, s.processed)).collect();
        rate_over(&mine, window)
    }
}

/// The shortest span a rate is measured over: the samples of a run that ended seconds after it
/// began, or of a `--watch` a moment old, say nothing of a speed (and would print as "over the
/// last 0s").
pub const MIN_RATE_SPAN: Duration = Duration::from_secs(5);

/// The rate over `(ms, count)` points in time order: from the earliest point within `window`
/// before the last (or the last earlier point when none is), to the last. Points less than
/// [`MIN_RATE_SPAN`] before the last are never the start: `None` when only those are.
pub fn rate_over(points: &[(i64, u64)], window: Duration) -> Option<Rate> {
    let (last, earlier) = points.split_last()?;
    let earlier: Vec<&(i64, u64)> = earlier.iter().filter(|s| s.0 < last.0).collect();
    let since = last.0.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let latest_start = last.0.saturating_sub(i64::try_from(MIN_RATE_SPAN.as_millis()).unwrap_or(i64::MAX));
    // Points in time order: those that may start the rate come first.
    let starts = earlier.iter().take_while(|s| s.0 <= latest_start).count();
    let in_window = earlier[..starts].iter().position(|s| s.0 >= since);
    let (base, samples) = match in_window {
        Some(i) => (earlier[i], earlier.len() - i + 1),
        None => (*earlier[..starts].last()?, earlier.len() - starts + 2),
    };
    let span_s = (last.0 - base.0) as f64 / 1000.0;
    let done = last.1.checked_sub(base.1)?;
    Some(Rate { docs_per_s: done as f64 / span_s, span_s, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_s: i64, processed: u64) -> Sample {
        Sample { at_ms: at_s * 1000, ns: "db.c:m".into(), processed, remaining: 0 }
    }

    #[test]
    fn rate_uses_the_window_and_falls_back_to_the_last_earlier_sample() {
        let window = Duration::from_secs(600);
        let mut h = History::in_memory();
        h.record(s(0, 0)).unwrap();
        assert_eq!(h.rate("db.c:m", window), None, "one sample is no rate");
        h.record(s(1000, 5000)).unwrap();
        // Nothing within 10 minutes before t=1000: the span to t=0.
        assert_eq!(h.rate("db.c:m", window), Some(Rate { docs_per_s: 5.0, span_s: 1000.0, samples: 2 }));
        h.record(s(1500, 6000)).unwrap();
        h.record(s(1600, 7500)).unwrap();
        // Window [1000, 1600]: from t=1000 (exactly 600 s back is inside), not from t=0.
        assert_eq!(h.rate("db.c:m", window), Some(Rate { docs_per_s: 2500.0 / 600.0, span_s: 600.0, samples: 3 }));
        h.record(s(1601, 7600)).unwrap();
        assert_eq!(h.rate("db.c:m", window), Some(Rate { docs_per_s: 1600.0 / 101.0, span_s: 101.0, samples: 3 }));
        assert_eq!(h.rate("other:m", window), None, "another collection's samples never mix in");
        h.record(s(1700, 10)).unwrap();
        assert_eq!(h.rate("db.c:m", window), None, "marks cleared: no rate rather than a negative one");
    }

    #[test]
    fn a_span_of_a_few_seconds_is_no_rate() {
        let window = Duration::from_secs(600);
        // A run that ended 300 ms after it began: its commits are no rate, not one "over 0s".
        assert_eq!(rate_over(&[(1_000, 0), (1_300, 2_000)], window), None);
        assert_eq!(rate_over(&[(0, 0), (3_000, 600), (4_999, 1_000)], window), None);
        // From 5 s on, the points within the last 5 s count as samples, never as the start.
        let r = rate_over(&[(0, 0), (3_000, 600), (5_000, 1_000)], window);
        assert_eq!(r, Some(Rate { docs_per_s: 200.0, span_s: 5.0, samples: 3 }));
        // Long ago, then just now: from the old point, over the long span.
        let r = rate_over(&[(0, 0), (1_000_000, 9_000), (1_002_000, 10_020)], window);
        assert_eq!(r, Some(Rate { docs_per_s: 10.0, span_s: 1_002.0, samples: 3 }));
    }

    #[test]
    fn a_lost_state_directory_keeps_the_samples_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        h.record(s(0, 0)).unwrap();
        drop(dir);
        assert!(h.record(s(10, 100)).is_err(), "saving into a removed directory fails");
        assert_eq!(h.rate("db.c:m", Duration::from_secs(600)).map(|r| r.docs_per_s), Some(10.0));
    }

    #[test]
    fn file_is_bounded_atomic_and_shared() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = History::open(dir.path()).unwrap();
        for i in 0..(MAX_SAMPLES as i64 + 10) {
            a.record(s(i, i as u64)).unwrap();
        }
        let mut b = History::open(dir.path()).unwrap();
        assert_eq!(b.samples().len(), MAX_SAMPLES);
        assert_eq!(b.samples()[0].at_ms, 10_000, "the oldest samples go first");
        b.record(s(10_000, 20_000)).unwrap();
        a.record(s(10_001, 20_001)).unwrap();
        assert_eq!(History::open(dir.path()).unwrap().samples().last().unwrap().processed, 20_001);
        assert!(History::open(dir.path()).unwrap().samples().iter().any(|x| x.processed == 20_000), "b's sample kept");
        fs::write(
            dir.path().join(FILE_NAME),
            "{\"at_ms\":1,\"ns\":\"db.c:m\",\"processed\":1,\"remaining\":0}\ngarbage\n",
        )
        .unwrap();
        assert_eq!(History::open(dir.path()).unwrap().samples().len(), 1, "a bad line costs one sample");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)], "no temp files left behind");
    }
}
