//! Rewriting our own files: many committed files of one kind into one (compaction), or one file
//! without some of its rows (a deletion pass). It streams one batch at a time, so memory is a
//! batch plus the writer's open row group, whatever the sizes. It writes only the path it is
//! given and never renames, removes or decides anything: what to merge, and when the result
//! counts, is `crate::compaction`'s.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::UInt64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;

use super::error::OutputError;
use super::id_type::{IdColumn, IdType};
use super::naming::FileKind;
use super::schema::writer_properties;

/// Rows read per batch while merging.
const BATCH_ROWS: usize = 8_192;

/// Decides which rows leave: `(id, epoch) → true` drops the row. The id is in the engine's
/// form, as `super::read` gives it, whatever the file's id type.
pub type RowFilter<'a> = &'a dyn Fn(&str, u64) -> bool;

/// What a merge wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// How many of the inputs, in order, it consumed (all of them unless `target` stopped it).
    pub inputs_used: usize,
    /// Rows written.
    pub rows: u64,
    /// Rows the filter dropped.
    pub dropped: u64,
    /// Size of the written file in bytes.
    pub bytes: u64,
    /// Lowest and highest epoch of the rows written; `None` when every row was dropped.
    pub epochs: Option<(u64, u64)>,
}

/// Writes the rows of `inputs` (files of one `kind`, one schema), in order, to `dest`, dropping
/// those `drop` selects; stops after the first input that brings the file to `target` bytes.
/// The file gets the first input's schema, row groups of at most `row_group_rows` and
/// `key_values` in its footer (plus its epoch range), and is fsynced; its directory is not.
/// Errors: an unreadable input (named), inputs of different schemas, any I/O error (`dest` may
/// then hold a partial file, which the caller's name keeps from readers).
pub fn merge_files(
    inputs: &[PathBuf],
    kind: FileKind,
    dest: &Path,
    target: Option<u64>,
    row_group_rows: usize,
    key_values: &[(String, String)],
    drop: RowFilter<'_>,
) -> Result<Merged, OutputError> {
    let first = inputs.first().ok_or_else(|| OutputError::Config("nothing to merge".into()))?;
    let schema = open(first)?.schema().clone();
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .map_err(|e| OutputError::io("create", dest, e))?;
    let props = writer_properties(kind, row_group_rows);
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| OutputError::parquet("start", dest, e))?;
    let mut merged = Merged::default();
    for input in inputs {
        let builder = open(input)?;
        let kv = builder.metadata().file_metadata().key_value_metadata();
        let id_type = IdType::of_file(kv, builder.schema())
            .map_err(|reason| OutputError::Schema { path: input.clone(), reason })?;
        let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(|e| OutputError::parquet("read", input, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| arrow_error("read", input, e))?;
            if batch.schema().fields() != schema.fields() {
                return Err(OutputError::Schema {
                    path: input.clone(),
                    reason: format!("its columns differ from {}", first.display()),
                });
            }
            let batch = keep(&batch, id_type, input, drop, &mut merged)?;
            if batch.num_rows() == 0 {
                continue;
            }
            writer.write(&batch).map_err(|e| OutputError::parquet("write to", dest, e))?;
            merged.rows += batch.num_rows() as u64;
        }
        merged.inputs_used += 1;
        if let Some(target) = target {
            if (writer.bytes_written() + writer.in_progress_size()) as u64 >= target {
                // The estimate counts the open row group before compression: flush, then judge
                // by the bytes really written.
                writer.flush().map_err(|e| OutputError::parquet("write to", dest, e))?;
                if writer.bytes_written() as u64 >= target {
                    break;
                }
            }
        }
    }
    if let Some((lo, hi)) = merged.epochs {
        writer.append_key_value_metadata(KeyValue::new("tweet_embed.epoch_lo".into(), lo.to_string()));
        writer.append_key_value_metadata(KeyValue::new("tweet_embed.epoch_hi".into(), hi.to_string()));
    }
    for (k, v) in key_values {
        writer.append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
    }
    let file = writer.into_inner().map_err(|e| OutputError::parquet("finish", dest, e))?;
    file.sync_all().map_err(|e| OutputError::io("fsync", dest, e))?;
    merged.bytes = file.metadata().map_err(|e| OutputError::io("stat", dest, e))?.len();
    Ok(merged)
}

/// Replaces the file at `path` (of `kind`) with a copy without the rows `drop` selects, keeping
/// its metadata: the copy is written and fsynced at `scratch` (a name the caller's recovery
/// removes, in `path`'s file system), then renamed over `path` in one step, so a reader sees the
/// old file or the new one. The caller fsyncs the directory.
pub fn rewrite_without(
    path: &Path,
    kind: FileKind,
    scratch: &Path,
    row_group_rows: usize,
    drop: RowFilter<'_>,
) -> Result<Merged, OutputError> {
    let kv = key_values(path)?;
    let merged = merge_files(&[path.to_path_buf()], kind, scratch, None, row_group_rows, &kv, drop)?;
    std::fs::rename(scratch, path).map_err(|e| OutputError::io("replace", path, e))?;
    Ok(merged)
}

/// The key-value metadata of one of our files (model, dimension, …) without its epoch range,
/// for a file merged from it.
pub fn key_values(path: &Path) -> Result<Vec<(String, String)>, OutputError> {
    let builder = open(path)?;
    let kv = builder.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    Ok(kv
        .into_iter()
        .filter(|kv| kv.key.starts_with("tweet_embed.") && !kv.key.starts_with("tweet_embed.epoch_"))
        .filter(|kv| kv.key != "tweet_embed.worker")
        .filter_map(|kv| kv.value.map(|v| (kv.key, v)))
        .collect())
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, OutputError> {
    let file = File::open(path).map_err(|e| OutputError::io("open", path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| OutputError::parquet("read", path, e))
}

/// The rows of `batch` that `drop` keeps; counts the dropped and the kept epoch range.
fn keep(
    batch: &arrow::array::RecordBatch,
    id_type: IdType,
    path: &Path,
    drop: RowFilter<'_>,
    merged: &mut Merged,
) -> Result<arrow::array::RecordBatch, OutputError> {
    let bad = |reason: &str| OutputError::Schema { path: path.to_path_buf(), reason: reason.to_string() };
    let ids = IdColumn::new(batch, id_type).map_err(|e| bad(&e))?;
    let epochs = batch
        .column_by_name("epoch")
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| bad("no uint64 column epoch"))?;
    // One buffer for every id of the batch: an Int64 id is formatted, not allocated, per row.
    let mut id = String::new();
    let mask: BooleanArray =
        (0..batch.num_rows()).map(|i| Some(!(ids.read_into(i, &mut id) && drop(&id, epochs.value(i))))).collect();
    let kept = mask.true_count();
    merged.dropped += (batch.num_rows() - kept) as u64;
    for (i, e) in epochs.values().iter().enumerate() {
        if mask.value(i) {
            merged.epochs = Some(merged.epochs.map_or((*e, *e), |(lo, hi)| (lo.min(*e), hi.max(*e))));
        }
    }
    if kept == batch.num_rows() {
        return Ok(batch.clone());
    }
    filter_record_batch(batch, &mask).map_err(|e| arrow_error("filter", path, e))
}

fn arrow_error(action: &str, path: &Path, e: arrow::error::ArrowError) -> OutputError {
    OutputError::Schema { path: path.to_path_buf(), reason: format!("{action}: {e}") }
}
