//! Reconciling the output with the collection: ids in the output (and in staged files) whose
//! document is no longer in the collection become recorded deletions, applied to the output
//! directory's files at once (staged rows are dropped at their compaction). It is for deletions
//! the change stream could not show: those in a gap after its history was lost, or made while
//! no run was following the stream.
//!
//! Ids are checked through the `_id` index, in batches of `$in` lookups with a projection on
//! `_id` (never a collection scan per row); the output is read one file at a time, the id column
//! only. It must run alone on its state directory (it takes the run's lock), since it rewrites
//! output files and records in the checkpoint.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;

use crate::clock::steady_ms;
use crate::mongo::document_id::DocId;
use crate::mongo::error::{describe, retry, MongoRetry};
use crate::table::checkpoint::{list_files, CheckpointStore, Ledger, StateLock};
use crate::table::compaction::{apply_pending, CompactionStats, DeletionIndex};
use crate::table::output::{append_to_log, canonical_id, free_log_name, read_row_ids, Deletion, FileKind, IdType};

/// Ids per `$in` lookup.
pub const LOOKUP_BATCH: usize = 1_000;
/// The worker number in the names of deletion files `reconcile` writes, apart from any run's.
pub const RECONCILE_WORKER: usize = 999;

/// What a reconciliation found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Files read (output and staged).
    pub files: usize,
    /// Distinct ids checked.
    pub checked: u64,
    /// Ids whose document is gone, now recorded deletions.
    pub missing: u64,
    /// Ids that cannot be turned back into an `_id` (not written by this tool), left alone.
    pub unreadable: u64,
    /// The deletion file written, relative to the output directory.
    pub deletion_file: Option<PathBuf>,
    /// Output files rewritten without the deleted rows.
    pub rewritten: usize,
}

/// Where to reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileTarget {
    /// The output directory.
    pub out: PathBuf,
    /// The run's state directory (its checkpoint and lock).
    pub state_dir: PathBuf,
    /// The run's staging directory.
    pub staging_dir: PathBuf,
    /// Record and apply nothing: only count.
    pub dry_run: bool,
    /// Go on even when most ids look deleted (which usually means the wrong `--db`,
    /// `--collection` or `--out`).
    pub force: bool,
}

/// Past this share of ids missing from the collection, reconcile refuses without `force`.
pub const MOST_MISSING: f64 = 0.5;

/// Reconciles `target` with `coll` on `runtime` (see the module doc). Errors: the state
/// directory in use by a run (the lock's line), no checkpoint there, unreadable files, MongoDB
/// errors that do not heal.
pub fn reconcile(
    target: &ReconcileTarget,
    coll: &Collection<Document>,
    runtime: &tokio::runtime::Handle,
) -> Result<Reconciled> {
    let _lock = StateLock::acquire(&target.state_dir).map_err(|e| anyhow!(e))?;
    let store = CheckpointStore::open(&target.state_dir)?;
    let Some(ledger) = Ledger::open(store)? else {
        bail!(
            "{} has no checkpoint: nothing was committed there, so there is nothing to reconcile",
            target.state_dir.display()
        );
    };
    let cp = ledger.snapshot();
    same_collection(coll, runtime)?;
    same_dataset(&cp, &target.out, &target.state_dir)?;
    // Deletions already recorded need no second record.
    let recorded = crate::table::output::DeletionSet::load(&target.out)?;
    let mut files: Vec<PathBuf> = list_files(&target.out)?
        .into_iter()
        .filter(|f| f.kind != FileKind::Deletions)
        .map(|f| target.out.join(f.path))
        .collect();
    files.extend(cp.staged().iter().map(|f| target.staging_dir.join(&f.path)));
    let policy = MongoRetry::default();
    let mut found = Reconciled { files: files.len(), ..Reconciled::default() };
    let mut seen: HashSet<String> = HashSet::new();
    let mut missing: Vec<String> = Vec::new();
    for path in &files {
        let ids: Vec<String> = read_row_ids(path)?
            .into_iter()
            .filter(|(id, epoch)| !recorded.deletes(id, Some(*epoch)))
            .map(|(id, _)| id)
            .filter(|id| seen.insert(id.clone()))
            .collect();
        for batch in ids.chunks(LOOKUP_BATCH) {
            let gone = runtime
                .block_on(retry(&policy, "looking up output ids in the collection", || absent(coll, batch)))
                .map_err(|e| anyhow!("looking up output ids in the collection: {}", describe(&e)))?;
            found.unreadable += gone.unreadable;
            missing.extend(gone.ids);
        }
    }
    found.checked = seen.len() as u64;
    found.missing = missing.len() as u64;
    if missing.is_empty() || target.dry_run {
        return Ok(found);
    }
    let share = found.missing as f64 / found.checked.max(1) as f64;
    if share > MOST_MISSING && !target.force {
        let ns = coll.namespace();
        bail!(
            "{} of the {} ids in the output ({:.0}%) are not in {ns}: that looks like the wrong --db, --collection or \
             --out, not deleted tweets; nothing was recorded. Check them (--dry-run counts), and pass --force if so \
             many tweets really were deleted",
            found.missing,
            found.checked,
            share * 100.0
        );
    }
    // A deletion at the committed epoch removes every row written so far.
    let epoch = cp.committed();
    let id_type = cp.recorded_id_type().unwrap_or(IdType::ExtJson);
    let recorded = missing.len() as u64;
    let seq = ledger.reserve_seq()?;
    let name = free_log_name(&target.out, epoch, epoch, RECONCILE_WORKER, seq);
    let now = steady_ms();
    let deletions: Vec<Deletion> =
        missing.into_iter().map(|id| Deletion { id, epoch, cluster_time_ms: Some(now) }).collect();
    // `append_to_log` adds the id type to the metadata.
    let kv = [("tweet_embed.written_by".to_string(), "reconcile".to_string())];
    let (path, _) = append_to_log(&target.out, name, &deletions, id_type, &kv)?;
    ledger.note_deletions_recorded(recorded, name.seq)?;
    found.deletion_file = Some(path);
    let snapshot = ledger.snapshot();
    let mut index = DeletionIndex::default();
    // Only pending deletions can match a row in --out (staged rows are the compactor's). These
    // are at the committed epoch, which the deletions already applied may have reached (the
    // stream's deletes of the last epoch): counted from just below it, they are pending.
    let applied = snapshot.deletions_applied().min(epoch.saturating_sub(1));
    index.forget_settled(applied, u64::MAX);
    index.refresh(&target.out, snapshot.committed(), applied)?;
    // Rows per row group for 768 dimensions; the writer bounds row groups by bytes as well.
    let rows = crate::table::output::schema::default_row_group_rows(768);
    found.rewritten = apply_pending(&ledger, &target.out, rows, &mut index, &CompactionStats::default())?;
    Ok(found)
}

