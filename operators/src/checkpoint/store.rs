//! The checkpoint: one small JSON file on hot storage recording how far the run is committed
//! and marked, the files a restart must mark again, and where the sources resume. It is
//! replaced atomically (temp file, fsync, rename, fsync the directory), so a crash leaves the
//! old or the new checkpoint, never a mix. A checkpoint that exists but cannot be read is an
//! error, never "no checkpoint": that would silently redo and duplicate committed output.

use crate::clock::wall_ms;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::output::fsio::{ensure_writable_dir, sync_dir};
use crate::output::{FileMeta, IdType, OutputError};

/// The format version this build writes. Version 1 (before staging and compaction) is read as
/// a checkpoint with nothing staged: its files are all in the output directory already.
pub const CHECKPOINT_VERSION: u32 = 2;
const FILE_NAME: &str = "checkpoint.json";
const TMP_NAME: &str = "checkpoint.json.tmp";

/// Where the sources resume after the last committed epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePositions {
    /// Backfill cursor per partition key: the last `_id` read, as extended JSON.
    pub backfill: BTreeMap<String, String>,
    /// The change stream's resume token, as JSON text.
    pub resume_token: Option<String>,
    /// The cluster time to start the change stream at when there is no token: `(t, i)`.
    pub cluster_time: Option<(u32, u32)>,
}

/// The durable state of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version, [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Every epoch ≤ this is durable in the output directory.
    pub committed: u64,
    /// Every epoch ≤ this is marked in Mongo; never above `committed`.
    pub marked: u64,
    /// Files holding epochs > `marked`: what a restart must mark again (paths relative to the
    /// staging directory; every one is also in `staged`).
    pub files: Vec<FileMeta>,
    /// Committed files in the staging directory, not yet compacted into the output directory
    /// (paths relative to the staging directory). Recovery removes every staged file not listed.
    #[serde(default)]
    pub staged: Vec<FileMeta>,
    /// A compaction's switch under way: its output is listed here from the moment its inputs
    /// leave `staged`, so a crash leaves exactly one of the two listed (see `crate::compaction`).
    #[serde(default)]
    pub compacting: Option<Switch>,
    /// Recorded deletions (`_deletions/`) of epochs ≤ this are applied to every file in the
    /// output directory.
    #[serde(default)]
    pub deletions_applied: u64,
    /// The next number for a compacted file's name, so names never repeat across runs.
    #[serde(default)]
    pub next_file_seq: u64,
    /// Files compaction wrote into the output directory, all runs together.
    #[serde(default)]
    pub compactions: u64,
    /// Deletions recorded in `_deletions/` (by the change stream or `reconcile`), all runs together.
    #[serde(default)]
    pub deletions_recorded: u64,
    /// Of those, how many are applied to the output directory's files.
    #[serde(default)]
    pub deletions_done: u64,
    /// How the dataset's vectors are made; `None` until a run records it (and in checkpoints
    /// written before identities were recorded).
    #[serde(default)]
    pub identity: Option<crate::identity::DatasetIdentity>,
    /// Where the sources resume.
    pub sources: SourcePositions,
    /// When it was written, ms since the Unix epoch.
    pub updated_at_ms: i64,
    /// Documents marked through this state directory, all runs together.
    #[serde(default)]
    pub documents_marked: u64,
    /// `(ms since the Unix epoch, documents_marked)` at the last [`RECENT_COMMITS`] commits, for
    /// `status` to tell the rate without watching.
    #[serde(default)]
    pub recent: Vec<(i64, u64)>,
    /// The type of the output's `id` column, decided at the dataset's first start and never
    /// again (`crate::output::id_type`); `None` before that, and in checkpoints written before
    /// id types were recorded (see [`Checkpoint::recorded_id_type`]).
    #[serde(default)]
    pub id_type: Option<IdType>,
}

/// A compaction's switch from staged files to one file in the output directory, recorded before
/// the output is renamed into place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    /// The output file (path relative to the output directory, its final name).
    pub output: FileMeta,
    /// The name it is written under until the rename (in the same directory).
    pub partial: String,
    /// The staged inputs (paths relative to the staging directory), removed after the rename.
    pub inputs: Vec<PathBuf>,
}

/// Commits kept in [`Checkpoint::recent`].
pub const RECENT_COMMITS: usize = 64;

impl Checkpoint {
    /// Files and bytes in the staging directory waiting for compaction: the staged files, and
    /// the inputs of a switch under way (still there until it ends; the merged file's size
    /// stands for theirs).
    pub fn staged_size(&self) -> (u64, u64) {
        let (files, bytes) = self.compacting.as_ref().map_or((0, 0), |s| (s.inputs.len(), s.output.bytes));
        ((self.staged.len() + files) as u64, self.staged.iter().map(|f| f.bytes).sum::<u64>() + bytes)
    }

    /// A checkpoint of the current format, stamped now.
    pub fn new(committed: u64, marked: u64, files: Vec<FileMeta>, sources: SourcePositions) -> Self {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            committed,
            marked,
            files,
            staged: Vec::new(),
            compacting: None,
            deletions_applied: 0,
            next_file_seq: 0,
            compactions: 0,
            deletions_recorded: 0,
            deletions_done: 0,
            identity: None,
            sources,
            updated_at_ms: wall_ms(),
            documents_marked: 0,
            recent: Vec::new(),
            id_type: None,
        }
    }

    /// The id type of the dataset's files: as recorded; `extjson`, the only encoding there was,
    /// when epochs were committed before id types were recorded; `None` while nothing is.
    pub fn recorded_id_type(&self) -> Option<IdType> {
        self.id_type.or((self.committed > 0).then_some(IdType::ExtJson))
    }

    /// Counts `n` more documents marked, now.
    pub fn note_marked(&mut self, n: u64) {
        self.documents_marked += n;
        self.recent.push((wall_ms(), self.documents_marked));
        let excess = self.recent.len().saturating_sub(RECENT_COMMITS);
        self.recent.drain(..excess);
    }
}

