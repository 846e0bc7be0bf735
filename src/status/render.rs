//! How a [`Status`] reads: a block for a person at a terminal, one `key=value` line per refresh
//! for logs. Formatting only; every figure comes from the status as measured.

use std::fmt::Write;
use tweet_embed_operators::run::status::Status;

/// The block `status` prints (and `--watch` redraws on a terminal).
pub fn text(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}.{} (mark field `{}`)", s.db, s.collection, s.mark_field);
    let _ = writeln!(
        out,
        "  processed   {:>15}  {:.2}% done  (embedded {}, rejected {})",
        thousands(s.processed),
        s.percent_done,
        thousands(s.embedded),
        thousands(s.rejected)
    );
    let _ = writeln!(out, "  remaining   {:>15}  of {} in all", thousands(s.remaining), thousands(s.total));
    if let Some(outside) = s.outside_queue.filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "  outside     {:>15}  about, unmarked but not in the work queue: their `retweeted` is set (retweets; or raw \
             Twitter API v1.1 JSON, whose every tweet says `retweeted: false`: the run names them at its start)",
            thousands(outside)
        );
    }
    let rate = match (s.rate_docs_per_s, s.rate_span_s, s.rate_samples) {
        (Some(r), Some(span), Some(n)) if s.remaining == 0 => format!(
            "none: nothing remains in the work queue (it was {r:.1} docs/s over the last {}, {n} samples)",
            duration(span)
        ),
        (Some(r), Some(span), Some(n)) => format!("{r:.1} docs/s over the last {} ({n} samples)", duration(span)),
        _ if s.remaining == 0 => "none: nothing remains in the work queue".to_string(),
        _ => "measuring (run status again, or use --watch)".to_string(),
    };
    let _ = writeln!(out, "  rate        {rate}");
    let eta = match s.eta_s {
        Some(e) if s.remaining == 0 => format!("done ({})", duration(e)),
        Some(e) => duration(e),
        None if s.rate_docs_per_s.is_some() => "unknown: nothing processed over the rate window".to_string(),
        None => "once the rate is measured".to_string(),
    };
    let _ = writeln!(out, "  ETA         {eta}");
    if let (Some(price), Some(gpus)) = (s.gpu_hour_cost, s.gpus) {
        let _ = writeln!(
            out,
            "  cost        {} so far, {} to go  ({gpus} GPUs at {price:.2}/GPU-hour)",
            money(s.cost_so_far),
            money(s.cost_to_go)
        );
    }
    if let (Some(c), Some(m), Some(age)) = (s.checkpoint_committed, s.checkpoint_marked, s.checkpoint_age_s) {
        let _ = writeln!(out, "  checkpoint  epoch {c} committed, {m} marked, written {} ago", duration(age));
    }
    if let Some(identity) = &s.identity {
        let _ = writeln!(out, "  dataset     {}", identity.summary());
    }
    if let (Some(files), Some(bytes), Some(compacted), Some(pending)) =
        (s.staged_files, s.staged_bytes, s.compacted_files, s.deletions_pending)
    {
        let _ = writeln!(
            out,
            "  output      {} staged files ({:.1} MiB) waiting for compaction, {} compacted files, {} deletions pending",
            thousands(files),
            bytes as f64 / (1u64 << 20) as f64,
            thousands(compacted),
            thousands(pending)
        );
    }
    out.truncate(out.trim_end().len());
    out
}

/// One line per `--watch` refresh off a terminal.
pub fn line(s: &Status) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("null".to_string(), |v| format!("{v:.digits$}"));
    let mut l = format!(
        "{}.{} embedded={} rejected={} processed={} remaining={} done={:.2}% rate={} eta={}",
        s.db,
        s.collection,
        s.embedded,
        s.rejected,
        s.processed,
        s.remaining,
        s.percent_done,
        opt(s.rate_docs_per_s, 1),
        // No spaces inside a value, so the line splits on them.
        s.eta_s.map_or("null".to_string(), |e| duration(e).replace(' ', ""))
    );
    if s.gpu_hour_cost.is_some() {
        let _ = write!(l, " cost_so_far={} cost_to_go={}", opt(s.cost_so_far, 2), opt(s.cost_to_go, 2));
    }
    if let Some(c) = s.checkpoint_committed {
        let _ = write!(l, " committed_epoch={c}");
    }
    if let (Some(b), Some(f), Some(p)) = (s.staged_bytes, s.compacted_files, s.deletions_pending) {
        let _ = write!(l, " staged_bytes={b} compacted_files={f} deletions_pending={p}");
    }
    l
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Seconds as `3d 4h`, `2h 13m`, `5m 07s` or `42s`: two units are enough for an ETA.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn money(v: Option<f64>) -> String {
    v.map_or("unknown (no rate yet)".to_string(), |v| format!("{v:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(307.0), "5m 07s");
        assert_eq!(duration(2.0 * 3600.0 + 13.0 * 60.0), "2h 13m");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 59.0), "3d 4h");
    }
}
