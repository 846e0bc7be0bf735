//! Start-up recovery, run by the leading process before the first pass: the checkpoint is
//! loaded (or a fresh one made, never over an output directory that holds our files), a
//! compaction's recorded switch is finished, files the checkpoint does not list are removed
//! (staged files of uncommitted epochs or of a finished switch, files of uncommitted epochs and
//! partial copies in the output directory), and the documents of epochs in `(marked, committed]`
//! are marked again from their staged files, after which `marked = committed` is saved.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::stale::{list_files, remove_compacted_inputs, remove_stale, remove_unlisted};
use super::store::{Checkpoint, CheckpointStore, SourcePositions};
use crate::marker::Marker;
use crate::output::{read_rejects, read_row_ids, sync_dir, FileKind};

/// What recovery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Files of uncommitted epochs removed from the output and staging directories.
    pub stale_removed: usize,
    /// Documents of committed epochs marked again.
    pub remarked: u64,
    /// The last committed (and now marked) epoch.
    pub committed: u64,
    /// A compaction's switch that a crash interrupted, finished.
    pub switch_finished: bool,
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

/// Recovers `out`, the staging directory `staging` and Mongo to the checkpoint in `store`:
/// finishes a recorded compaction switch, removes what the checkpoint does not list, re-marks
/// `(marked, committed]` with `marker` on `runtime`, and records the marks. Returns what it did
/// and the checkpoint as saved. Errors: an unreadable checkpoint or committed file, a switch
/// whose output is gone, or marking that fails.
pub fn recover(
    store: &CheckpointStore,
    out: &Path,
    staging: &Path,
    marker: &Marker,
    runtime: &tokio::runtime::Handle,
) -> Result<(Recovered, Checkpoint)> {
    let mut cp = load_or_new(store, out)?;
    let mut recovered = Recovered { committed: cp.committed, ..Recovered::default() };
    if cp.compacting.is_some() {
        finish_switch(&mut cp, out, staging)?;
        store.save(&cp)?;
        recovered.switch_finished = true;
    }
    let listed: Vec<_> = cp.staged.iter().map(|f| f.path.clone()).collect();
    let mut removed = remove_unlisted(staging, &listed)?;
    removed.extend(remove_stale(out, cp.committed)?);
    recovered.stale_removed = removed.len();
    if !removed.is_empty() {
        tracing::info!(files = removed.len(), committed = cp.committed, "removed files the checkpoint does not list");
    }
    if cp.marked < cp.committed {
        let (mut embedded, mut rejected) = (Vec::new(), Vec::new());
        for f in &cp.files {
            let path = staging.join(&f.path);
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
                FileKind::Deletions => {}
            }
        }
        // Deleted since they were read: recorded at the last committed epoch, which is at least
        // every re-marked row's.
        let id_type = cp.id_type.unwrap_or(crate::output::IdType::ExtJson);
        let key_values = cp.identity.clone().map_or_else(Vec::new, |mut identity| {
            identity.id_type = Some(id_type);
            identity.key_values()
        });
        let (from, epoch) = (cp.marked + 1, cp.committed);
        let ledger = super::Ledger::new(store.clone(), cp);
        let log = super::VanishedLog { out: out.to_path_buf(), id_type, key_values };
        let (marked, _) = super::mark_epoch(&ledger, marker, runtime, &log, epoch, &embedded, &rejected)
            .map_err(|e| anyhow!("re-marking committed epochs: {e}"))?;
        recovered.remarked = marked.embedded + marked.rejected;
        tracing::info!(from, to = epoch, documents = recovered.remarked, "re-marked committed epochs");
        cp = ledger.snapshot();
    }
    Ok((recovered, cp))
}

/// Finishes the switch a crash interrupted: the output is renamed into place if it is still
/// under its partial name, and the inputs are removed. The checkpoint lists the output already.
fn finish_switch(cp: &mut Checkpoint, out: &Path, staging: &Path) -> Result<()> {
    let Some(switch) = cp.compacting.take() else { return Ok(()) };
    let dest = out.join(&switch.output.path);
    let dir = dest.parent().unwrap_or(out).to_path_buf();
    if !dest.exists() {
        let partial = dir.join(&switch.partial);
        if !partial.exists() {
            bail!(
                "the checkpoint lists {} (a compaction's output) but neither it nor {} exists: was the output directory changed by hand?",
                dest.display(),
                partial.display()
            );
        }
        fs::rename(&partial, &dest).with_context(|| format!("renaming {} into place", partial.display()))?;
        sync_dir(&dir)?;
    }
    remove_compacted_inputs(staging, &switch.inputs)?;
    tracing::info!(output = %dest.display(), inputs = switch.inputs.len(), "finished a compaction a crash interrupted");
    Ok(())
}
