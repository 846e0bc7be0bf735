//! Restart clean-up of the output directory: files of epochs after the last committed one are
//! leftovers of a crash between their move and the checkpoint that would have recorded them,
//! and in-flight copies are leftovers of a crash during a move. Files are judged by name alone
//! (epochs restart at committed + 1, so a file starting after `committed` was never committed).
//! Anything whose name is not exactly ours is never touched.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::table::output::fsio::sync_dir;
use crate::table::output::naming::is_partial;
use crate::table::output::{FileKind, OutputError, PartName};

/// One of our final files found in the output directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    /// Relative to the output directory.
    pub path: PathBuf,
    /// Rows or rejections.
    pub kind: FileKind,
    /// The parts of its name.
    pub name: PartName,
}

/// Our final files in `out_dir` and its rejects and deletions directories, sorted by path; a directory that does not
/// exist yet holds none. Useful at start: with no checkpoint, any file here is another run's.
pub fn list_files(out_dir: &Path) -> Result<Vec<FoundFile>, OutputError> {
    let mut found = Vec::new();
    for kind in FileKind::ALL {
        found.extend(list_kind(out_dir, kind)?);
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Deletes our files in `out_dir` and its rejects and deletions directories whose first epoch is
/// after `committed`, and our in-flight copies; returns what it deleted (absolute paths).
pub fn remove_stale(out_dir: &Path, committed: u64) -> Result<Vec<PathBuf>, OutputError> {
    let mut removed = Vec::new();
    for kind in FileKind::ALL {
        let dir = out_dir.join(kind.subdir());
        let before = removed.len();
        for (name, path) in entries(&dir)? {
            let stale = match PartName::parse(&name) {
                Some(parts) if parts.epoch_lo > committed => true,
                Some(parts) if parts.epoch_hi > committed => {
                    // Our writer never produces this (a file holds one epoch); keep the committed
                    // rows and say so, since the later epochs in it will be written again.
                    tracing::warn!(path = %path.display(), committed, "output file spans the committed epoch");
                    false
                }
                Some(_) => false,
                None => is_partial(&name),
            };
            if stale {
                fs::remove_file(&path).map_err(|e| OutputError::io("remove stale output", &path, e))?;
                tracing::info!(path = %path.display(), committed, "removed output of an uncommitted epoch");
                removed.push(path);
            }
        }
        if removed.len() > before {
            sync_dir(&dir)?;
        }
    }
    Ok(removed)
}

/// Deletes our files (and in-flight copies) in the staging directory `staging` and its rejects
/// directory that `listed` (paths relative to `staging`) does not hold: sealed for an epoch that
/// was never committed, or the inputs of a compaction whose switch was recorded. Returns what it
/// deleted (absolute paths).
pub fn remove_unlisted(staging: &Path, listed: &[PathBuf]) -> Result<Vec<PathBuf>, OutputError> {
    let mut removed = Vec::new();
    for kind in [FileKind::Rows, FileKind::Rejects] {
        let dir = staging.join(kind.subdir());
        let before = removed.len();
        for (name, path) in entries(&dir)? {
            let ours = PartName::parse(&name).is_some() || is_partial(&name);
            if ours && !listed.iter().any(|l| l == &Path::new(kind.subdir()).join(&name)) {
                fs::remove_file(&path).map_err(|e| OutputError::io("remove unlisted staged file", &path, e))?;
                removed.push(path);
            }
        }
        if removed.len() > before {
            sync_dir(&dir)?;
        }
    }
    Ok(removed)
}

/// Removes a compaction's inputs `inputs` (paths relative to the staging directory `staging`)
/// once its output is in place, and fsyncs their directories; an input already gone (removed
/// before a crash) is fine. Step 4 of the switch, for the compactor and for recovery alike.
pub fn remove_compacted_inputs(staging: &Path, inputs: &[PathBuf]) -> Result<(), OutputError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for input in inputs {
        let path = staging.join(input);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(OutputError::io("remove compacted input", &path, e)),
        }
        if let Some(parent) = path.parent().filter(|p| !dirs.iter().any(|d| d == p)) {
            dirs.push(parent.to_path_buf());
        }
    }
    for d in &dirs {
        sync_dir(d)?;
    }
    Ok(())
}

/// Our files of one `kind` in `out_dir` (the directory of that kind), sorted by name: for
/// pollers that want one directory, not the whole output.
pub fn list_kind(out_dir: &Path, kind: FileKind) -> Result<Vec<FoundFile>, OutputError> {
    let mut found: Vec<FoundFile> = entries(&out_dir.join(kind.subdir()))?
        .into_iter()
        .filter_map(|(name, _)| {
            PartName::parse(&name).map(|parts| FoundFile {
                path: Path::new(kind.subdir()).join(&name),
                kind,
                name: parts,
            })
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// `(file name, path)` of the regular files in `dir`; none if `dir` does not exist.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, OutputError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(OutputError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| OutputError::io("list", dir, e))?;
        let is_file = entry.file_type().map_err(|e| OutputError::io("stat", &entry.path(), e))?.is_file();
        if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
            out.push((name.to_string(), entry.path()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(lo: u64, hi: u64) -> PartName {
        PartName { epoch_lo: lo, epoch_hi: hi, worker: 1, seq: lo }
    }

    #[test]
    fn removes_uncommitted_and_partial_keeps_committed_and_foreign() {
        let out = tempfile::tempdir().unwrap();
        let rejects = out.path().join(crate::table::output::REJECTS_DIR);
        fs::create_dir(&rejects).unwrap();
        let keep = [
            out.path().join(part(3, 3).file_name()),
            out.path().join(part(5, 5).file_name()),
            rejects.join(part(5, 5).file_name()),
            out.path().join("embeddings_0001.parquet"),
            out.path().join("part-e6.parquet"),
            out.path().join("notes.txt"),
            rejects.join("README"),
        ];
        let gone = [
            out.path().join(part(6, 6).file_name()),
            rejects.join(part(9, 9).file_name()),
            out.path().join(part(2, 2).partial_name()),
            rejects.join(part(7, 7).partial_name()),
        ];
        for p in keep.iter().chain(&gone) {
            fs::write(p, b"x").unwrap();
        }
        fs::create_dir(out.path().join(part(8, 8).file_name())).unwrap();
        let mut removed = remove_stale(out.path(), 5).unwrap();
        removed.sort();
        let mut expected = gone.to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        for p in &keep {
            assert!(p.exists(), "{}", p.display());
        }
        assert!(out.path().join(part(8, 8).file_name()).is_dir(), "directories are not ours to delete");
        let listed: Vec<_> = list_files(out.path()).unwrap().into_iter().map(|f| f.path).collect();
        let rel = |lo| PathBuf::from(part(lo, lo).file_name());
        let rejected = Path::new(crate::table::output::REJECTS_DIR).join(part(5, 5).file_name());
        assert_eq!(listed, [rejected, rel(3), rel(5)]);
    }

    #[test]
    fn a_missing_output_directory_has_nothing_stale() {
        let out = tempfile::tempdir().unwrap();
        assert!(remove_stale(&out.path().join("absent"), 0).unwrap().is_empty());
    }
}
