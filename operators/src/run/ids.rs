//! The type of a dataset's `id` column (`crate::output::id_type`): decided once, at the first
//! start, and recorded in the checkpoint, which every later start reuses.
//!
//! `--id-type auto` (the default) decides from the collection's `_id` index, never from a scan: the
//! smallest and the largest `_id` (two one-document lookups) of one type class mean every `_id`
//! has it ([`IdType::of_edges`]). A run asking for a type other than the recorded one refuses
//! before recovery touches anything: the files already written have the recorded type, and one
//! dataset has one id column type.

use anyhow::{anyhow, bail, Result};

use super::engine::Engine;
use crate::checkpoint::{CheckpointStore, Ledger};
use crate::mongo_error::{describe, retry};
use crate::output::IdType;

/// Refuses a run whose `wanted` id type (`None`: auto) differs from the type `store`'s
/// checkpoint records for the output `out`, with one line naming both.
pub(super) fn refuse_another(store: &CheckpointStore, wanted: Option<IdType>, out: &std::path::Path) -> Result<()> {
    let (Some(wanted), Some(recorded)) = (wanted, store.load()?.and_then(|cp| cp.recorded_id_type())) else {
        return Ok(());
    };
    if wanted != recorded {
        bail!(
            "--id-type {wanted} differs from the id type recorded for {} ({recorded}): one dataset has one id column \
             type; drop --id-type (or pass {recorded}), or start a new --out and --state-dir",
            out.display()
        );
    }
    Ok(())
}

/// The dataset's id type: the one the checkpoint in `ledger` records (or implies, for a
/// dataset written before id types were recorded), else the one decided now, from the run's
/// `--id-type` or from the collection, and recorded.
pub(super) fn settle(engine: &Engine, ledger: &Ledger) -> Result<IdType> {
    let checkpoint = ledger.snapshot();
    if let Some(recorded) = checkpoint.recorded_id_type() {
        if checkpoint.id_type.is_none() {
            ledger.update(|cp| cp.id_type = Some(recorded))?;
        }
        return Ok(recorded);
    }
    let chosen = match engine.config.id_type {
        Some(t) => t,
        None => {
            let q = &engine.queue;
            let (min, max) = engine
                .runtime
                .block_on(retry(&q.retry, "reading the smallest and largest _id", || q.collection_id_edges()))
                .map_err(|e| anyhow!("reading the smallest and largest _id: {}", describe(&e)))?;
            let chosen = IdType::of_edges(min.as_ref(), max.as_ref());
            tracing::info!(
                id_type = %chosen,
                smallest = ?min,
                largest = ?max,
                "chose the output's id column type from the collection's smallest and largest _id"
            );
            chosen
        }
    };
    ledger.update(|cp| cp.id_type = Some(chosen))?;
    Ok(chosen)
}
