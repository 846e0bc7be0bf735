//! Compaction: the output as one well-kept table. Workers commit each epoch's small files into
//! a staging directory that readers never see (hot storage on one process; `<out>/_staging` in a
//! cluster, where the leader must see every worker's files); a compactor thread on the leading
//! process merges committed, marked staged files into files of `--target-file-bytes` in the output
//! directory, dropping rows that recorded deletions remove, and rewrites output files that hold
//! deleted rows within `--delete-within`. This is the design of Flink's file sink with compaction
//! and of Iceberg's and Delta's compaction, chosen because commits stay as prompt as the
//! checkpoint interval while files reach the target at any GPU speed.
//!
//! **The switch.** For staged inputs `I` merged into output `O`:
//! 1. `O` is written under a hidden partial name in the output directory and fsynced;
//! 2. the checkpoint drops `I` from its staged list and records the switch `I → O` (one atomic
//!    save: from here `O` is the listed one);
//! 3. `O` is renamed to its final name and the directory fsynced;
//! 4. `I` is removed, and the checkpoint forgets the switch.
//!
//! A crash before 2 leaves `I` listed and a partial file that recovery removes; a crash after 2
//! leaves the switch recorded, and recovery finishes 3 and 4. So one of the two is listed at any
//! instant, never both and never neither. Readers list only the output directory, where `O`
//! appears by one rename and staged rows never show, so they never see a row twice.
//!
//! **Deletions** (`deletions`): a rewrite of an output file to drop deleted rows keeps its name:
//! the new file replaces the old one by one rename, so a reader sees the old file or the new one.
//!
//! Each row is written twice: once staged, once merged (bytes written = 2 × output), plus the
//! rewrites that deletions force (each file holding a deleted row, at most once per half of
//! `--delete-within`). It never runs on the dataflow's threads, so the
//! graph never waits for it; it takes only files of epochs already marked, so recovery never
//! needs a compacted file to re-mark from.

mod compactor;
mod deletions;
mod policy;
mod stats;

pub use compactor::{compact_step, CompactionSettings, Compactor};
pub use deletions::{apply_pending, compact_deletion_log, DeletionIndex, DELETION_FILES_MERGED};
pub use policy::pick;
pub use stats::{CompactionSnapshot, CompactionStats};
