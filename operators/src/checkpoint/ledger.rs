//! [`Ledger`]: the one in-memory copy of a run's checkpoint, shared by the committer, the
//! compactor and the planner, each change saved before the lock is released. Two writers each
//! keeping their own copy would overwrite each other's saves: a commit could undo a compaction's
//! switch and list files that no longer exist.

use std::sync::Arc;

use parking_lot::Mutex;

use super::store::{Checkpoint, CheckpointStore, Switch};
use crate::clock::wall_ms;
use crate::identity::DatasetIdentity;
use crate::output::IdType;
use crate::output::OutputError;

/// The checkpoint of a running leader. Cheap to clone; every clone is the same checkpoint.
#[derive(Clone, Debug)]
pub struct Ledger {
    store: CheckpointStore,
    checkpoint: Arc<Mutex<Checkpoint>>,
}

impl Ledger {
    /// Takes over `checkpoint` (as recovery left it) and the file it is saved to.
    pub fn new(store: CheckpointStore, checkpoint: Checkpoint) -> Ledger {
        Ledger { store, checkpoint: Arc::new(Mutex::new(checkpoint)) }
    }

    /// Reads the checkpoint as last changed without copying it (what a hot path wants).
    pub fn read<R>(&self, f: impl FnOnce(&Checkpoint) -> R) -> R {
        f(&self.checkpoint.lock())
    }

    /// A copy of the checkpoint as last changed.
    pub fn snapshot(&self) -> Checkpoint {
        self.checkpoint.lock().clone()
    }

    /// Changes the checkpoint with `change` and saves it durably before anyone else sees or
    /// changes it. If the save fails the change is undone in memory too, and the error returned.
    /// This module's only: the rest of the crate changes the checkpoint through the named
    /// changes below, the commit and [`super::mark_epoch`].
    pub(super) fn update<R>(&self, change: impl FnOnce(&mut Checkpoint) -> R) -> Result<R, OutputError> {
        let mut held = self.checkpoint.lock();
        let mut next = held.clone();
        let r = change(&mut next);
        next.updated_at_ms = wall_ms();
        self.store.save(&next)?;
        *held = next;
        Ok(r)
    }

    /// The checkpoint file.
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }
}

/// The named changes to the checkpoint that code outside this module makes: each is one
/// [`Ledger::update`], saved before it returns. (The commit, mark and vanished-deletion steps are
/// this module's own.)
impl Ledger {
    /// Reserves the next file sequence number, so file names never repeat across runs.
    pub fn reserve_seq(&self) -> Result<u64, OutputError> {
        self.update(|cp| {
            cp.next_file_seq += 1;
            cp.next_file_seq - 1
        })
    }

    /// Counts `n` deletions recorded in the deletion log under a file of sequence `seq`.
    pub fn note_deletions_recorded(&self, n: u64, seq: u64) -> Result<(), OutputError> {
        self.update(|cp| {
            cp.deletions_recorded += n;
            cp.next_file_seq = cp.next_file_seq.max(seq + 1);
        })
    }

    /// A compaction's switch begins (see `crate::compaction`): its inputs leave `staged` and the
    /// switch is recorded in the same save, so a crash leaves exactly one of the two listed.
    pub fn begin_switch(&self, switch: Switch, seq: u64) -> Result<(), OutputError> {
        self.update(|cp| {
            cp.staged.retain(|f| !switch.inputs.contains(&f.path));
            cp.compacting = Some(switch);
            cp.next_file_seq = cp.next_file_seq.max(seq + 1);
            cp.compactions += 1;
        })
    }

    /// The switch under way ended: its output is in place and its inputs are gone.
    pub fn end_switch(&self) -> Result<(), OutputError> {
        self.update(|cp| cp.compacting = None)
    }

    /// Recorded deletions of epochs ≤ `upto` are applied to every file of the output directory;
    /// `count` more are done.
    pub fn note_deletions_applied(&self, upto: u64, count: u64) -> Result<(), OutputError> {
        self.update(|cp| {
            cp.deletions_applied = cp.deletions_applied.max(upto);
            cp.deletions_done = (cp.deletions_done + count).min(cp.deletions_recorded);
        })
    }

    /// Forgets the change stream's position (its history is lost: the next open is at now).
    pub fn forget_stream_position(&self) -> Result<(), OutputError> {
        self.update(|cp| {
            cp.sources.resume_token = None;
            cp.sources.cluster_time = None;
        })
    }

    /// Records `identity` as the dataset's (`None`: none yet, to record the next run's).
    pub fn set_identity(&self, identity: Option<DatasetIdentity>) -> Result<(), OutputError> {
        self.update(|cp| cp.identity = identity)
    }

    /// Records the dataset's id column type, in the checkpoint and in its identity (where the
    /// identity has one, or `fill_identity` asks for it).
    pub fn set_id_type(&self, id_type: IdType, fill_identity: bool) -> Result<(), OutputError> {
        self.update(|cp| {
            cp.id_type = Some(id_type);
            if let Some(identity) = cp.identity.as_mut().filter(|i| fill_identity || i.id_type.is_some()) {
                identity.id_type = Some(id_type);
            }
        })
    }
}
