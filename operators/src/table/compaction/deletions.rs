//! Applying recorded deletions (`_deletions/`, see `crate::table::output::deletions` for the rule) to
//! the output: [`DeletionIndex`] holds the committed deletions in memory (ids only) and knows which
//! are not yet applied to the files of the output directory; [`apply_pending`] rewrites each
//! output file that holds a deleted row without it, under its own name (one rename replaces it,
//! so a reader sees the old file or the new one), then records in the checkpoint how far
//! deletions are applied. Staged rows need no pass: compaction drops them as it merges.
//!
//! Why not differential-dataflow here: rows never sit in memory (they are in Parquet files of
//! hundreds of MB), so the change log cannot be a collection that consolidates against them; the
//! within-epoch consolidation that differential would give (an insert and a delete of one id in
//! one epoch cancel) is done where the rows are, at the writer's seal (`crate::dataflow::write_parquet`),
//! and across epochs a deletion is a set lookup by id with an epoch bound.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::stats::CompactionStats;
use crate::clock::steady_ms;
use crate::table::checkpoint::{list_files, list_kind, Checkpoint, Ledger};
use crate::table::output::{
    key_values, may_hold_any, read_deletions, read_row_ids, rewrite_without, sync_dir, DeletionSet, FileKind, IdProbe,
    IdType, PartName, ID_TYPE_KEY,
};

/// The committed deletions the compactor knows, and which are still to apply to the output.
/// Memory: the ids of the deletions that can still match a row — pending ones, and those as new
/// as the oldest staged row ([`DeletionIndex::forget_settled`]) — not every deletion ever made.
#[derive(Debug, Default)]
pub struct DeletionIndex {
    set: DeletionSet,
    /// Deletions of epochs below this were forgotten: settled, they match no row left to filter.
    floor: u64,
    loaded: HashSet<String>,
    /// Deletions of epochs above the checkpoint's `deletions_applied`.
    pending: u64,
    /// Their ids: only they can still match a row of the output directory (applied ones left
    /// it, and compaction drops staged rows by the whole set).
    pending_ids: Vec<String>,
    /// The highest epoch among them.
    pending_upto: u64,
    /// The newest epoch of any deletion held (it only grows; forgetting keeps it).
    newest: Option<u64>,
    /// When the oldest of them happened ([`steady_ms`]; a time ahead of the clock when read
    /// counts as then).
    oldest_pending_ms: Option<i64>,
}

impl DeletionIndex {
    /// Reads the deletion files of epochs ≤ `committed` in `out/_deletions/` not read before.
    pub fn refresh(&mut self, out: &Path, committed: u64, applied: u64) -> Result<()> {
        let now = steady_ms();
        for f in list_kind(out, FileKind::Deletions)? {
            let key = f.path.to_string_lossy().into_owned();
            if f.name.epoch_lo > committed || self.loaded.contains(&key) {
                continue;
            }
            for d in read_deletions(&out.join(&f.path))? {
                // (A merged deletion log brings back settled deletions under a new name.)
                if d.epoch < self.floor {
                    continue;
                }
                self.set.insert(&d.id, d.epoch);
                self.newest = Some(self.newest.map_or(d.epoch, |n| n.max(d.epoch)));
                if d.epoch > applied {
                    self.pending += 1;
                    self.pending_ids.push(d.id.clone());
                    self.pending_upto = self.pending_upto.max(d.epoch);
                    let at = d.cluster_time_ms.unwrap_or(now).min(now);
                    self.oldest_pending_ms = Some(self.oldest_pending_ms.map_or(at, |o| o.min(at)));
                }
            }
            self.loaded.insert(key);
        }
        Ok(())
    }

    /// Forgets the deletions no row left to filter can match. A deletion at epoch `d` removes
    /// rows of epochs ≤ `d`; once it is applied to the output directory (`d ≤ applied`) and every
    /// row still to be compacted is newer (`d < oldest_unfiltered`: the lowest epoch among the
    /// staged files, or the first epoch not yet committed when none is staged), it has nothing
    /// left to remove. Returns the ids still held.
    pub fn forget_settled(&mut self, applied: u64, oldest_unfiltered: u64) -> usize {
        let floor = oldest_unfiltered.min(applied.saturating_add(1));
        if floor > self.floor {
            self.set.forget_below(floor);
            self.floor = floor;
        }
        self.set.len()
    }

