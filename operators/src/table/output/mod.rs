//! Parquet output: everything that makes embedded rows and rejections durable files.
//!
//! It owns the file format (`schema`), the per-worker writer that seals epochs into the output
//! directory (`EpochWriter`), file names, and reading our files back. It must never decide when
//! an epoch is complete (the dataflow's frontier does), never decide what is committed (the
//! checkpoint protocol does, in `crate::table::checkpoint`), never touch Mongo, and never leave a partial
//! file in the output directory under a final name.

mod batch;
mod deletions;
mod error;
mod file;
pub(crate) mod fsio;
mod id_ranges;
pub mod id_type;
mod lanes;
mod merge;
#[cfg(test)]
mod merge_tests;
pub(crate) mod naming;
mod read;
pub mod schema;
mod splice;
mod stats;
#[cfg(test)]
mod tests;
mod writer;

pub use deletions::{
    append_to_log, deletions_schema, free_log_name, read_deletion_dir, read_deletions, write_deletions, Deletion,
    DeletionSet,
};
pub use error::OutputError;
pub use fsio::sync_dir;
pub use id_ranges::{may_hold_any, IdProbe};
pub use id_type::{canonical_id, IdColumn, IdType, IdValue, ID_TYPE_KEY, STRAY_ID};
pub use merge::{key_values, merge_files, rewrite_without, Merged, RowFilter};
pub use naming::{FileKind, PartName, DELETIONS_DIR, REJECTS_DIR};
pub use read::{read_rejects, read_row_ids, read_rows};
pub use stats::{OutputStats, StatsSnapshot};
pub use writer::{EpochWriter, FileMeta, OutputConfig, DEFAULT_TARGET_FILE_BYTES, STAGING_DIR};
