//! `EpochWriter`, one per worker: takes rows and rejections tagged with their epoch, writes them
//! to Parquet on hot storage, and on `seal` makes every epoch up to a bound durable in the staging
//! directory, where readers of the output never look (`crate::table::compaction` merges staged files
//! into target-size files in the output directory once they are committed). It never decides when an epoch is complete (the caller's frontier does) and never
//! records a checkpoint: sealing is step 1 of DESIGN.md's commit order, the checkpoint step 2.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::batch::{RejectStage, RowStage};
use super::deletions::{append_to_log, Deletion};
use super::error::OutputError;
use super::file::FinishedFile;
use super::fsio::{durable_move, ensure_writable_dir, sync_dir};
use super::id_type::{canonical_id, IdType, ID_TYPE_KEY};
use super::lanes::{FileCtx, Lanes};
use super::merge::rewrite_without;
use super::naming::{is_tmp_of, FileKind, PartName};
use super::read::read_row_ids;
use super::schema::{default_row_group_rows, writer_properties};
use super::stats::OutputStats;
use crate::dataflow::record::{EmbeddedRow, Rejection};

/// The staging directory's name inside the output directory when staging is shared there (a
/// cluster): `_`-prefixed, so readers of the dataset skip it.
pub const STAGING_DIR: &str = "_staging";
/// Default size at which a file rolls: large enough that no consolidation is needed.
pub const DEFAULT_TARGET_FILE_BYTES: u64 = 512 << 20;
/// Memory one epoch stages before its rows go to a file.
const STAGE_BYTES: usize = 4 << 20;
/// Rejections staged per epoch before they go to a file.
const REJECT_BATCH_ROWS: usize = 4096;

/// Where and how a worker writes.
#[derive(Clone, Debug)]
pub struct OutputConfig {
    /// Cold storage: final files, and rejections under `_rejects/`. The writer only proves it
    /// writable; compaction fills it.
    pub out_dir: PathBuf,
    /// Where sealed epochs' files go (rows, and rejections under `_rejects/`): hot storage on
    /// one process, `<out>/_staging` in a cluster (the leader's compactor must see every file).
    pub staging_dir: PathBuf,
    /// Hot storage: files being written. Shared by workers; each removes only its own leftovers.
    pub tmp_dir: PathBuf,
    /// The worker's index, unique across processes: it is part of every file name.
    pub worker: usize,
    /// Vector dimension, from the server's `/info`.
    pub dim: usize,
    /// `model_id` from the server's `/info`.
    pub model_id: String,
    /// Files roll when they reach this size (default 512 MiB).
    pub target_file_bytes: u64,
    /// Rows per Parquet row group (default: 64 Ki rows or about 128 MiB, the fewer).
    pub row_group_rows: usize,
    /// Copy instead of rename even on one file system: exercises the cross-device path in
    /// tests, and is a way out on file systems whose rename misbehaves.
    pub force_copy: bool,
    /// Counters; share one `Arc` between workers to count a whole run.
    pub stats: Arc<OutputStats>,
    /// Key-value metadata for every file besides the model and dimension: the dataset's
    /// identity (`crate::table::identity::DatasetIdentity::key_values`).
    pub key_values: Vec<(String, String)>,
    /// The type of the `id` column (default `extjson`, which takes any id).
    pub id_type: IdType,
}

impl OutputConfig {
    /// Defaults for everything but the directories, the worker and the model.
    pub fn new(
        out_dir: impl Into<PathBuf>,
        tmp_dir: impl Into<PathBuf>,
        worker: usize,
        dim: usize,
        model_id: &str,
    ) -> Self {
        let out_dir = out_dir.into();
        OutputConfig {
            staging_dir: out_dir.join(STAGING_DIR),
            out_dir,
            tmp_dir: tmp_dir.into(),
            worker,
            dim,
            model_id: model_id.to_string(),
            target_file_bytes: DEFAULT_TARGET_FILE_BYTES,
            row_group_rows: default_row_group_rows(dim),
            force_copy: false,
            stats: Arc::default(),
            key_values: Vec::new(),
            id_type: IdType::ExtJson,
        }
    }
}

