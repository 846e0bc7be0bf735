//! Parquet output and checkpoints: everything that makes embedded rows and rejections durable
//! and tells, after a crash, what is committed.
//!
//! It owns the file format (`schema`), the per-worker writer that seals epochs into the output
//! directory (`EpochWriter`), reading our files back, the checkpoint file, and the restart
//! clean-up of the output directory. It must never decide when an epoch is complete (the
//! dataflow's frontier does), never touch Mongo, never delete a file whose name is not one of
//! ours, and never leave a partial file in the output directory under a final name.
//!
//! Commit order (design.md, "Checkpoints and exactly-once output"): `EpochWriter::seal(e)` on
//! every worker, then `CheckpointStore::save` with `committed = e`, then marking, then a save
//! with `marked = e`. On start: `CheckpointStore::load`, `remove_stale(out_dir, committed)`,
//! re-mark from the files of epochs in `(marked, committed]`, resume epochs at `committed + 1`.

mod batch;
mod checkpoint;
mod error;
mod file;
mod fsio;
mod lanes;
mod naming;
mod read;
pub mod schema;
mod stale;
mod stats;
#[cfg(test)]
mod tests;
mod writer;

pub use checkpoint::{now_ms, Checkpoint, CheckpointStore, SourcePositions, CHECKPOINT_VERSION, RECENT_COMMITS};
pub use error::OutputError;
pub use fsio::sync_dir;
pub use naming::{FileKind, PartName, REJECTS_DIR};
pub use read::{read_rejects, read_row_ids, read_rows};
pub use stale::{list_files, remove_stale, FoundFile};
pub use stats::{OutputStats, StatsSnapshot};
pub use writer::{EpochWriter, FileMeta, OutputConfig, DEFAULT_TARGET_FILE_BYTES};
