//! [`VanishedLog`]: records documents that were deleted from MongoDB after they were read and
//! before their epoch was marked (the marker finds them: `crate::mongo::marker::Marked::vanished`) as
//! deletions of that epoch in `<out>/_deletions/`. Their rows are durable already; by the
//! deletion rule (a deletion at epoch `d` removes rows of that id with epoch ≤ `d`) readers
//! anti-join them at once and the compactor drops or rewrites them, as for a delete the change
//! stream saw. Without it a tweet deleted while its embedding was in flight kept its row for ever
//! in a backfill (no stream), and in `run` when the stream saw the delete in an earlier epoch
//! than the scan's row.
//!
//! The file is renamed into place before the checkpoint counts it; a crash in between leaves a
//! file the next start keeps (its epoch is committed) and the re-marking finds the same ids again:
//! a second record of a deletion, which the rule and an anti-join do not mind.

use std::path::PathBuf;

use super::ledger::Ledger;
use crate::clock::steady_ms;
use crate::table::output::{append_to_log, free_log_name, Deletion, IdType, OutputError};

/// Where and how vanished documents are recorded: the output directory, and the dataset's id
/// type and file metadata (what every deletion file carries).
#[derive(Clone, Debug)]
pub struct VanishedLog {
    /// The output directory (`--out`); the file goes to its `_deletions/`.
    pub out: PathBuf,
    /// The `id` column's type.
    pub id_type: IdType,
    /// Key-value metadata of the dataset's files (its identity).
    pub key_values: Vec<(String, String)>,
}

impl VanishedLog {
    /// Records `ids` (the engine's form) as deleted in `epoch`, an epoch committed already, and
    /// counts them in the checkpoint's `deletions_recorded`. Returns how many it recorded.
    /// Errors: the file cannot be written or renamed, or the checkpoint saved.
    pub fn record(&self, ledger: &Ledger, epoch: u64, ids: &[String]) -> Result<u64, OutputError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now = steady_ms();
        let records: Vec<Deletion> =
            ids.iter().map(|id| Deletion { id: id.clone(), epoch, cluster_time_ms: Some(now) }).collect();
        // A name no writer holds: the ledger's sequence, past any file already there (a writer's
        // deletion file of this epoch has its own sequence).
        let seq = ledger.reserve_seq()?;
        let name = free_log_name(&self.out, epoch, epoch, 0, seq);
        let (path, _) = append_to_log(&self.out, name, &records, self.id_type, &self.key_values)?;
        let n = records.len() as u64;
        ledger.note_deletions_recorded(n, name.seq)?;
        tracing::info!(
            documents = n,
            epoch,
            file = %path.display(),
            "documents deleted from MongoDB after they were read, before they were marked: recorded as deletions"
        );
        Ok(n)
    }
}
