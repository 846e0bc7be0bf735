//! Which staged files a compaction takes, and when: enough committed and marked bytes of one
//! kind to fill a target-size file; or, below target, everything when the backfill ends (the
//! tail) or when the oldest staged file has waited `--max-file-age` (so fresh rows become
//! visible in continuous mode). Pure: it reads the list and the clock it is given
//! (`clock::steady_ms`, so a wall-clock step never delays or hurries the age rule).

use std::time::Duration;

use crate::table::output::{FileKind, FileMeta};

/// How many times the target the staged bytes must reach before a merge below the age and tail
/// rules. Each staged file carries its own footer, schema and page indexes, which the merged file
/// pays once: small epochs (slow GPUs) make the staged sum overstate the merged size by 5–10 %,
/// and a merge of exactly a target's staged bytes came out below target. The merge stops at
/// the target, so the inputs beyond it stay staged.
pub const STAGED_HEADROOM: f64 = 1.25;

/// The staged files of `kind` to merge next, oldest epochs first, or `None` when nothing is
/// due. Only files of epochs ≤ `marked` are taken: recovery re-marks from staged files, so a
/// file must stay staged until its documents are marked. `now_ms` and each file's
/// `staged_at_ms` are `clock::steady_ms` readings. A stamp ahead of `now_ms` was made by an
/// earlier process before the wall clock stepped back: its age is unknown, so it counts as aged
/// (one early compaction, where waiting for the clock to catch up could hide rows for hours).
pub fn pick(
    staged: &[FileMeta],
    kind: FileKind,
    marked: u64,
    target_bytes: u64,
    max_age: Option<Duration>,
    flush: bool,
    now_ms: i64,
) -> Option<Vec<FileMeta>> {
    let mut ready: Vec<FileMeta> = staged.iter().filter(|f| f.kind == kind && f.epoch_hi <= marked).cloned().collect();
    if ready.is_empty() {
        return None;
    }
    ready.sort_by(|a, b| (a.epoch_lo, a.worker, &a.path).cmp(&(b.epoch_lo, b.worker, &b.path)));
    let total: u64 = ready.iter().map(|f| f.bytes).sum();
    let oldest = ready.iter().map(|f| f.staged_at_ms).min().unwrap_or(now_ms);
    let newest = ready.iter().map(|f| f.staged_at_ms).max().unwrap_or(now_ms);
    let aged = max_age.is_some_and(|age| {
        newest > now_ms || now_ms.saturating_sub(oldest) >= i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
    });
    let enough = total as f64 >= target_bytes as f64 * STAGED_HEADROOM;
    (enough || flush || aged).then_some(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(epoch: u64, bytes: u64, at: i64) -> FileMeta {
        FileMeta {
            path: format!("part-{epoch}").into(),
            kind: FileKind::Rows,
            epoch_lo: epoch,
            epoch_hi: epoch,
            rows: 1,
            bytes,
            worker: 0,
            staged_at_ms: at,
        }
    }

    #[test]
    fn waits_for_the_target_unless_flushed_or_aged() {
        let staged = [file(3, 40, 1_000), file(1, 40, 2_000), file(2, 40, 3_000)];
        let age = Some(Duration::from_secs(10));
        assert_eq!(pick(&staged, FileKind::Rows, 3, 200, age, false, 5_000), None);
        let flushed = pick(&staged, FileKind::Rows, 3, 200, age, true, 5_000).unwrap();
        assert_eq!(flushed.iter().map(|f| f.epoch_lo).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(pick(&staged, FileKind::Rows, 3, 200, age, false, 11_000).is_some());
        assert!(pick(&staged, FileKind::Rows, 3, 96, None, false, 5_000).is_some());
        assert_eq!(pick(&staged, FileKind::Rows, 3, 100, None, false, 5_000), None, "120 bytes < 1.25 × 100");
        assert_eq!(pick(&staged, FileKind::Rejects, 3, 1, None, true, 5_000), None);
    }

    #[test]
    fn a_stamp_from_before_the_clock_stepped_back_is_due_at_once() {
        // Staged by a process whose clock read one hour later than this one's does now.
        let staged = [file(1, 40, 3_600_000 + 5_000)];
        let age = Some(Duration::from_secs(10));
        assert!(pick(&staged, FileKind::Rows, 1, 200, age, false, 5_000).is_some());
        assert_eq!(pick(&staged, FileKind::Rows, 1, 200, None, false, 5_000), None, "no age rule, no flush");
    }

    #[test]
    fn never_takes_an_unmarked_epoch() {
        let staged = [file(1, 500, 0), file(2, 500, 0)];
        let taken = pick(&staged, FileKind::Rows, 1, 100, None, true, 0).unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(pick(&staged, FileKind::Rows, 0, 100, None, true, 0), None);
    }
}
