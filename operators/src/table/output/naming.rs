//! File names of the output: final names carry the epoch range and worker, so restart can tell
//! committed from stale files by name alone; temporary names can never be mistaken for final
//! ones. Parsing is strict, because whatever does not parse is never deleted.

use serde::{Deserialize, Serialize};

/// The subdirectory of the output directory that holds rejections. The leading `_` makes
/// pyarrow, pandas and Spark skip it when they read the output directory as one dataset; as
/// `rejects` they silently read rejections as rows with null vectors.
pub const REJECTS_DIR: &str = "_rejects";

/// The subdirectory of the output directory that holds deletion files. The leading `_` keeps it
/// out of the dataset that readers see, like [`REJECTS_DIR`].
pub const DELETIONS_DIR: &str = "_deletions";

const PREFIX: &str = "part-e";
const SUFFIX: &str = ".parquet";
const PARTIAL_SUFFIX: &str = ".partial";
const TMP_PREFIX: &str = "tmp-w";

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Embedded rows, in the output directory.
    Rows,
    /// Rejections, in [`REJECTS_DIR`] under the output directory.
    Rejects,
    /// Recorded deletions, in `_deletions/` under the output directory
    /// (`crate::table::output::deletions`).
    Deletions,
}

impl FileKind {
    /// Every kind, in the order directories are visited.
    pub const ALL: [FileKind; 3] = [FileKind::Rows, FileKind::Rejects, FileKind::Deletions];
}

impl FileKind {
    /// The directory of this kind relative to the output directory (`""` or [`REJECTS_DIR`]).
    pub fn subdir(self) -> &'static str {
        match self {
            FileKind::Rows => "",
            FileKind::Rejects => REJECTS_DIR,
            FileKind::Deletions => DELETIONS_DIR,
        }
    }
}

/// The parts of a final file name: `part-e<lo>-e<hi>-w<worker>-<seq>.parquet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PartName {
    /// The lowest epoch of a row in the file.
    pub epoch_lo: u64,
    /// The highest epoch of a row in the file.
    pub epoch_hi: u64,
    /// The worker that wrote it.
    pub worker: usize,
    /// The writer's file counter, which keeps names unique within a run.
    pub seq: u64,
}

impl PartName {
    /// The final file name. Zero padding makes names sort by epoch in a directory listing.
    pub fn file_name(&self) -> String {
        format!("{PREFIX}{:012}-e{:012}-w{:03}-{:04}{SUFFIX}", self.epoch_lo, self.epoch_hi, self.worker, self.seq)
    }

    /// Parses a final file name; `None` for anything that is not exactly one of ours.
    pub fn parse(name: &str) -> Option<PartName> {
        let body = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let mut parts = body.split('-');
        let lo = number(parts.next()?, 12)?;
        let hi = number(parts.next()?.strip_prefix('e')?, 12)?;
        let worker = number(parts.next()?.strip_prefix('w')?, 3)?;
        let seq = number(parts.next()?, 4)?;
        if parts.next().is_some() || lo > hi {
            return None;
        }
        Some(PartName { epoch_lo: lo, epoch_hi: hi, worker: usize::try_from(worker).ok()?, seq })
    }

    /// The name a file has in its destination directory while it is being copied there:
    /// hidden (readers skip dot files) and never matching the final pattern.
    pub fn partial_name(&self) -> String {
        format!(".{}{PARTIAL_SUFFIX}", self.file_name())
    }
}

/// Whether `name` is one of our in-flight copies (see [`PartName::partial_name`]).
pub fn is_partial(name: &str) -> bool {
    name.strip_prefix('.').and_then(|n| n.strip_suffix(PARTIAL_SUFFIX)).and_then(PartName::parse).is_some()
}

/// The name of a file being written on hot storage by `worker`.
pub fn tmp_name(worker: usize, seq: u64) -> String {
    format!("{TMP_PREFIX}{worker:03}-{seq:06}{SUFFIX}")
}

/// Whether `name` is a file [`tmp_name`] gave to `worker`.
pub fn is_tmp_of(name: &str, worker: usize) -> bool {
    let Some(rest) = name.strip_prefix(TMP_PREFIX).and_then(|n| n.strip_suffix(SUFFIX)) else {
        return false;
    };
    let Some((w, seq)) = rest.split_once('-') else {
        return false;
    };
    number(w, 3).and_then(|w| usize::try_from(w).ok()) == Some(worker) && number(seq, 6).is_some()
}

/// A decimal of at least `min_width` ASCII digits.
fn number(s: &str, min_width: usize) -> Option<u64> {
    if s.len() < min_width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_names_round_trip_and_sort_by_epoch() {
        let n = PartName { epoch_lo: 12, epoch_hi: 15, worker: 3, seq: 1 };
        assert_eq!(n.file_name(), "part-e000000000012-e000000000015-w003-0001.parquet");
        assert_eq!(PartName::parse(&n.file_name()), Some(n));
        let big = PartName { epoch_lo: u64::MAX - 1, epoch_hi: u64::MAX, worker: 1234, seq: 99_999 };
        assert_eq!(PartName::parse(&big.file_name()), Some(big));
        let later = PartName { epoch_lo: 100, epoch_hi: 100, worker: 0, seq: 0 };
        assert!(n.file_name() < later.file_name());
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "part-0.parquet",
            "part-e000000000012-e000000000015-w003-0001.parquet.bak",
            "part-e000000000012-e000000000015-w003.parquet",
            "part-e000000000012-e000000000015-w003-0001-x.parquet",
            "part-e000000000015-e000000000012-w003-0001.parquet",
            "part-e12-e15-w3-1.parquet",
            "part-e00000000001a-e000000000015-w003-0001.parquet",
            "embeddings_0001.parquet",
            "",
        ] {
            assert_eq!(PartName::parse(name), None, "{name}");
            assert!(!is_partial(name), "{name}");
        }
    }

    #[test]
    fn partial_and_tmp_names_are_recognised_and_distinct() {
        let n = PartName { epoch_lo: 1, epoch_hi: 2, worker: 7, seq: 3 };
        assert!(is_partial(&n.partial_name()));
        assert_eq!(PartName::parse(&n.partial_name()), None);
        assert!(is_tmp_of(&tmp_name(7, 42), 7));
        assert!(!is_tmp_of(&tmp_name(7, 42), 8));
        assert!(!is_tmp_of("tmp-w007-x.parquet", 7));
        assert_eq!(PartName::parse(&tmp_name(7, 42)), None);
    }
}
