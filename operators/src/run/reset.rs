//! `--reset-output`: what a user asks for after a refusal because the dataset's identity changed
//! (another model, dimension, prompt …). The output's files, the staged files and the checkpoint
//! go, and the mark field is cleared on every document, so the run embeds everything again with
//! the new settings: keeping the marks would leave the old vectors' documents out of the new
//! dataset for ever. It deletes only files whose names are ours.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use mongodb::bson::{doc, Document};

use super::engine::Engine;
use crate::mongo::error::{describe, retry};
use crate::table::checkpoint::{list_files, remove_unlisted, CheckpointStore};

/// Deletes the output (our files in `--out`, `_rejects/`, `_deletions/` and the staging
/// directory `staging`), the checkpoint in `store`, and the marks of `engine`'s mark field.
pub(crate) fn reset_output(engine: &Engine, store: &CheckpointStore, staging: &Path) -> Result<()> {
    let out = &engine.config.out;
    let files = list_files(out)?;
    for f in &files {
        let path = out.join(&f.path);
        std::fs::remove_file(&path).with_context(|| format!("--reset-output: removing {}", path.display()))?;
    }
    let staged = remove_unlisted(staging, &[])?;
    match std::fs::remove_file(store.path()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("--reset-output: removing {}", store.path().display())),
    }
    let marker = &engine.marker;
    let (mark, error, at) = (marker.mark_field.clone(), marker.error_field(), marker.rejected_at_field());
    let coll = engine.queue.coll.clone();
    let cleared = engine
        .runtime
        .block_on(retry(&engine.queue.retry, "clearing the marks for --reset-output", || {
            let coll = coll.clone();
            let (mark, error, at) = (mark.clone(), error.clone(), at.clone());
            async move {
                coll.update_many(
                    doc! {mark.as_str(): {"$exists": true}},
                    doc! {"$unset": Document::from_iter([(mark, "".into()), (error, "".into()), (at, "".into())])},
                )
                .await
            }
        }))
        .map_err(|e| anyhow!("clearing the marks for --reset-output: {}", describe(&e)))?;
    tracing::warn!(
        files = files.len() + staged.len(),
        marks_cleared = cleared.modified_count,
        out = %out.display(),
        "--reset-output: deleted the output and the checkpoint and cleared the marks; everything is embedded again"
    );
    Ok(())
}
