//! The checkpoint protocol (DESIGN.md, "Checkpoints and exactly-once output"): what makes every
//! eligible document appear exactly once in the output and be marked in Mongo, whatever instant a
//! run is killed at.
//!
//! The checkpoint is one small file on hot storage ([`CheckpointStore`]), replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory). It records `committed`, `marked`,
//! the files of epochs in `(marked, committed]`, and the change stream's resume token.
//! [`Checkpoint`] is that state, its fields its own: readers use its accessors, and it changes
//! only through the named steps of the one in-memory copy, [`Ledger`]. Status's rate history
//! ([`CommitHistory`]) is saved in the same file but is no part of the protocol.
//!
//! **Invariant.** A file in the output directory whose epochs are all ≤ `committed` holds only
//! committed rows; every document of an epoch ≤ `marked` is marked; every document of an epoch in
//! `(marked, committed]` is in a file the checkpoint lists. Nothing after `committed` is trusted.
//!
//! **Commit order** ([`Commit`], on worker 0 of the leading process), for an epoch `e` that the
//! frontier has passed on every worker:
//! 1. every worker's files of epochs ≤ `e` are durable in the output directory (the Parquet
//!    writer sealed them before the frontier could pass `e`);
//! 2. save `committed = e` with those files and the stream position at the end of `e`;
//! 3. mark the epoch's documents in Mongo, then save `marked = e` (and forget its files).
//!
//! **Crash cases** and what start-up recovery ([`recover`]) does about each:
//! - before step 2: the epoch's files are stale (their epoch is after `committed`) and are removed
//!   ([`remove_stale`]); its documents are still in the work queue, so the next scan reads them;
//! - between 2 and 3: the files are listed; their documents are marked again from them;
//! - after 3: nothing to do. A crash during a file's move leaves a partial name, also removed.
//!
//! **One run per state directory** ([`StateLock`]). Recovery removes every file the checkpoint
//! does not list, so a second run on the same `--state-dir` would delete the first run's files in
//! flight, embed the same documents again, and, racing the first run's file moves, could delete
//! committed rows whose documents then get marked. Every run (every process of a cluster, each
//! with its own `--state-dir`) takes an exclusive OS lock on `<state-dir>/tweet-embed.lock` when
//! it connects, before recovery or anything else touches a file, and holds it to its end; a
//! second run refuses to start with one line naming the holder's pid and host. The OS drops the
//! lock with the process, so a killed run never leaves a stale one.
//!
//! In a cluster only the leading process keeps the checkpoint, so every process must write into
//! the one output directory it lists: [`OutMarker`] checks that before each pass.
//!
//! This module never decides when an epoch is complete (the frontier does) and never writes
//! rows; it deletes only files whose names are ours.

mod commit;
mod history;
mod ledger;
mod lock;
mod mark;
mod recovery;
mod rejection_guard;
mod shared_out;
mod stale;
mod state;
mod store;
mod vanished;

pub use commit::{reason_kind, Commit, CommitTotals, Committer};
pub use history::{CommitHistory, RECENT_COMMITS};
pub use ledger::Ledger;
pub use lock::{StateLock, LOCK_FILE};
pub use mark::mark_epoch;
pub use recovery::{load_or_new, recover, Recovered};
pub use rejection_guard::{MassRejection, RejectionGuard};
pub use shared_out::OutMarker;
pub use stale::{list_files, list_kind, remove_compacted_inputs, remove_stale, remove_unlisted, FoundFile};
pub use state::{Checkpoint, SourcePositions, Switch, CHECKPOINT_VERSION};
pub use store::CheckpointStore;
pub use vanished::VanishedLog;
