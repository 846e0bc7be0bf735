//! [`mark_epoch`]: steps 2 and 3 of the checkpoint protocol (see the parent module), the one
//! path by which committed epochs become marked, for the committer after each commit and for
//! recovery after a crash between a commit and its marks.

use super::{Ledger, VanishedLog};
use crate::mongo::marker::{Marked, Marker};

/// Marks the documents of the committed epochs up to `epoch` (`embedded` ids and `rejected`
/// `(id, reason)`, the engine's form) in MongoDB, records those deleted since they were read as
/// deletions at `epoch` (`vanished`), then saves `marked = epoch`, counts the documents marked, and
/// forgets the files those epochs listed for re-marking. Returns what the marker changed and how
/// many deletions it recorded. Errors, with what failed: marking (after its own retries),
/// recording the deletions, saving the checkpoint.
pub fn mark_epoch(
    ledger: &Ledger,
    marker: &Marker,
    runtime: &tokio::runtime::Handle,
    vanished: &VanishedLog,
    epoch: u64,
    embedded: &[String],
    rejected: &[(String, String)],
) -> Result<(Marked, u64), String> {
    let marked = runtime
        .block_on(marker.mark(embedded, rejected))
        .map_err(|e| format!("marking epoch {epoch} in MongoDB: {}", crate::mongo::error::describe(&e)))?;
    // Documents deleted since they were read: their rows go by the deletion rule.
    let deletions = vanished
        .record(ledger, epoch, &marked.vanished)
        .map_err(|e| format!("recording documents of epoch {epoch} deleted before their marking: {e}"))?;
    // Files of marked epochs need no re-marking after a crash.
    ledger.mark(epoch, (embedded.len() + rejected.len()) as u64).map_err(|e| format!("saving the checkpoint: {e}"))?;
    Ok((marked, deletions))
}
