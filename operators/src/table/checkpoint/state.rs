//! [`Checkpoint`]: the protocol state of a run (see the parent module). Its fields are its own:
//! readers use its accessors, and every change is one of the named steps below, made through
//! [`super::Ledger`] (for the commit, the marks, the compaction switch, the deletion log's
//! producers, the run's start and recovery), which saves it before anyone sees it. [`Stored`] is
//! its file format, shared with status's [`CommitHistory`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::history::CommitHistory;
use crate::clock::wall_ms;
use crate::table::identity::DatasetIdentity;
use crate::table::output::{FileMeta, IdType};

/// The format version this build writes. Version 1 (before staging and compaction) is read as
/// a checkpoint with nothing staged: its files are all in the output directory already.
pub const CHECKPOINT_VERSION: u32 = 2;

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

/// The durable state of a run: how far it is committed and marked, the files a restart must
/// mark again or compact, the compaction switch under way, the deletion log's progress, the
/// dataset's identity and id type, and where the sources resume. Field by field, see [`Stored`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    committed: u64,
    marked: u64,
    files: Vec<FileMeta>,
    staged: Vec<FileMeta>,
    compacting: Option<Switch>,
    deletions_applied: u64,
    next_file_seq: u64,
    compactions: u64,
    deletions_recorded: u64,
    deletions_done: u64,
    /// Without an id type: the dataset's is `id_type`, the one place it is kept.
    identity: Option<DatasetIdentity>,
    id_type: Option<IdType>,
    sources: SourcePositions,
    updated_at_ms: i64,
}

/// Reading.
impl Checkpoint {
    /// A checkpoint committed to `committed` and marked to `marked`, listing `files` to mark again,
    /// with the sources at `sources`, nothing staged, no identity or id type, stamped now.
    pub fn new(committed: u64, marked: u64, files: Vec<FileMeta>, sources: SourcePositions) -> Self {
        Checkpoint {
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
            id_type: None,
            sources,
            updated_at_ms: wall_ms(),
        }
    }

    /// Every epoch ≤ this is durable (staged or in the output directory).
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Every epoch ≤ this is marked in Mongo; never above [`Self::committed`].
    pub fn marked(&self) -> u64 {
        self.marked
    }

    /// Files holding epochs > [`Self::marked`]: what a restart must mark again (paths relative
    /// to the staging directory; every one is also in [`Self::staged`]).
    pub fn files(&self) -> &[FileMeta] {
        &self.files
    }

    /// Committed files in the staging directory, not yet compacted into the output directory
    /// (paths relative to the staging directory). Recovery removes every staged file not listed.
    pub fn staged(&self) -> &[FileMeta] {
        &self.staged
    }

    /// A compaction's switch under way: its output is listed here from the moment its inputs
    /// leave [`Self::staged`], so a crash leaves exactly one of the two listed.
    pub fn compacting(&self) -> Option<&Switch> {
        self.compacting.as_ref()
    }

    /// Recorded deletions (`_deletions/`) of epochs ≤ this are applied to every file in the
    /// output directory.
    pub fn deletions_applied(&self) -> u64 {
        self.deletions_applied
    }

    /// The next number for a file name the checkpoint hands out, so names never repeat across runs.
    pub fn next_file_seq(&self) -> u64 {
        self.next_file_seq
    }

    /// Files compaction wrote into the output directory, all runs together.
    pub fn compactions(&self) -> u64 {
        self.compactions
    }

    /// Deletions recorded in `_deletions/` (by the change stream, vanished documents or
    /// `reconcile`), all runs together.
    pub fn deletions_recorded(&self) -> u64 {
        self.deletions_recorded
    }

    /// Of [`Self::deletions_recorded`], how many are applied to the output directory's files.
    pub fn deletions_done(&self) -> u64 {
        self.deletions_done
    }

    /// How the dataset's vectors are made, with its id type ([`Self::id_type`]); `None` until a
    /// run records it (and in checkpoints written before identities were recorded).
    pub fn identity(&self) -> Option<DatasetIdentity> {
        self.identity.clone().map(|mut identity| {
            identity.id_type = self.id_type;
            identity
        })
    }

    /// Whether a dataset identity is recorded.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The type of the output's `id` column, decided at the dataset's first start and never
    /// again (`crate::table::output::id_type`); `None` before that, and in checkpoints written before
    /// id types were recorded (see [`Self::recorded_id_type`]).
    pub fn id_type(&self) -> Option<IdType> {
        self.id_type
    }

