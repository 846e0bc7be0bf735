//! Start-up recovery, run by the leading process before the first pass: the checkpoint is
//! loaded (or a fresh one made, never over an output directory that holds our files), files of
//! uncommitted epochs are removed, and the documents of epochs in `(marked, committed]` are
//! marked again from the committed files, after which `marked = committed` is saved.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::stale::{list_files, remove_stale};
use super::store::{Checkpoint, CheckpointStore, SourcePositions};
use crate::marker::Marker;
use crate::output::{read_rejects, read_row_ids, FileKind};

/// What recovery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Files of uncommitted epochs removed from the output directory.
    pub stale_removed: usize,
    /// Documents of committed epochs marked again.
    pub remarked: u64,
    /// The last committed (and now marked) epoch.
    pub committed: u64,
}

/// The checkpoint in `store`, or a fresh one when none exists yet — but never over an output
/// directory `out` that already holds our files: without a checkpoint they cannot be told
/// committed from stale, so that is an error naming both directories.
pub fn load_or_new(store: &CheckpointStore, out: &Path) -> Result<Checkpoint> {
    if let Some(cp) = store.load()? {
        return Ok(cp);
    }
    let found = list_files(out)?;
    if !found.is_empty() {
        bail!(
            "{} holds {} tweet-embed files but {} has no checkpoint: use the --state-dir of the run that wrote them, or a new --out",
            out.display(),
            found.len(),
            store.path().parent().unwrap_or(store.path()).display()
        );
    }
    Ok(Checkpoint::new(0, 0, Vec::new(), SourcePositions::default()))
}

/// Recovers `out` and Mongo to the checkpoint in `store`: removes files written after the last
/// commit, re-marks `(marked, committed]` with `marker` on `runtime`, and records the marks.
/// Errors: an unreadable checkpoint or committed file, or marking that fails.
pub fn recover(
    store: &CheckpointStore,
    out: &Path,
    marker: &Marker,
    runtime: &tokio::runtime::Handle,
) -> Result<Recovered> {
    let mut cp = load_or_new(store, out)?;
    let mut recovered = Recovered { committed: cp.committed, ..Recovered::default() };
    let removed = remove_stale(out, cp.committed)?;
    recovered.stale_removed = removed.len();
    if !removed.is_empty() {
        tracing::info!(files = removed.len(), committed = cp.committed, "removed files of uncommitted epochs");
    }
    if cp.marked < cp.committed {
        let (mut embedded, mut rejected) = (Vec::new(), Vec::new());
        for f in &cp.files {
            let path = out.join(&f.path);
            match f.kind {
                FileKind::Rows => {
                    embedded.extend(read_row_ids(&path)?.into_iter().filter(|(_, e)| *e > cp.marked).map(|(id, _)| id))
                }
                FileKind::Rejects => rejected.extend(
                    read_rejects(&path)?
                        .into_iter()
                        .filter(|(_, _, e)| *e > cp.marked)
                        .map(|(id, reason, _)| (id, reason)),
                ),
            }
        }
        let marked = runtime
            .block_on(marker.mark(&embedded, &rejected))
            .map_err(|e| anyhow!("re-marking committed epochs: {}", crate::mongo_error::describe(&e)))?;
        recovered.remarked = marked.embedded + marked.rejected;
        tracing::info!(
            from = cp.marked + 1,
            to = cp.committed,
            documents = recovered.remarked,
            "re-marked committed epochs"
        );
        cp.marked = cp.committed;
        cp.files.clear();
        store.save(&cp)?;
    }
    Ok(recovered)
}
