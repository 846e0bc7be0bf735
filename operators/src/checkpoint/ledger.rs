//! [`Ledger`]: the one in-memory copy of a run's checkpoint, shared by the committer, the
//! compactor and the planner, each change saved before the lock is released. Two writers each
//! keeping their own copy would overwrite each other's saves: a commit could undo a compaction's
//! switch and list files that no longer exist.

use std::sync::Arc;

use parking_lot::Mutex;

use super::store::{Checkpoint, CheckpointStore};
use crate::clock::wall_ms;
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
    pub fn update<R>(&self, change: impl FnOnce(&mut Checkpoint) -> R) -> Result<R, OutputError> {
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