    /// The id type of the dataset's files: as recorded; `extjson`, the only encoding there was,
    /// when epochs were committed before id types were recorded; `None` while nothing is.
    pub fn recorded_id_type(&self) -> Option<IdType> {
        self.id_type.or((self.committed > 0).then_some(IdType::ExtJson))
    }

    /// Where the sources resume.
    pub fn sources(&self) -> &SourcePositions {
        &self.sources
    }

    /// When it was last changed, ms since the Unix epoch.
    pub fn updated_at_ms(&self) -> i64 {
        self.updated_at_ms
    }

    /// Files and bytes in the staging directory waiting for compaction: the staged files, and
    /// the inputs of a switch under way (still there until it ends; the merged file's size
    /// stands for theirs).
    pub fn staged_size(&self) -> (u64, u64) {
        let (files, bytes) = self.compacting.as_ref().map_or((0, 0), |s| (s.inputs.len(), s.output.bytes));
        ((self.staged.len() + files) as u64, self.staged.iter().map(|f| f.bytes).sum::<u64>() + bytes)
    }
}

/// The protocol's steps, each called by one [`super::Ledger`] change, which saves the result
/// before anyone sees it.
impl Checkpoint {
    /// Stamps the change time, `at_ms` (ms since the Unix epoch).
    pub(super) fn stamp(&mut self, at_ms: i64) {
        self.updated_at_ms = at_ms;
    }

    /// Step 2: `epoch` is committed with its durable `files` (staged, and listed to mark again)
    /// and `deletions` recorded in the writers' deletion files; the stream resumes at
    /// `position` (its resume token as JSON, its cluster time) when there is one.
    pub(super) fn commit(
        &mut self,
        epoch: u64,
        files: Vec<FileMeta>,
        deletions: u64,
        position: Option<(&str, Option<(u32, u32)>)>,
    ) {
        self.files.extend(files.iter().cloned());
        self.staged.extend(files);
        self.committed = epoch;
        self.deletions_recorded += deletions;
        if let Some((token, cluster_time)) = position {
            self.sources.resume_token = Some(token.to_string());
            self.sources.cluster_time = cluster_time;
        }
    }

    /// Epochs up to `epoch` had no output: committed and marked move together to it, and the
    /// stream resumes at `token` (JSON), of `cluster_time`.
    pub(super) fn commit_position(&mut self, epoch: u64, token: String, cluster_time: Option<(u32, u32)>) {
        self.sources.resume_token = Some(token);
        self.sources.cluster_time = cluster_time;
        self.committed = epoch;
        self.marked = epoch;
    }

    /// Step 3: the documents of epochs ≤ `epoch` are marked; their files need no re-marking.
    pub(super) fn mark(&mut self, epoch: u64) {
        self.marked = epoch;
        self.files.retain(|f| f.epoch_hi > epoch);
    }

    /// Hands out the next file sequence number.
    pub(super) fn reserve_seq(&mut self) -> u64 {
        self.next_file_seq += 1;
        self.next_file_seq - 1
    }

    /// `n` more deletions are recorded, in a file of sequence `seq`.
    pub(super) fn note_deletions_recorded(&mut self, n: u64, seq: u64) {
        self.deletions_recorded += n;
        self.next_file_seq = self.next_file_seq.max(seq + 1);
    }

    /// A compaction's switch begins: its inputs leave the staged files as it is recorded; its
    /// output's name has sequence `seq`.
    pub(super) fn begin_switch(&mut self, switch: Switch, seq: u64) {
        self.staged.retain(|f| !switch.inputs.contains(&f.path));
        self.compacting = Some(switch);
        self.next_file_seq = self.next_file_seq.max(seq + 1);
        self.compactions += 1;
    }

    /// The switch under way ends.
    pub(super) fn end_switch(&mut self) {
        self.compacting = None;
    }

    /// Deletions of epochs ≤ `upto` are applied; `count` more are done.
    pub(super) fn note_deletions_applied(&mut self, upto: u64, count: u64) {
        self.deletions_applied = self.deletions_applied.max(upto);
        self.deletions_done = (self.deletions_done + count).min(self.deletions_recorded);
    }

    /// The change stream's position is forgotten (its history is lost).
    pub(super) fn forget_stream_position(&mut self) {
        self.sources.resume_token = None;
        self.sources.cluster_time = None;
    }

