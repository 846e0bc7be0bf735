//! What a dataset holds so far, for the two decisions that may change only while it holds
//! nothing of the kind they shape: the identity (how its vectors are made) while it holds no
//! vector, and the `id` column's type while it holds no file at all (issue 18, items 7 and 8: a
//! wrong `--text-field` that only rejected, or a type chosen on an empty collection).

use std::path::Path;

use crate::table::checkpoint::{list_files, Checkpoint};
use crate::table::output::{FileKind, OutputError};

/// What the dataset of checkpoint `cp` and output directory `out` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holdings {
    /// Some vector: a row file listed in the checkpoint (staged, to re-mark, or being compacted)
    /// or in `out`.
    pub vectors: bool,
    /// Some file of any kind: rows, rejections or deletions.
    pub files: bool,
}

impl Holdings {
    /// Reads the checkpoint's lists and the output directory's file names. Errors: `out` cannot
    /// be listed.
    pub fn of(cp: &Checkpoint, out: &Path) -> Result<Holdings, OutputError> {
        let listed = cp.staged().iter().chain(cp.files()).chain(cp.compacting().map(|s| &s.output));
        let (mut vectors, mut files) = (false, false);
        for f in listed {
            files = true;
            vectors |= f.kind == FileKind::Rows && f.rows > 0;
        }
        for f in list_files(out)? {
            files = true;
            vectors |= f.kind == FileKind::Rows;
        }
        Ok(Holdings { vectors, files })
    }
}