    /// Whether a deletion held can remove a row of epoch `epoch` or later (a deletion at epoch `d`
    /// removes rows of epochs ≤ `d`). False lets a merge of rows that new skip reading ids.
    pub fn may_delete_from(&self, epoch: u64) -> bool {
        !self.set.is_empty() && self.newest.is_some_and(|n| n >= epoch)
    }

    /// Whether a row `(id, epoch)` is deleted.
    pub fn deletes(&self, id: &str, epoch: u64) -> bool {
        self.set.deletes(id, Some(epoch))
    }

    /// Deletions not yet applied to the output directory's files.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Whether the pending deletions must be applied now to leave the output within
    /// `delete_within` of their deletion (half of it, so the pass itself has the other half).
    pub fn due(&self, delete_within: Duration) -> bool {
        let half = i64::try_from(delete_within.as_millis() / 2).unwrap_or(i64::MAX);
        self.oldest_pending_ms.is_some_and(|t| steady_ms().saturating_sub(t) >= half)
    }
}

/// Rewrites every file of the output directory `out` (rows and rejections) that holds a row
/// `index` deletes, then records the pending deletions as applied. Returns the files rewritten.
/// A file whose name says its rows are newer than every pending deletion, or whose row groups'
/// `id` statistics hold none of the pending ids (`crate::table::output::may_hold_any`, footer only),
/// is not read: the pass costs a footer per file plus the files that may hold a deleted row.
pub fn apply_pending(
    ledger: &Ledger,
    out: &Path,
    row_group_rows: usize,
    index: &mut DeletionIndex,
    stats: &CompactionStats,
) -> Result<usize> {
    let (upto, count) = (index.pending_upto, index.pending);
    let id_type = ledger.read(Checkpoint::id_type).unwrap_or(IdType::ExtJson);
    let probe = IdProbe::new(id_type, index.pending_ids.iter().map(String::as_str));
    let (mut rewritten, mut unread) = (0, 0);
    for f in list_files(out)?.into_iter().filter(|f| f.kind != FileKind::Deletions) {
        let path = out.join(&f.path);
        // A deletion at epoch d removes rows of epochs ≤ d only.
        if f.name.epoch_lo > upto || !may_hold_any(&path, &probe, id_type)? {
            stats.skipped_unread();
            unread += 1;
            continue;
        }
        let ids = read_row_ids(&path)?;
        if !ids.iter().any(|(id, e)| index.deletes(id, *e)) {
            continue;
        }
        rewrite(&path, f.kind, &f.name, row_group_rows, index, stats)?;
        rewritten += 1;
    }
    ledger.note_deletions_applied(upto, count)?;
    stats.applied(count);
    index.pending = 0;
    index.pending_ids.clear();
    index.oldest_pending_ms = None;
    tracing::info!(deletions = count, files = rewritten, unread, "applied recorded deletions to the output");
    Ok(rewritten)
}

/// Replaces `path` with a copy without its deleted rows: written and fsynced under a hidden
/// partial name (removed by recovery should a crash come first), then renamed over the original.
fn rewrite(
    path: &Path,
    kind: FileKind,
    name: &PartName,
    row_group_rows: usize,
    index: &DeletionIndex,
    stats: &CompactionStats,
) -> Result<()> {
    let dir = path.parent().context("an output file has no directory")?;
    let partial = dir.join(name.partial_name());
    let merged = rewrite_without(path, kind, &partial, row_group_rows, &|id, e| index.deletes(id, e))?;
    sync_dir(dir)?;
    stats.rewrote(merged.rows, merged.bytes, merged.dropped);
    tracing::info!(file = %path.display(), dropped = merged.dropped, "rewrote an output file without its deleted rows");
    Ok(())
}

/// Deletion files (one per epoch that had deletes) merged into one once this many are applied:
/// a stream with steady deletes would otherwise leave a small file every few seconds in
/// `_deletions/`, the small-files problem again.
pub const DELETION_FILES_MERGED: usize = 32;