/// The collection must be the one a run embeds: a typo in `--db` or `--collection` names an
/// empty (or missing) collection, in which every id would look deleted.
fn same_collection(coll: &Collection<Document>, runtime: &tokio::runtime::Handle) -> Result<()> {
    let ns = coll.namespace();
    let names = runtime.block_on(async { coll.list_index_names().await }).unwrap_or_default();
    // Any mark field's work queue (the default's name, or that name with the field appended).
    if !names.iter().any(|n| n.starts_with(crate::mongo::work_queue::WORK_QUEUE_INDEX)) {
        bail!(
            "{ns} has no `{}` index, so it is not a collection tweet-embed embeds (or it does not exist): check --db \
             and --collection; nothing was recorded",
            crate::mongo::work_queue::WORK_QUEUE_INDEX
        );
    }
    Ok(())
}

/// The output must be the dataset the checkpoint describes: another run's `--out` with this
/// `--state-dir` would be reconciled against the wrong identity and id type.
fn same_dataset(
    cp: &crate::table::checkpoint::Checkpoint,
    out: &std::path::Path,
    state_dir: &std::path::Path,
) -> Result<()> {
    let Some(expected) = cp.identity() else { return Ok(()) };
    for f in list_files(out)?.into_iter().filter(|f| f.kind == FileKind::Rows) {
        let path = out.join(&f.path);
        let kv = crate::table::output::key_values(&path)?;
        let Some((_, json)) = kv.iter().find(|(k, _)| k == "tweet_embed.identity") else { continue };
        let Ok(found) = serde_json::from_str::<crate::table::identity::DatasetIdentity>(json) else { continue };
        let diff = found.differences(&expected);
        if !diff.is_empty() {
            let changes: Vec<String> = diff.iter().map(|(what, a, b)| format!("{what} {a} vs {b}")).collect();
            bail!(
                "{} is not the output of the run whose checkpoint is in {} ({}): pass the --out and --state-dir of one \
                 run; nothing was recorded",
                out.display(),
                state_dir.display(),
                changes.join(", ")
            );
        }
    }
    Ok(())
}

struct Absent {
    ids: Vec<String>,
    unreadable: u64,
}

/// The ids of `batch` whose document is not in `coll`.
async fn absent(coll: &Collection<Document>, batch: &[String]) -> Result<Absent, mongodb::error::Error> {
    let mut keys: Vec<Bson> = Vec::with_capacity(batch.len());
    let mut unreadable = 0;
    for id in batch {
        match DocId::decode(id) {
            Some(b) => keys.push(b),
            None => unreadable += 1,
        }
    }
    let mut cursor = coll.find(doc! {"_id": {"$in": keys}}).projection(doc! {"_id": 1}).await?;
    let mut present: HashSet<String> = HashSet::new();
    while cursor.advance().await? {
        // As the output's ids read back: an Int32 `_id` as Int64.
        present.insert(canonical_id(DocId::read(cursor.current()).as_str()).into_owned());
    }
    let ids = batch.iter().filter(|id| DocId::decode(id).is_some() && !present.contains(*id)).cloned().collect();
    Ok(Absent { ids, unreadable })
}
