//! What a directory holds, as a test lists it.

use std::path::Path;

/// The names of the entries in `dir` (files and directories, not recursive), sorted; none when
/// `dir` cannot be read (it does not exist yet, say).
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    names.sort();
    names
}