/// Merges the files of `out/_deletions/` whose deletions are all applied (epochs ≤ the
/// checkpoint's `deletions_applied`) into one, once there are [`DELETION_FILES_MERGED`], keeping
/// one record per id (its latest epoch). The merged file appears by one rename before its inputs
/// are removed: a crash in between leaves records twice, which an anti-join does not mind and
/// the next merge folds. Returns whether it merged.
pub fn compact_deletion_log(ledger: &Ledger, out: &Path) -> Result<bool> {
    let applied = ledger.read(Checkpoint::deletions_applied);
    let files: Vec<_> =
        list_files(out)?.into_iter().filter(|f| f.kind == FileKind::Deletions && f.name.epoch_hi <= applied).collect();
    if files.len() < DELETION_FILES_MERGED {
        return Ok(false);
    }
    let mut latest: std::collections::HashMap<String, crate::table::output::Deletion> =
        std::collections::HashMap::new();
    for f in &files {
        for d in read_deletions(&out.join(&f.path))? {
            match latest.get(&d.id) {
                Some(kept) if kept.epoch >= d.epoch => {}
                _ => {
                    latest.insert(d.id.clone(), d);
                }
            }
        }
    }
    let mut records: Vec<crate::table::output::Deletion> = latest.into_values().collect();
    records.sort_by(|a, b| (a.epoch, &a.id).cmp(&(b.epoch, &b.id)));
    let seq = ledger.reserve_seq()?;
    let lo = files.iter().map(|f| f.name.epoch_lo).min().unwrap_or(0);
    let hi = files.iter().map(|f| f.name.epoch_hi).max().unwrap_or(0);
    let name = crate::table::output::free_log_name(out, lo, hi, 0, seq);
    let dir = out.join(FileKind::Deletions.subdir());
    let kv = key_values(&out.join(&files[0].path))?;
    // The dataset's id type, as its files record it (extjson for files from before id types).
    let id_type = match kv.iter().find(|(k, _)| k == ID_TYPE_KEY) {
        Some((_, v)) => v.parse().map_err(|e: String| anyhow::anyhow!("{}: {e}", files[0].path.display()))?,
        None => IdType::ExtJson,
    };
    crate::table::output::append_to_log(out, name, &records, id_type, &kv)?;
    for f in &files {
        let path = out.join(&f.path);
        fs::remove_file(&path).with_context(|| format!("removing merged deletion file {}", path.display()))?;
    }
    sync_dir(&dir)?;
    tracing::info!(files = files.len(), deletions = records.len(), file = %name.file_name(), "merged the deletion log");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::checkpoint::{Checkpoint, CheckpointStore, SourcePositions};
    use crate::table::output::{write_deletions, Deletion};

    fn int_id(i: u64) -> String {
        format!(r#"{{"$numberLong":"{i}"}}"#)
    }

    /// Rows of `ids` in `epoch`, sealed straight into `out` as int64 ids, 100 rows a row group.
    fn seal_rows(out: &Path, tmp: &Path, epoch: u64, ids: std::ops::Range<u64>) {
        use crate::dataflow::record::{DocMeta, EmbeddedRow, Origin};
        use crate::table::output::{EpochWriter, OutputConfig};
        let mut c = OutputConfig::new(out, tmp, 0, 4, "test/model");
        c.staging_dir = out.to_path_buf();
        c.id_type = IdType::Int64;
        c.row_group_rows = 100;
        let mut w = EpochWriter::new(c).unwrap();
        for i in ids {
            let doc = DocMeta { id: int_id(i), lang: None, created_at_ms: None, origin: Origin::Backfill };
            w.push_row(epoch, &EmbeddedRow { doc, embedding: vec![0.5; 4], text_hash: i, tokens: 1 }).unwrap();
        }
        assert_eq!(w.seal(epoch).unwrap().len(), 1);
    }

    #[test]
    fn a_deletion_pass_reads_only_the_files_whose_epochs_and_id_ranges_can_hold_a_pending_deletion() {
        let out = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        // Three epochs of disjoint id ranges, and a re-insert of id 1500 after its deletion.
        seal_rows(out.path(), tmp.path(), 1, 0..1000);
        seal_rows(out.path(), tmp.path(), 2, 1000..2000);
        seal_rows(out.path(), tmp.path(), 3, 2000..3000);
        seal_rows(out.path(), tmp.path(), 6, 1500..1501);
        // Pending: 1500 and 1777 deleted at epoch 5, and a stray (an ObjectId among int64 ids).
        let dir = out.path().join(FileKind::Deletions.subdir());
        std::fs::create_dir_all(&dir).unwrap();
        let records = [
            Deletion { id: int_id(1500), epoch: 5, cluster_time_ms: None },
            Deletion { id: int_id(1777), epoch: 5, cluster_time_ms: None },
            Deletion { id: "65a000000000000000000001".into(), epoch: 5, cluster_time_ms: None },
        ];
        let name = PartName { epoch_lo: 5, epoch_hi: 5, worker: 0, seq: 9 };
        write_deletions(&dir.join(name.file_name()), &records, IdType::Int64, &[]).unwrap();
        let cp = Checkpoint::new(6, 6, Vec::new(), SourcePositions::default());
        let ledger = Ledger::new(CheckpointStore::open(state.path()).unwrap(), cp);
        ledger.set_id_type(IdType::Int64).unwrap();
        ledger.note_deletions_recorded(3, 9).unwrap();
        ledger.note_deletions_applied(4, 0).unwrap();
        let mut index = DeletionIndex::default();
        index.refresh(out.path(), 6, 4).unwrap();
        assert_eq!(index.pending(), 3);
        let stats = CompactionStats::default();
        assert_eq!(apply_pending(&ledger, out.path(), 100, &mut index, &stats).unwrap(), 1);
        let s = stats.snapshot();
        assert_eq!((s.rewrites, s.deleted_rows, s.files_unread), (1, 2, 3), "{s:?}");
        // The right rows went, the re-insert stayed, and the pass is recorded.
        let mut ids: Vec<(String, u64)> = Vec::new();
        for f in list_files(out.path()).unwrap().into_iter().filter(|f| f.kind == FileKind::Rows) {
            ids.extend(read_row_ids(&out.path().join(&f.path)).unwrap());
        }
        assert_eq!(ids.len(), 3000 - 2 + 1);
        assert!(!ids.contains(&(int_id(1777), 2)) && !ids.contains(&(int_id(1500), 2)));
        assert!(ids.contains(&(int_id(1500), 6)) && ids.contains(&(int_id(1501), 2)));
        assert_eq!(ledger.read(|cp| (cp.deletions_applied(), cp.deletions_done())), (5, 3));
        assert_eq!(index.pending(), 0);
    }

    #[test]
    fn settled_deletions_are_forgotten_and_not_read_back_from_a_merged_log() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join(FileKind::Deletions.subdir());
        std::fs::create_dir_all(&dir).unwrap();
        let record = |e: u64| Deletion { id: format!("id-{e}"), epoch: e, cluster_time_ms: None };
        for e in 1..=10u64 {
            let name = PartName { epoch_lo: e, epoch_hi: e, worker: 0, seq: e };
            write_deletions(&dir.join(name.file_name()), &[record(e)], IdType::ExtJson, &[]).unwrap();
        }
        let mut index = DeletionIndex::default();
        index.refresh(out.path(), 10, 8).unwrap();
        assert_eq!(index.pending(), 2);
        // Applied up to 8, the oldest staged row of epoch 5: deletions of epochs 1–4 are settled.
        assert_eq!(index.forget_settled(8, 5), 6);
        assert!(!index.deletes("id-4", 4) && index.deletes("id-5", 5) && index.deletes("id-10", 3));
        // Nothing staged and everything applied: only what a future row could need… none.
        assert_eq!(index.forget_settled(8, 11), 2, "pending deletions stay until applied");
        // A merged log (applied files only) under a new name holds the settled ones again: they
        // stay forgotten.
        let merged: Vec<Deletion> = (1..=8).map(record).collect();
        let name = PartName { epoch_lo: 1, epoch_hi: 8, worker: 0, seq: 99 };
        write_deletions(&dir.join(name.file_name()), &merged, IdType::ExtJson, &[]).unwrap();
        index.refresh(out.path(), 10, 8).unwrap();
        assert!(!index.deletes("id-5", 5) && index.deletes("id-9", 9));
        assert_eq!(index.pending(), 2, "nothing counted twice");
        assert_eq!(index.forget_settled(10, 11), 0);
    }

    #[test]
    fn applied_deletion_files_merge_into_one_keeping_each_ids_latest_epoch() {
        let out = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let dir = out.path().join(FileKind::Deletions.subdir());
        std::fs::create_dir_all(&dir).unwrap();
        for e in 1..=40u64 {
            // Id `x` is deleted in every epoch (re-inserted between); the others once.
            let records = [
                Deletion { id: "x".into(), epoch: e, cluster_time_ms: Some(e as i64) },
                Deletion { id: format!("id-{e}"), epoch: e, cluster_time_ms: None },
            ];
            let name = PartName { epoch_lo: e, epoch_hi: e, worker: 0, seq: e };
            write_deletions(&dir.join(name.file_name()), &records, IdType::ExtJson, &[]).unwrap();
        }
        let cp = Checkpoint::new(40, 40, Vec::new(), SourcePositions::default());
        let ledger = Ledger::new(CheckpointStore::open(state.path()).unwrap(), cp);
        // Applied up to 35, and names up to sequence 99 taken.
        ledger.note_deletions_applied(35, 0).unwrap();
        ledger.note_deletions_recorded(0, 99).unwrap();
        assert!(compact_deletion_log(&ledger, out.path()).unwrap());
        let left: Vec<_> = list_files(out.path()).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(left.len(), 6, "{left:?}");
        let merged = left.iter().find(|n| n.seq == 100).expect("the merged file");
        assert_eq!((merged.epoch_lo, merged.epoch_hi), (1, 35));
        let records = read_deletions(&dir.join(merged.file_name())).unwrap();
        assert_eq!(records.len(), 36, "35 ids once, and x once");
        assert_eq!(records.iter().find(|d| d.id == "x").map(|d| d.epoch), Some(35));
        // Below the threshold, nothing to do.
        assert!(!compact_deletion_log(&ledger, out.path()).unwrap());
    }

    #[test]
    fn a_merged_deletion_log_keeps_the_datasets_id_type_and_its_strays() {
        let out = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let dir = out.path().join(FileKind::Deletions.subdir());
        std::fs::create_dir_all(&dir).unwrap();
        let n = DELETION_FILES_MERGED as u64;
        for e in 1..=n {
            let records = [
                Deletion { id: format!(r#"{{"$numberLong":"{e}"}}"#), epoch: e, cluster_time_ms: None },
                Deletion { id: r#"{"$numberDouble":"2.5"}"#.into(), epoch: e, cluster_time_ms: None },
            ];
            let name = PartName { epoch_lo: e, epoch_hi: e, worker: 0, seq: e };
            let kv = [(crate::table::output::ID_TYPE_KEY.to_string(), "int64".to_string())];
            write_deletions(&dir.join(name.file_name()), &records, IdType::Int64, &kv).unwrap();
        }
        let cp = Checkpoint::new(n, n, Vec::new(), SourcePositions::default());
        let ledger = Ledger::new(CheckpointStore::open(state.path()).unwrap(), cp);
        ledger.note_deletions_applied(n, 0).unwrap();
        ledger.note_deletions_recorded(0, 99).unwrap();
        assert!(compact_deletion_log(&ledger, out.path()).unwrap());
        let left: Vec<_> = list_files(out.path()).unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        let path = out.path().join(&left[0].path);
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&path).unwrap())
                .unwrap();
        assert_eq!(reader.schema().field_with_name("id").unwrap().data_type(), &arrow::datatypes::DataType::Int64);
        let records = read_deletions(&path).unwrap();
        assert_eq!(records.len(), n as usize + 1, "each number once, and the stray once");
        assert_eq!(records.iter().find(|d| d.id.contains("numberDouble")).map(|d| d.epoch), Some(n));
    }
}
