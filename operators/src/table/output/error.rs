//! The one error type of the output side. Every variant names the path it failed on, so a
//! user reading a one-line message knows which directory to fix; disk-full is spelled out.

use std::io;
use std::path::{Path, PathBuf};

use parquet::errors::ParquetError;

/// Why writing, moving, reading or checkpointing output failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file-system call failed.
    #[error("cannot {action} {}: {source}{}", path.display(), hint(source))]
    Io {
        /// What we were doing, e.g. `create directory`.
        action: &'static str,
        /// The path it failed on.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The Parquet encoder or decoder failed (an I/O error inside it is reported as `Io`).
    #[error("parquet: cannot {action} {}: {source}", path.display())]
    Parquet {
        /// What we were doing, e.g. `write to`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The decoder's or encoder's error.
        source: ParquetError,
    },
    /// An Arrow batch could not be built or decoded.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A file we read does not have the columns we write.
    #[error("{}: not a tweet-embed file: {reason}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A row arrived for an epoch already sealed: the caller broke the frontier contract, and
    /// accepting it would put a committed epoch in two files.
    #[error("row {id} of epoch {epoch} arrived after epochs up to {sealed} were sealed")]
    LateEpoch {
        /// The row's `_id`.
        id: String,
        /// Its epoch.
        epoch: u64,
        /// The highest sealed epoch.
        sealed: u64,
    },
    /// A vector does not have the output's dimension.
    #[error("row {id} has a {got}-dimensional vector, the output is {dim}-dimensional")]
    Dim {
        /// The row's `_id`.
        id: String,
        /// Its vector's length.
        got: usize,
        /// The output's dimension.
        dim: usize,
    },
    /// A row's id does not fit the dataset's id column: the caller must write it as a
    /// rejection (see `super::id_type`).
    #[error("row {id}: {reason}")]
    Stray {
        /// The row's `_id`.
        id: String,
        /// Why it does not fit.
        reason: String,
    },
    /// The configuration cannot work.
    #[error("output configuration: {0}")]
    Config(String),
    /// The checkpoint exists but cannot be used. It is never treated as empty: that would
    /// re-embed and duplicate everything committed.
    #[error(
        "checkpoint {} is unusable: {reason}; restore it from a backup, or remove the state \
         directory together with the output directory to start over",
        path.display()
    )]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An earlier call failed half-way; the writer's state is unknown, so it refuses more work.
    #[error("the output writer of worker {worker} failed earlier and must be recreated from the checkpoint")]
    Poisoned {
        /// The worker.
        worker: usize,
    },
}

fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull => " (disk full: free space or choose a directory on another disk)",
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            " (not writable: fix its permissions or choose another directory)"
        }
        _ => "",
    }
}

impl OutputError {
    /// An `Io` error on `path`.
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        OutputError::Io { action, path: path.to_path_buf(), source }
    }

    /// A Parquet error on `path`, unwrapped to `Io` when the encoder only passed an I/O error
    /// on, so disk-full reads as disk-full.
    pub(crate) fn parquet(action: &'static str, path: &Path, source: ParquetError) -> Self {
        match source {
            ParquetError::External(inner) => match inner.downcast::<io::Error>() {
                Ok(io) => OutputError::io(action, path, *io),
                Err(inner) => {
                    OutputError::Parquet { action, path: path.to_path_buf(), source: ParquetError::External(inner) }
                }
            },
            source => OutputError::Parquet { action, path: path.to_path_buf(), source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_inside_parquet_reads_as_disk_full() {
        let e = ParquetError::from(io::Error::from(io::ErrorKind::StorageFull));
        let msg = OutputError::parquet("write to", Path::new("/cold/out/x.parquet"), e).to_string();
        assert!(msg.contains("/cold/out/x.parquet"), "{msg}");
        assert!(msg.contains("disk full"), "{msg}");
    }
}
