//! Start-up recovery, run by the leading process before the first pass: the checkpoint is
//! loaded (or a fresh one made, never over an output directory that holds our files), a
//! compaction's recorded switch is finished, files the checkpoint does not list are removed
//! (staged files of uncommitted epochs or of a finished switch, files of uncommitted epochs and
//! partial copies in the output directory), and the documents of epochs in `(marked, committed]`
//! are marked again from their staged files, after which `marked = committed` is saved.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::ledger::Ledger;
use super::stale::{list_files, remove_compacted_inputs, remove_stale, remove_unlisted};
use super::state::{Checkpoint, SourcePositions, Switch};
use super::store::CheckpointStore;
use crate::mongo::marker::Marker;
use crate::table::output::{read_rejects, read_row_ids, sync_dir, FileKind};

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

/// The ledger of the checkpoint in `store` (with the commit history saved beside it), or of a
/// fresh one when none exists yet — but never over an output directory `out` that already holds
/// our files: without a checkpoint they cannot be told committed from stale, so that is an error
/// naming both directories.
pub fn load_or_new(store: &CheckpointStore, out: &Path) -> Result<Ledger> {
    if let Some(ledger) = Ledger::open(store.clone())? {
        return Ok(ledger);
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
    Ok(Ledger::new(store.clone(), Checkpoint::new(0, 0, Vec::new(), SourcePositions::default())))
}

/// Recovers `out`, the staging directory `staging` and Mongo to the checkpoint in `store`:
/// finishes a recorded compaction switch, removes what the checkpoint does not list, re-marks
/// `(marked, committed]` with `marker` on `runtime`, and records the marks. Returns what it did
/// and the ledger of the checkpoint as saved, for the run to change from there. Errors: an
/// unreadable checkpoint or committed file, a switch whose output is gone, or marking that fails.
pub fn recover(
    store: &CheckpointStore,
    out: &Path,
    staging: &Path,
    marker: &Marker,
    runtime: &tokio::runtime::Handle,
) -> Result<(Recovered, Ledger)> {
    let ledger = load_or_new(store, out)?;
    let mut recovered = Recovered { committed: ledger.read(Checkpoint::committed), ..Recovered::default() };
    if let Some(switch) = ledger.read(|cp| cp.compacting().cloned()) {
        finish_switch(&switch, out, staging)?;
        ledger.end_switch()?;
        recovered.switch_finished = true;
    }
    let cp = ledger.snapshot();
    let listed: Vec<_> = cp.staged().iter().map(|f| f.path.clone()).collect();
    let mut removed = remove_unlisted(staging, &listed)?;
    removed.extend(remove_stale(out, cp.committed())?);
    recovered.stale_removed = removed.len();
    if !removed.is_empty() {
        tracing::info!(files = removed.len(), committed = cp.committed(), "removed files the checkpoint does not list");
    }
    if cp.marked() < cp.committed() {
        let (mut embedded, mut rejected) = (Vec::new(), Vec::new());
        for f in cp.files() {
            let path = staging.join(&f.path);
            match f.kind {
                FileKind::Rows => embedded
                    .extend(read_row_ids(&path)?.into_iter().filter(|(_, e)| *e > cp.marked()).map(|(id, _)| id)),
                FileKind::Rejects => rejected.extend(
                    read_rejects(&path)?
                        .into_iter()
                        .filter(|(_, _, e)| *e > cp.marked())
                        .map(|(id, reason, _)| (id, reason)),
                ),
                FileKind::Deletions => {}
            }
        }
        // Deleted since they were read: recorded at the last committed epoch, which is at least
        // every re-marked row's.
        let id_type = cp.id_type().unwrap_or(crate::table::output::IdType::ExtJson);
        let key_values = cp.identity().map_or_else(Vec::new, |mut identity| {
            identity.id_type = Some(id_type);
            identity.key_values()
        });
        let (from, epoch) = (cp.marked() + 1, cp.committed());
        let log = super::VanishedLog { out: out.to_path_buf(), id_type, key_values };
        let (marked, _) = super::mark_epoch(&ledger, marker, runtime, &log, epoch, &embedded, &rejected)
            .map_err(|e| anyhow!("re-marking committed epochs: {e}"))?;
        recovered.remarked = marked.embedded + marked.rejected;
        tracing::info!(from, to = epoch, documents = recovered.remarked, "re-marked committed epochs");
    }
    Ok((recovered, ledger))
}

/// Finishes `switch`, which a crash interrupted: the output is renamed into place if it is still
/// under its partial name, and the inputs are removed. The checkpoint lists the output already;
/// the caller then records the switch's end.
fn finish_switch(switch: &Switch, out: &Path, staging: &Path) -> Result<()> {
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
