//! The type of a dataset's `id` column (`crate::table::output::id_type`): decided at the first start and
//! recorded in the checkpoint, which every later start reuses once the dataset holds a file.
//!
//! `--id-type auto` (the default) decides from the collection's `_id` index, never from a scan: the
//! smallest and the largest `_id` (two one-document lookups) of one type class mean every `_id`
//! has it ([`IdType::of_edges`]). On an empty collection there is nothing to decide from: `run`
//! waits for the first document (SIGTERM ends the wait), `backfill` has nothing to write. While
//! the dataset holds no file the type is decided again at each start, so a type chosen wrongly
//! (an epoch of strays stops the run, `checkpoint::RejectionGuard`) heals on the next start.
//! Once a file is written, a run asking for another type refuses before recovery touches
//! anything: one dataset has one id column type.

use anyhow::{anyhow, bail, Result};
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::written::Holdings;
use crate::dataflow::epoch_clock::StopSignal;
use crate::mongo::error::{describe, retry};
use crate::table::checkpoint::{CheckpointStore, Ledger};
use crate::table::output::IdType;

/// Refuses a run whose `wanted` id type (`None`: auto) differs from the type `store`'s
/// checkpoint records for the output `out`, with one line naming both.
pub(super) fn refuse_another(store: &CheckpointStore, wanted: Option<IdType>, out: &std::path::Path) -> Result<()> {
    let Some(cp) = store.load()? else { return Ok(()) };
    let (Some(wanted), Some(recorded)) = (wanted, cp.recorded_id_type()) else {
        return Ok(());
    };
    if wanted != recorded && Holdings::of(&cp, out)?.files {
        bail!(
            "--id-type {wanted} differs from the id type recorded for {} ({recorded}): one dataset has one id column \
             type; drop --id-type (or pass {recorded}), or start a new --out and --state-dir",
            out.display()
        );
    }
    Ok(())
}

/// How often a run on an empty collection says it is waiting for a first document.
const EMPTY_WARN_EVERY: Duration = Duration::from_secs(30);

/// The dataset's id type: the one the checkpoint in `ledger` records (or implies, for a
/// dataset written before id types were recorded) once the dataset holds a file, else the one
/// decided now, from the run's `--id-type` or from the collection, and recorded. With `wait`
/// (`run`), an empty collection is polled until its first document, or until `wait` stops (then
/// the recorded type, or `objectid`, unrecorded: nothing will be written).
pub(super) fn settle(engine: &Engine, ledger: &Ledger, wait: Option<&StopSignal>) -> Result<IdType> {
    let checkpoint = ledger.snapshot();
    let recorded = checkpoint.recorded_id_type();
    if let Some(recorded) = recorded {
        if Holdings::of(&checkpoint, &engine.config.out)?.files {
            if checkpoint.id_type().is_none() {
                ledger.set_id_type(recorded)?;
            }
            return Ok(recorded);
        }
    }
    let chosen = match engine.config.id_type {
        Some(t) => t,
        None => {
            let q = &engine.queue;
            let edges = || {
                engine
                    .runtime
                    .block_on(retry(&q.retry, "reading the smallest and largest _id", || q.collection_id_edges()))
                    .map_err(|e| anyhow!("reading the smallest and largest _id: {}", describe(&e)))
            };
            let (mut min, mut max) = edges()?;
            if let (None, None, Some(stop)) = (&min, &max, wait) {
                let (mut warned, start) = (None::<Instant>, Instant::now());
                while min.is_none() && max.is_none() {
                    if stop.is_stopped() {
                        return Ok(recorded.unwrap_or(IdType::ObjectId));
                    }
                    if warned.is_none_or(|w| w.elapsed() >= EMPTY_WARN_EVERY) {
                        tracing::warn!(
                            collection = %q.coll.namespace(),
                            waited_s = start.elapsed().as_secs(),
                            "the collection is empty: waiting for its first document to choose the output's id column \
                             type from it (pass --id-type to choose now)"
                        );
                        warned = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    (min, max) = edges()?;
                }
            }
            if min.is_none() && max.is_none() {
                // A backfill of an empty collection writes nothing: keep what was, decide later.
                if let Some(recorded) = recorded {
                    return Ok(recorded);
                }
            }
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
    if let Some(was) = recorded.filter(|r| *r != chosen) {
        tracing::info!(was = %was, now = %chosen, "the output holds no file yet: its id column type is chosen again");
    }
    ledger.set_id_type(chosen)?;
    Ok(chosen)
}