/// The checkpoint file of a state directory. One run at a time may use a state directory.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    path: PathBuf,
}

impl CheckpointStore {
    /// Creates `state_dir` if needed and proves it writable.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<Self, OutputError> {
        let dir = state_dir.into();
        ensure_writable_dir(&dir, ".tweet-embed-probe-checkpoint")?;
        let path = dir.join(FILE_NAME);
        Ok(CheckpointStore { dir, path })
    }

    /// The checkpoint file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint, or `None` when none was ever saved. A temporary file left by a crash
    /// during `save` is ignored: the rename that would have published it never happened.
    pub fn load(&self) -> Result<Option<Checkpoint>, OutputError> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OutputError::io("read checkpoint", &self.path, e)),
        };
        let corrupt = |reason: String| OutputError::CorruptCheckpoint { path: self.path.clone(), reason };
        let mut checkpoint: Checkpoint = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if checkpoint.version != CHECKPOINT_VERSION && checkpoint.version != 1 {
            return Err(corrupt(format!(
                "format version {} (this build reads {CHECKPOINT_VERSION})",
                checkpoint.version
            )));
        }
        if checkpoint.marked > checkpoint.committed {
            return Err(corrupt(format!("marked {} is above committed {}", checkpoint.marked, checkpoint.committed)));
        }
        if checkpoint.version == 1 {
            // Version 1 wrote every file straight into the output directory and listed files to
            // re-mark by their path there; nothing was staged.
            if !checkpoint.files.is_empty() {
                return Err(corrupt(
                    "format version 1 with epochs still to mark: finish them with the previous release first".into(),
                ));
            }
            checkpoint.version = CHECKPOINT_VERSION;
            checkpoint.deletions_applied = checkpoint.committed;
        }
        Ok(Some(checkpoint))
    }

    /// Replaces the checkpoint atomically and durably.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), OutputError> {
        if checkpoint.marked > checkpoint.committed {
            return Err(OutputError::Config(format!(
                "refusing to save a checkpoint marked at {} above committed {}",
                checkpoint.marked, checkpoint.committed
            )));
        }
        let text = serde_json::to_vec_pretty(checkpoint)
            .map_err(|e| OutputError::io("encode checkpoint", &self.path, io::Error::other(e)))?;
        let tmp = self.dir.join(TMP_NAME);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| OutputError::io("create", &tmp, e))?;
        file.write_all(&text).map_err(|e| OutputError::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| OutputError::io("fsync", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(|e| OutputError::io("replace checkpoint with", &tmp, e))?;
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::naming::FileKind;

    fn sample() -> Checkpoint {
        let mut sources = SourcePositions::default();
        sources.backfill.insert("en/false".into(), r#"{"$oid":"65a1b2c3d4e5f60718293a4b"}"#.into());
        sources.resume_token = Some(r#"{"_data":"8265"}"#.into());
        sources.cluster_time = Some((1_700_000_000, 3));
        let file = FileMeta {
            path: "part-e000000000007-e000000000007-w000-0001.parquet".into(),
            kind: FileKind::Rows,
            epoch_lo: 7,
            epoch_hi: 7,
            rows: 10,
            bytes: 1000,
            worker: 0,
            staged_at_ms: 0,
        };
        Checkpoint::new(7, 6, vec![file], sources)
    }

    #[test]
    fn missing_is_none_and_saved_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("state")).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let cp = sample();
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp.clone()));
        let next = Checkpoint { committed: 8, marked: 8, files: vec![], ..cp };
        store.save(&next).unwrap();
        assert_eq!(store.load().unwrap(), Some(next));
    }

    #[test]
    fn the_id_type_is_recorded_and_older_checkpoints_are_extjson() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let cp = Checkpoint { id_type: Some(IdType::Int64), ..sample() };
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap().and_then(|c| c.recorded_id_type()), Some(IdType::Int64));
        // A checkpoint of an earlier build has no such field.
        let mut old = serde_json::to_value(sample()).unwrap();
        old.as_object_mut().unwrap().remove("id_type");
        fs::write(store.path(), old.to_string()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!((loaded.id_type, loaded.recorded_id_type()), (None, Some(IdType::ExtJson)));
        let fresh = Checkpoint::new(0, 0, Vec::new(), SourcePositions::default());
        assert_eq!(fresh.recorded_id_type(), None);
    }

    #[test]
    fn a_stray_temp_file_from_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        fs::write(dir.path().join(TMP_NAME), b"{\"version\":1,\"committ").unwrap();
        assert_eq!(store.load().unwrap(), None);
        let cp = sample();
        store.save(&cp).unwrap();
        fs::write(dir.path().join(TMP_NAME), b"garbage").unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        for bad in [&b""[..], b"{", b"{\"version\":99}"] {
            fs::write(store.path(), bad).unwrap();
            let err = store.load().unwrap_err();
            assert!(matches!(err, OutputError::CorruptCheckpoint { .. }), "{err}");
            assert!(err.to_string().contains("checkpoint.json"), "{err}");
        }
        let mut wrong_version = serde_json::to_value(sample()).unwrap();
        wrong_version["version"] = 3.into();
        fs::write(store.path(), wrong_version.to_string()).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("format version 3"));
    }

    #[test]
    fn marked_above_committed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let cp = Checkpoint { marked: 9, ..sample() };
        assert!(store.save(&cp).is_err());
        assert_eq!(store.load().unwrap(), None);
    }
}
