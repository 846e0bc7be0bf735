//! The table: the one owner of what is durable. The Parquet files in `--out`
//! ([`output`]), the deletion log `_deletions/` ([`output::append_to_log`] is its one writer),
//! the checkpoint and its protocol ([`checkpoint`]: commit, mark, the compaction switch,
//! recovery), compaction and deletion passes ([`compaction`]), the dataset's identity and
//! reconciling the output with the collection.
//!
//! Every change to the table commits through the checkpoint's [`checkpoint::Ledger`], as
//! delta-rs commits write, delete, optimize and vacuum through one transaction path. Nothing
//! outside this module writes a file in `--out` or the state directory.

pub mod checkpoint;
pub mod compaction;
pub mod consolidate;
pub mod identity;
pub mod output;
pub mod reconcile;
