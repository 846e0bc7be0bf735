//! The reading side of a run: every input's batches, mapped to the output layout (`input`),
//! without the rows the deletion log deletes, handed in order over a bounded channel to the
//! writer. It reads inputs and counts into [`Figures`]; it never writes a file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int64Type, UInt64Type};

use super::input::{InputFile, Layout};
use super::progress::Figures;
use crate::table::output::{DeletionSet, IdType};

/// Hands every batch of `rx` to `sink` until the reader is done or fails. Owning `rx` means an
/// early return drops it, which stops the reader.
pub(super) fn consume(
    rx: Receiver<Result<RecordBatch>>,
    mut sink: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    for batch in rx {
        sink(&batch?)?;
    }
    Ok(())
}

/// What the reader thread reads, and where it counts.
pub(super) struct Reading<'a> {
    pub(super) files: &'a [&'a InputFile],
    pub(super) layout: &'a Layout,
    /// Rows to drop, if any.
    pub(super) deletions: Option<&'a DeletionSet>,
    pub(super) batch_rows: usize,
    pub(super) figures: &'a Figures,
    /// Rows dropped as deleted.
    pub(super) deleted: &'a AtomicU64,
}

/// The reader thread: every file's batches, mapped to `layout`, without deleted rows, in order;
/// stops at the first error (sent on) or when the receiver is gone. Checks each file's rows
/// against its footer.
pub(super) fn read_all(r: &Reading<'_>, tx: SyncSender<Result<RecordBatch>>) {
    for file in r.files {
        let result = (|| -> Result<()> {
            let mut row = 0u64;
            for batch in file.reader(r.batch_rows)? {
                let batch = batch.with_context(|| format!("{}: cannot read rows from {row}", file.path.display()))?;
                let first = row;
                let mapped = file.map(&batch, r.layout, first)?;
                row += mapped.num_rows() as u64;
                r.figures.rows.fetch_add(mapped.num_rows() as u64, Ordering::Relaxed);
                let kept = match r.deletions {
                    Some(deletions) => {
                        let kept = drop_deleted(&mapped, deletions, file.id_type)
                            .with_context(|| format!("{}: rows {first}..", file.path.display()))?;
                        r.deleted.fetch_add((mapped.num_rows() - kept.num_rows()) as u64, Ordering::Relaxed);
                        kept
                    }
                    None => mapped,
                };
                if kept.num_rows() > 0 && tx.send(Ok(kept)).is_err() {
                    return Ok(());
                }
            }
            if row != file.rows {
                bail!("{}: read {row} rows, its footer says {}", file.path.display(), file.rows);
            }
            r.figures.bytes.fetch_add(file.bytes, Ordering::Relaxed);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.send(Err(e));
            return;
        }
    }
}

/// `batch` (of the output layout: `id` first, `epoch` if any file has it), read from a file of
/// `id_type` (its metadata's), without the rows `deletions` deletes; a null `epoch` (a file
/// without one) matches any deletion of its id. A deletion names a row as the engine does
/// (`crate::table::output::id_type`): an `int64` file's `5` as `{"$numberLong":"5"}`,
/// a `string` file's `abc` as `"abc"`; other files' ids as they are.
fn drop_deleted(batch: &RecordBatch, deletions: &DeletionSet, id_type: Option<IdType>) -> Result<RecordBatch> {
    let ids = batch.column(0);
    let (ints, strings) = (ids.as_primitive_opt::<Int64Type>(), ids.as_string_opt::<i32>());
    if ints.is_none() && strings.is_none() {
        bail!("the id column is {}, not a string or int64 column", ids.data_type());
    }
    let epochs = match batch.schema().index_of("epoch") {
        Ok(i) => Some(batch.column(i).as_primitive_opt::<UInt64Type>().context("the epoch column is not uint64")?),
        Err(_) => None,
    };
    let mut text = String::new();
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            use std::fmt::Write;
            text.clear();
            match (ints, strings) {
                (Some(a), _) => {
                    let _ = write!(text, "{}", a.value(i));
                }
                (_, Some(a)) => text.push_str(a.value(i)),
                _ => {}
            }
            let key: std::borrow::Cow<'_, str> = match id_type {
                Some(IdType::Int64) => format!(r#"{{"$numberLong":"{text}"}}"#).into(),
                Some(IdType::String) => serde_json::to_string(&text).unwrap_or_default().into(),
                _ => text.as_str().into(),
            };
            let epoch = epochs.and_then(|e| e.is_valid(i).then(|| e.value(i)));
            Some(!deletions.deletes(&key, epoch))
        })
        .collect();
    if keep.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    Ok(filter_record_batch(batch, &keep)?)
}