/// A file in the output directory, as the checkpoint records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Relative to the output directory, e.g. `_rejects/part-….parquet`.
    pub path: PathBuf,
    /// Rows or rejections.
    pub kind: FileKind,
    /// Lowest epoch in the file.
    pub epoch_lo: u64,
    /// Highest epoch in the file.
    pub epoch_hi: u64,
    /// Rows (or rejections) in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// The worker that wrote it.
    pub worker: usize,
    /// When it was sealed (staged), ms since the Unix epoch: compaction's `--max-file-age`
    /// counts from here.
    #[serde(default)]
    pub staged_at_ms: i64,
}

/// The Parquet writer of one worker.
pub struct EpochWriter {
    staging_dir: PathBuf,
    out_dir: PathBuf,
    dim: usize,
    force_copy: bool,
    stats: Arc<OutputStats>,
    id_type: IdType,
    ctx: FileCtx,
    rows: Lanes<RowStage>,
    rejects: Lanes<RejectStage>,
    sealed: Option<u64>,
    poisoned: bool,
}

impl EpochWriter {
    /// Checks the configuration, creates the directories (proving them writable) and removes
    /// this worker's temporary files left by a crash.
    pub fn new(cfg: OutputConfig) -> Result<Self, OutputError> {
        let dim = i32::try_from(cfg.dim)
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| OutputError::Config(format!("vector dimension {} is out of range", cfg.dim)))?;
        if cfg.target_file_bytes == 0 || cfg.row_group_rows == 0 {
            return Err(OutputError::Config("target file size and row group rows must be positive".into()));
        }
        let probe = format!(".tweet-embed-probe-w{:03}", cfg.worker);
        for dir in [
            cfg.tmp_dir.clone(),
            cfg.out_dir.clone(),
            cfg.out_dir.join(FileKind::Rejects.subdir()),
            cfg.out_dir.join(FileKind::Deletions.subdir()),
            cfg.staging_dir.clone(),
            cfg.staging_dir.join(FileKind::Rejects.subdir()),
        ] {
            ensure_writable_dir(&dir, &probe)?;
        }
        remove_own_tmp(&cfg.tmp_dir, cfg.worker)?;
        let row_bytes = cfg.dim.saturating_mul(4).saturating_add(64);
        let row_batch = (STAGE_BYTES / row_bytes).clamp(64, cfg.row_group_rows.max(64));
        let ctx = FileCtx {
            tmp_dir: cfg.tmp_dir,
            worker: cfg.worker,
            next_seq: 1,
            target_file_bytes: cfg.target_file_bytes,
            file_meta: {
                let mut kv = vec![
                    ("tweet_embed.model".to_string(), cfg.model_id.clone()),
                    ("tweet_embed.dim".to_string(), cfg.dim.to_string()),
                    ("tweet_embed.worker".to_string(), cfg.worker.to_string()),
                    (ID_TYPE_KEY.to_string(), cfg.id_type.to_string()),
                ];
                // The identity's own model and dimension replace the plain ones.
                kv.retain(|(k, _)| !cfg.key_values.iter().any(|(k2, _)| k2 == k));
                kv.extend(cfg.key_values.iter().cloned());
                kv
            },
        };
        Ok(EpochWriter {
            staging_dir: cfg.staging_dir,
            out_dir: cfg.out_dir,
            dim: cfg.dim,
            force_copy: cfg.force_copy,
            stats: cfg.stats,
            id_type: cfg.id_type,
            ctx,
            rows: Lanes::new(
                FileKind::Rows,
                RowStage::new(dim, cfg.model_id.into(), cfg.id_type),
                writer_properties(FileKind::Rows, cfg.row_group_rows),
                row_batch,
            ),
            rejects: Lanes::new(
                FileKind::Rejects,
                RejectStage::new(cfg.id_type),
                writer_properties(FileKind::Rejects, cfg.row_group_rows),
                REJECT_BATCH_ROWS.min(cfg.row_group_rows),
            ),
            sealed: None,
            poisoned: false,
        })
    }

    /// The type of the `id` column it writes.
    pub fn id_type(&self) -> IdType {
        self.id_type
    }

    /// Adds an embedded row of `epoch`. Fails for a vector of the wrong dimension or an id that
    /// does not fit the id column ([`OutputError::Stray`]: write it as a rejection; the writer
    /// stays usable for both) or an epoch already sealed, and on I/O errors (the writer is then
    /// done).
    pub fn push_row(&mut self, epoch: u64, row: &EmbeddedRow) -> Result<(), OutputError> {
        self.check(epoch, &row.doc.id)?;
        let result = self.rows.push(&mut self.ctx, epoch, row);
        self.settle(result, false)
    }

    /// Adds a rejection of `epoch`; errors as for [`EpochWriter::push_row`].
    pub fn push_reject(&mut self, epoch: u64, rejection: &Rejection) -> Result<(), OutputError> {
        self.check(epoch, &rejection.doc.id)?;
        let result = self.rejects.push(&mut self.ctx, epoch, rejection);
        self.settle(result, true)
    }

    /// Makes every row and rejection of epochs ≤ `upto` durable in the staging directory and
    /// returns the files that now hold them, ordered by creation: each holds one epoch (more
    /// than one file per epoch when it rolled), none for epochs that had nothing. Afterwards no
    /// open file holds such epochs, and pushing an epoch ≤ `upto` is an error. On error the
    /// writer is done: recreate it after restarting from the checkpoint.
    pub fn seal(&mut self, upto: u64) -> Result<Vec<FileMeta>, OutputError> {
        self.seal_cancelling(upto, &HashSet::new()).map(|(files, _)| files)
    }

    /// [`EpochWriter::seal`], leaving out the rows and rejections whose id is in `cancel`
    /// (documents inserted and deleted within the epoch: no file ever holds them, not even
    /// staged). Returns the files and how many rows it left out.
    pub fn seal_cancelling(
        &mut self,
        upto: u64,
        cancel: &HashSet<String>,
    ) -> Result<(Vec<FileMeta>, u64), OutputError> {
        if self.poisoned {
            return Err(OutputError::Poisoned { worker: self.ctx.worker });
        }
        self.poisoned = true;
        // Ids read back from a file are canonical (an Int32 `_id` reads as Int64).
        let cancel: HashSet<String> = cancel.iter().map(|id| canonical_id(id).into_owned()).collect();
        let cancel = &cancel;
        let mut finished = self.rows.seal(&mut self.ctx, upto)?;
        finished.extend(self.rejects.seal(&mut self.ctx, upto)?);
        finished.sort_by_key(|f| f.name.seq);
        let mut metas = Vec::with_capacity(finished.len());
        let mut dirs: Vec<PathBuf> = Vec::new();
        let now = crate::clock::steady_ms();
        let mut cancelled = 0;
        for mut file in finished {
            if !cancel.is_empty() {
                cancelled += self.leave_out(&mut file, cancel)?;
            }
            let dir = self.staging_dir.join(file.kind.subdir());
            let final_name = file.name.file_name();
            durable_move(&file.tmp_path, &dir, &final_name, &file.name.partial_name(), self.force_copy)?;
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
            self.stats.sealed(file.kind == FileKind::Rejects, file.rows, file.bytes);
            metas.push(FileMeta {
                path: Path::new(file.kind.subdir()).join(final_name),
                kind: file.kind,
                epoch_lo: file.name.epoch_lo,
                epoch_hi: file.name.epoch_hi,
                rows: file.rows,
                bytes: file.bytes,
                worker: file.name.worker,
                staged_at_ms: now,
            });
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        self.sealed = Some(self.sealed.map_or(upto, |s| s.max(upto)));
        self.poisoned = false;
        Ok((metas, cancelled))
    }

    /// Rewrites `file` (finished, still on hot storage) without the rows whose id is in `ids`.
    fn leave_out(&mut self, file: &mut FinishedFile, ids: &HashSet<String>) -> Result<u64, OutputError> {
        if !read_row_ids(&file.tmp_path)?.iter().any(|(id, _)| ids.contains(id)) {
            return Ok(0);
        }
        // A temporary name of this worker's, so a crash here leaves nothing start-up keeps.
        let scratch = self.ctx.tmp_dir.join(super::naming::tmp_name(self.ctx.worker, self.ctx.next_seq));
        self.ctx.next_seq += 1;
        let rows = default_row_group_rows(self.dim);
        let merged = rewrite_without(&file.tmp_path, file.kind, &scratch, rows, &|id, _| ids.contains(id))?;
        file.rows = merged.rows;
        file.bytes = merged.bytes;
        Ok(merged.dropped)
    }

    /// Makes `deletions` (all of epoch `epoch`) durable as one file in the output directory's
    /// `_deletions/`, where readers anti-join at once; `None` when there are none.
    pub fn seal_deletions(&mut self, epoch: u64, deletions: &[Deletion]) -> Result<Option<FileMeta>, OutputError> {
        if deletions.is_empty() {
            return Ok(None);
        }
        let seq = self.ctx.next_seq;
        self.ctx.next_seq += 1;
        let name = PartName { epoch_lo: epoch, epoch_hi: epoch, worker: self.ctx.worker, seq };
        let (path, bytes) = append_to_log(&self.out_dir, name, deletions, self.id_type, &self.ctx.file_meta)?;
        Ok(Some(FileMeta {
            path,
            kind: FileKind::Deletions,
            epoch_lo: epoch,
            epoch_hi: epoch,
            rows: deletions.len() as u64,
            bytes,
            worker: self.ctx.worker,
            staged_at_ms: crate::clock::steady_ms(),
        }))
    }

    /// The highest epoch sealed so far.
    pub fn sealed_upto(&self) -> Option<u64> {
        self.sealed
    }

    /// Rows and rejections held only in memory, not yet handed to a file.
    pub fn staged(&self) -> usize {
        self.rows.staged() + self.rejects.staged()
    }

    /// The counters this writer adds to.
    pub fn stats(&self) -> &Arc<OutputStats> {
        &self.stats
    }

    fn check(&self, epoch: u64, id: &str) -> Result<(), OutputError> {
        if self.poisoned {
            return Err(OutputError::Poisoned { worker: self.ctx.worker });
        }
        match self.sealed {
            Some(sealed) if epoch <= sealed => Err(OutputError::LateEpoch { id: id.to_string(), epoch, sealed }),
            _ => Ok(()),
        }
    }

    /// Counts a push, or poisons the writer unless the error left its state untouched.
    fn settle(&mut self, result: Result<(), OutputError>, reject: bool) -> Result<(), OutputError> {
        match result {
            Ok(()) => {
                self.stats.pushed(reject);
                Ok(())
            }
            Err(e @ (OutputError::Dim { .. } | OutputError::Stray { .. })) => Err(e),
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }
}

/// Removes `worker`'s files in `tmp_dir` left by an earlier process: never committed, since
/// nothing is committed before it was moved out of `tmp_dir`.
fn remove_own_tmp(tmp_dir: &Path, worker: usize) -> Result<(), OutputError> {
    let entries = std::fs::read_dir(tmp_dir).map_err(|e| OutputError::io("list", tmp_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| OutputError::io("list", tmp_dir, e))?;
        if entry.file_name().to_str().is_some_and(|n| is_tmp_of(n, worker)) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| OutputError::io("remove leftover", &path, e))?;
            tracing::debug!(path = %path.display(), "removed a temporary output file left by an earlier run");
        }
    }
    Ok(())
}
