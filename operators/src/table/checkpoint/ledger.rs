//! [`Ledger`]: the one in-memory copy of a run's checkpoint, shared by the committer, the
//! compactor and the planner, each change saved before the lock is released. Two writers each
//! keeping their own copy would overwrite each other's saves: a commit could undo a compaction's
//! switch and list files that no longer exist.

use std::sync::Arc;

use parking_lot::Mutex;

use super::history::CommitHistory;
use super::state::{Checkpoint, Switch};
use super::store::CheckpointStore;
use crate::clock::wall_ms;
use crate::table::identity::DatasetIdentity;
use crate::table::output::IdType;
use crate::table::output::OutputError;

/// The checkpoint of a running leader. Cheap to clone; every clone is the same checkpoint.
#[derive(Clone, Debug)]
pub struct Ledger {
    store: CheckpointStore,
    held: Arc<Mutex<Held>>,
}

/// What the checkpoint file holds, as last saved.
#[derive(Clone, Debug)]
struct Held {
    checkpoint: Checkpoint,
    history: CommitHistory,
}

impl Ledger {
    /// Takes over `checkpoint`, with no commit history yet (a fresh state directory), and the
    /// file it is saved to. A run takes over its state directory's checkpoint and history
    /// through recovery (`super::recover`), a tool through [`Ledger::open`].
    pub fn new(store: CheckpointStore, checkpoint: Checkpoint) -> Ledger {
        Ledger::with_history(store, checkpoint, CommitHistory::default())
    }

    /// Takes over `checkpoint` and the commit `history` saved beside it, and their file.
    pub(super) fn with_history(store: CheckpointStore, checkpoint: Checkpoint, history: CommitHistory) -> Ledger {
        Ledger { store, held: Arc::new(Mutex::new(Held { checkpoint, history })) }
    }

    /// The checkpoint (and history) `store` holds, or `None` when none was ever saved. Errors: it
    /// cannot be read.
    pub fn open(store: CheckpointStore) -> Result<Option<Ledger>, OutputError> {
        Ok(store.load_with_history()?.map(|(checkpoint, history)| Ledger::with_history(store, checkpoint, history)))
    }

    /// Reads the checkpoint as last changed without copying it (what a hot path wants).
    pub fn read<R>(&self, f: impl FnOnce(&Checkpoint) -> R) -> R {
        f(&self.held.lock().checkpoint)
    }

    /// A copy of the checkpoint as last changed.
    pub fn snapshot(&self) -> Checkpoint {
        self.held.lock().checkpoint.clone()
    }

    /// Changes the checkpoint (and the commit history) with `change`, stamps it, and saves both
    /// durably before anyone else sees or changes them. If the save fails the change is undone
    /// in memory too, and the error returned. This file's only: the rest of the crate changes the
    /// checkpoint through the named changes below.
    fn change<R>(&self, change: impl FnOnce(&mut Checkpoint, &mut CommitHistory) -> R) -> Result<R, OutputError> {
        let mut held = self.held.lock();
        let mut next = held.clone();
        let r = change(&mut next.checkpoint, &mut next.history);
        next.checkpoint.stamp(wall_ms());
        self.store.save(&next.checkpoint, &next.history)?;
        *held = next;
        Ok(r)
    }

    /// [`Self::change`] of the checkpoint alone.
    fn update<R>(&self, change: impl FnOnce(&mut Checkpoint) -> R) -> Result<R, OutputError> {
        self.change(|cp, _| change(cp))
    }

    /// The checkpoint file.
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }
}

/// The protocol's own changes: the commit and the marks (`super::commit`, [`super::mark_epoch`])
/// and recovery's end of an interrupted switch.
impl Ledger {
    /// Step 2: `epoch` is committed with the durable `files` and the `deletions` its writers
    /// recorded; the stream resumes at `position` (resume token as JSON, cluster time).
    pub(super) fn commit(
        &self,
        epoch: u64,
        files: Vec<crate::table::output::FileMeta>,
        deletions: u64,
        position: Option<(&str, Option<(u32, u32)>)>,
    ) -> Result<(), OutputError> {
        self.update(|cp| cp.commit(epoch, files, deletions, position))
    }

    /// Epochs up to `epoch` had no output: committed and marked together, the stream resuming at
    /// `token` (JSON), of `cluster_time`.
    pub(super) fn commit_position(
        &self,
        epoch: u64,
        token: String,
        cluster_time: Option<(u32, u32)>,
    ) -> Result<(), OutputError> {
        self.update(|cp| cp.commit_position(epoch, token, cluster_time))
    }

    /// Step 3: epochs ≤ `epoch` are marked, `documents` more documents now (counted in the commit
    /// history).
    pub(super) fn mark(&self, epoch: u64, documents: u64) -> Result<(), OutputError> {
        self.change(|cp, history| {
            cp.mark(epoch);
            history.note_marked(documents, wall_ms());
        })
    }
}

/// The named changes to the checkpoint that code outside this module makes: each is one
/// saved change, saved before it returns.
impl Ledger {
    /// Reserves the next file sequence number, so file names never repeat across runs.
    pub fn reserve_seq(&self) -> Result<u64, OutputError> {
        self.update(Checkpoint::reserve_seq)
    }

    /// Counts `n` deletions recorded in the deletion log under a file of sequence `seq`.
    pub fn note_deletions_recorded(&self, n: u64, seq: u64) -> Result<(), OutputError> {
        self.update(|cp| cp.note_deletions_recorded(n, seq))
    }

    /// A compaction's switch begins (see `crate::table::compaction`): its inputs leave `staged` and the
    /// switch is recorded in the same save, so a crash leaves exactly one of the two listed.
    pub fn begin_switch(&self, switch: Switch, seq: u64) -> Result<(), OutputError> {
        self.update(|cp| cp.begin_switch(switch, seq))
    }

    /// The switch under way ended: its output is in place and its inputs are gone.
    pub fn end_switch(&self) -> Result<(), OutputError> {
        self.update(Checkpoint::end_switch)
    }

    /// Recorded deletions of epochs ≤ `upto` are applied to every file of the output directory;
    /// `count` more are done.
    pub fn note_deletions_applied(&self, upto: u64, count: u64) -> Result<(), OutputError> {
        self.update(|cp| cp.note_deletions_applied(upto, count))
    }

    /// Forgets the change stream's position (its history is lost: the next open is at now).
    pub fn forget_stream_position(&self) -> Result<(), OutputError> {
        self.update(Checkpoint::forget_stream_position)
    }

    /// Records `identity` as the dataset's (`None`: none yet, to record the next run's). Its id
    /// type is not taken: the dataset's is [`Self::set_id_type`]'s.
    pub fn set_identity(&self, identity: Option<DatasetIdentity>) -> Result<(), OutputError> {
        self.update(|cp| cp.set_identity(identity))
    }

    /// Records the dataset's id column type (the identity's too: it is kept once).
    pub fn set_id_type(&self, id_type: IdType) -> Result<(), OutputError> {
        self.update(|cp| cp.set_id_type(id_type))
    }
}