    /// `identity` becomes the dataset's (`None`: none). Its id type is not taken: the dataset's
    /// is [`Self::set_id_type`]'s.
    pub(super) fn set_identity(&mut self, identity: Option<DatasetIdentity>) {
        self.identity = identity.map(|mut identity| {
            identity.id_type = None;
            identity
        });
    }

    /// `id_type` becomes the dataset's id column type.
    pub(super) fn set_id_type(&mut self, id_type: IdType) {
        self.id_type = Some(id_type);
    }
}

/// The checkpoint file's content: a [`Checkpoint`] and, beside it, status's [`CommitHistory`]
/// (`documents_marked`, `recent`). The id type is written in both `id_type` and `identity`, as
/// earlier builds wrote and read it; a file with either is read as that id type.
#[derive(Serialize, Deserialize)]
pub(super) struct Stored {
    /// Format version, [`CHECKPOINT_VERSION`].
    version: u32,
    committed: u64,
    marked: u64,
    files: Vec<FileMeta>,
    #[serde(default)]
    staged: Vec<FileMeta>,
    #[serde(default)]
    compacting: Option<Switch>,
    #[serde(default)]
    deletions_applied: u64,
    #[serde(default)]
    next_file_seq: u64,
    #[serde(default)]
    compactions: u64,
    #[serde(default)]
    deletions_recorded: u64,
    #[serde(default)]
    deletions_done: u64,
    #[serde(default)]
    identity: Option<DatasetIdentity>,
    sources: SourcePositions,
    /// ms since the Unix epoch.
    updated_at_ms: i64,
    /// [`CommitHistory::documents_marked`].
    #[serde(default)]
    documents_marked: u64,
    /// [`CommitHistory::recent`].
    #[serde(default)]
    recent: Vec<(i64, u64)>,
    #[serde(default)]
    id_type: Option<IdType>,
}

impl Stored {
    /// What saving `cp` and `history` writes.
    pub(super) fn new(cp: &Checkpoint, history: &CommitHistory) -> Stored {
        let cp = cp.clone();
        Stored {
            version: CHECKPOINT_VERSION,
            committed: cp.committed,
            marked: cp.marked,
            identity: cp.identity(),
            files: cp.files,
            staged: cp.staged,
            compacting: cp.compacting,
            deletions_applied: cp.deletions_applied,
            next_file_seq: cp.next_file_seq,
            compactions: cp.compactions,
            deletions_recorded: cp.deletions_recorded,
            deletions_done: cp.deletions_done,
            sources: cp.sources,
            updated_at_ms: cp.updated_at_ms,
            documents_marked: history.documents_marked(),
            recent: history.recent().to_vec(),
            id_type: cp.id_type,
        }
    }

    /// The checkpoint and history the file holds, a version 1 file upgraded. Errors, with the
    /// reason: another version, marks above the commit, or a version 1 file with epochs still to
    /// mark.
    pub(super) fn into_parts(self) -> Result<(Checkpoint, CommitHistory), String> {
        if self.version != CHECKPOINT_VERSION && self.version != 1 {
            return Err(format!("format version {} (this build reads {CHECKPOINT_VERSION})", self.version));
        }
        if self.marked > self.committed {
            return Err(format!("marked {} is above committed {}", self.marked, self.committed));
        }
        let mut deletions_applied = self.deletions_applied;
        if self.version == 1 {
            // Version 1 wrote every file straight into the output directory and listed files to
            // re-mark by their path there; nothing was staged.
            if !self.files.is_empty() {
                return Err(
                    "format version 1 with epochs still to mark: finish them with the previous release first".into()
                );
            }
            deletions_applied = self.committed;
        }
        let id_type = self.id_type.or(self.identity.as_ref().and_then(|i| i.id_type));
        let mut checkpoint = Checkpoint {
            committed: self.committed,
            marked: self.marked,
            files: self.files,
            staged: self.staged,
            compacting: self.compacting,
            deletions_applied,
            next_file_seq: self.next_file_seq,
            compactions: self.compactions,
            deletions_recorded: self.deletions_recorded,
            deletions_done: self.deletions_done,
            identity: None,
            id_type,
            sources: self.sources,
            updated_at_ms: self.updated_at_ms,
        };
        checkpoint.set_identity(self.identity);
        Ok((checkpoint, CommitHistory::new(self.documents_marked, self.recent)))
    }
}
