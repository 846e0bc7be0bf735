//! Rewriting our own files: many committed files of one kind into one (compaction), or one file
//! without some of its rows (a deletion pass). It writes only the path it is given and never
//! renames, removes or decides anything: what to merge, and when the result counts, is
//! `crate::table::compaction`'s.
//!
//! A row group that keeps all its rows is copied as it is encoded: its column chunks go into the
//! new file with their statistics and page indexes (Parquet's own concatenation,
//! `SerializedRowGroupWriter::append_column`), their bytes copied from file to file by the kernel
//! (`super::splice`), so the vectors are never read, decompressed or encoded. Only row groups
//! that lose rows, and small ones (which would otherwise stay small row groups for good), are
//! decoded and encoded again. Deciding which rows leave reads the `id` and `epoch` columns only.
//! Memory is a batch plus the row group being encoded, whatever the sizes.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, UInt64Type};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter, ArrowRowGroupWriterFactory};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, PageIndexPolicy};
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;

use super::error::OutputError;
use super::id_type::{IdColumn, IdType, STRAY_ID};
use super::naming::FileKind;
use super::schema::{writer_properties, ROW_GROUP_BYTES};
use super::splice::{Placeholders, Sink};

/// Rows read per batch while merging.
const BATCH_ROWS: usize = 8_192;

/// Row groups smaller than this (encoded) are re-encoded, together with their small neighbours,
/// rather than copied: a row group costs readers a footer entry and a seek whatever its size,
/// and a tiny one (a rejects file, a quiet epoch) costs little to encode again.
const COPY_MIN_BYTES: u64 = 64 << 10;

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
/// those `drop` selects (None: no row can be dropped, so no `id` is read: whole row groups are
/// copied and the epoch range comes from the footer's statistics); stops after the first input
/// that brings the file to `target` bytes.
/// The file gets the first input's schema and `key_values` in its footer (plus its epoch range),
/// and is fsynced; its directory is not. Row groups that keep every row are copied as they are
/// (so they keep the size they were written with); the others are encoded again in row groups
/// of at most `row_group_rows`.
/// Errors: an unreadable input (named), inputs of different schemas, any I/O error (`dest` may
/// then hold a partial file, which the caller's name keeps from readers).
pub fn merge_files(
    inputs: &[PathBuf],
    kind: FileKind,
    dest: &Path,
    target: Option<u64>,
    row_group_rows: usize,
    key_values: &[(String, String)],
    drop: Option<RowFilter<'_>>,
) -> Result<Merged, OutputError> {
    merge_with(inputs, kind, dest, target, row_group_rows, key_values, drop, COPY_MIN_BYTES)
}

/// [`merge_files`], copying row groups of at least `copy_min_bytes`.
#[allow(clippy::too_many_arguments)]
pub(super) fn merge_with(
    inputs: &[PathBuf],
    kind: FileKind,
    dest: &Path,
    target: Option<u64>,
    row_group_rows: usize,
    key_values: &[(String, String)],
    drop: Option<RowFilter<'_>>,
    copy_min_bytes: u64,
) -> Result<Merged, OutputError> {
    let first = inputs.first().ok_or_else(|| OutputError::Config("nothing to merge".into()))?;
    let first_input = Input::open(first)?;
    let schema = first_input.meta.schema().clone();
    let mut opened = Some(first_input);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .map_err(|e| OutputError::io("create", dest, e))?;
    let props = writer_properties(kind, row_group_rows);
    let max_bytes = props.max_row_group_bytes().unwrap_or(ROW_GROUP_BYTES);
    // The Arrow writer converts the schema and puts it in the footer (`ARROW:schema`, which
    // keeps the dictionaries, the fixed-size list and the time zone); the rest is done below it.
    let (mut writer, factory) = ArrowWriter::try_new(Sink::new(file), schema.clone(), Some(props))
        .and_then(ArrowWriter::into_serialized_writer)
        .map_err(|e| OutputError::parquet("start", dest, e))?;
    let mut encoder =
        Encoder { factory, schema: schema.clone(), max_rows: row_group_rows.max(1), max_bytes, open: None };
    let mut merged = Merged::default();
    for path in inputs {
        let input = match opened.take() {
            Some(input) => input,
            None => Input::open(path)?,
        };
        if input.meta.schema().fields() != schema.fields() {
            return Err(OutputError::Schema {
                path: path.clone(),
                reason: format!("its columns differ from {}", first.display()),
            });
        }
        let keep = match drop.map(|drop| input.keep(drop, &mut merged)) {
            Some(keep) => keep?,
            None => input.keep_all(&mut merged)?,
        };
        let copyable = {
            let (ours, theirs) = (writer.schema_descr(), input.meta.metadata().file_metadata().schema_descr());
            ours.num_columns() == theirs.num_columns()
                && (0..ours.num_columns()).all(|i| ours.column(i) == theirs.column(i))
        };
        let mut start = 0;
        for (index, group) in input.meta.metadata().row_groups().iter().enumerate() {
            let rows = usize::try_from(group.num_rows()).map_err(|_| input.bad("a row group's row count"))?;
            let flags = keep.get(start..start + rows).ok_or_else(|| input.bad("fewer rows than its footer says"))?;
            start += rows;
            let kept = flags.iter().filter(|k| **k).count();
            merged.rows += kept as u64;
            if kept == 0 {
                continue;
            }
            let big = u64::try_from(group.compressed_size()).is_ok_and(|b| b >= copy_min_bytes);
            if copyable && big && kept == rows {
                encoder.flush(&mut writer).map_err(|e| OutputError::parquet("write to", dest, e))?;
                input.copy_row_group(index, &mut writer, dest)?;
            } else {
                let mut at = 0;
                for batch in input.reader(None, Some(index))? {
                    let batch = batch.map_err(|e| arrow_error("read", path, e))?;
                    let n = batch.num_rows();
                    let flags = flags.get(at..at + n).ok_or_else(|| input.bad("more rows than its footer says"))?;
                    at += n;
                    let batch = if flags.iter().all(|k| *k) {
                        batch
                    } else {
                        filter_record_batch(&batch, &BooleanArray::from(flags.to_vec()))
                            .map_err(|e| arrow_error("filter", path, e))?
                    };
                    encoder.write(&mut writer, &batch).map_err(|e| OutputError::parquet("write to", dest, e))?;
                }
            }
        }
        merged.inputs_used += 1;
        if let Some(target) = target {
            if (writer.bytes_written() + encoder.in_progress_size()) as u64 >= target {
                // The estimate counts the open row group before compression: flush, then judge
                // by the bytes really written.
                encoder.flush(&mut writer).map_err(|e| OutputError::parquet("write to", dest, e))?;
                if writer.bytes_written() as u64 >= target {
                    break;
                }
            }
        }
    }
    encoder.flush(&mut writer).map_err(|e| OutputError::parquet("write to", dest, e))?;
    if let Some((lo, hi)) = merged.epochs {
        writer.append_key_value_metadata(KeyValue::new("tweet_embed.epoch_lo".into(), lo.to_string()));
        writer.append_key_value_metadata(KeyValue::new("tweet_embed.epoch_hi".into(), hi.to_string()));
    }
    for (k, v) in key_values {
        writer.append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
    }
    let file = writer.into_inner().map_err(|e| OutputError::parquet("finish", dest, e))?;
    let file = file.into_file().map_err(|e| OutputError::io("write to", dest, e))?;
    file.sync_all().map_err(|e| OutputError::io("fsync", dest, e))?;
    merged.bytes = file.metadata().map_err(|e| OutputError::io("stat", dest, e))?.len();
    Ok(merged)
}

/// Replaces the file at `path` (of `kind`) with a copy without the rows `drop` selects, keeping
/// its metadata: the copy is written and fsynced at `scratch` (a name the caller's recovery
/// removes, in `path`'s file system), then renamed over `path` in one step, so a reader sees the
/// old file or the new one. The caller fsyncs the directory. Row groups that lose no row are
/// copied, not encoded again.
pub fn rewrite_without(
    path: &Path,
    kind: FileKind,
    scratch: &Path,
    row_group_rows: usize,
    drop: RowFilter<'_>,
) -> Result<Merged, OutputError> {
    let kv = key_values(path)?;
    let merged = merge_files(&[path.to_path_buf()], kind, scratch, None, row_group_rows, &kv, Some(drop))?;
    std::fs::rename(scratch, path).map_err(|e| OutputError::io("replace", path, e))?;
    Ok(merged)
}

/// The key-value metadata of one of our files (model, dimension, …) without its epoch range,
/// for a file merged from it.
pub fn key_values(path: &Path) -> Result<Vec<(String, String)>, OutputError> {
    let file = File::open(path).map_err(|e| OutputError::io("open", path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| OutputError::parquet("read", path, e))?;
    let kv = builder.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    Ok(kv
        .into_iter()
        .filter(|kv| kv.key.starts_with("tweet_embed.") && !kv.key.starts_with("tweet_embed.epoch_"))
        .filter(|kv| kv.key != "tweet_embed.worker")
        .filter_map(|kv| kv.value.map(|v| (kv.key, v)))
        .collect())
}

/// One input file: its footer (with its page index, which a copied row group keeps) and id type.
struct Input {
    path: PathBuf,
    file: File,
    meta: ArrowReaderMetadata,
    id_type: IdType,
}

impl Input {
    fn open(path: &Path) -> Result<Input, OutputError> {
        let file = File::open(path).map_err(|e| OutputError::io("open", path, e))?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::load(&file, options).map_err(|e| OutputError::parquet("read", path, e))?;
        let kv = meta.metadata().file_metadata().key_value_metadata();
        let id_type = IdType::of_file(kv, meta.schema())
            .map_err(|reason| OutputError::Schema { path: path.to_path_buf(), reason })?;
        Ok(Input { path: path.to_path_buf(), file, meta, id_type })
    }

    fn bad(&self, reason: &str) -> OutputError {
        OutputError::Schema { path: self.path.clone(), reason: reason.to_string() }
    }

    /// A reader of the columns `roots` (all of them when `None`), of the row group `group`
    /// (all of them when `None`).
    fn reader(&self, roots: Option<Vec<usize>>, group: Option<usize>) -> Result<ParquetRecordBatchReader, OutputError> {
        let file = self.file.try_clone().map_err(|e| OutputError::io("open", &self.path, e))?;
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone()).with_batch_size(BATCH_ROWS);
        if let Some(roots) = roots {
            builder = builder.with_projection(ProjectionMask::roots(self.meta.parquet_schema(), roots));
        }
        if let Some(group) = group {
            builder = builder.with_row_groups(vec![group]);
        }
        builder.build().map_err(|e| OutputError::parquet("read", &self.path, e))
    }

    /// Whether each row stays (`drop` does not select it), in file order, reading only `id`,
    /// `stray_id` and `epoch`; counts the dropped and the kept epoch range into `merged`.
    fn keep(&self, drop: RowFilter<'_>, merged: &mut Merged) -> Result<Vec<bool>, OutputError> {
        let schema = self.meta.schema();
        let column = |name: &str| schema.index_of(name).ok();
        let (Some(id), Some(epoch)) = (column("id"), column("epoch")) else {
            return Err(self.bad("no id or no epoch column"));
        };
        let mut roots = vec![id, epoch];
        roots.extend(column(STRAY_ID));
        roots.sort_unstable();
        let rows = self.meta.metadata().file_metadata().num_rows();
        let mut keep = Vec::with_capacity(usize::try_from(rows).unwrap_or(0));
        // One buffer for every id: an Int64 id is formatted, not allocated, per row.
        let mut buf = String::new();
        for batch in self.reader(Some(roots), None)? {
            let batch = batch.map_err(|e| arrow_error("read", &self.path, e))?;
            let ids = IdColumn::new(&batch, self.id_type).map_err(|e| self.bad(&e))?;
            let epochs = batch
                .column_by_name("epoch")
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| self.bad("no uint64 column epoch"))?;
            for (i, e) in epochs.values().iter().enumerate() {
                let dropped = ids.read_into(i, &mut buf) && drop(&buf, *e);
                keep.push(!dropped);
                if dropped {
                    merged.dropped += 1;
                } else {
                    merged.epochs = Some(merged.epochs.map_or((*e, *e), |(lo, hi)| (lo.min(*e), hi.max(*e))));
                }
            }
        }
        Ok(keep)
    }

    /// Every row stays: the epoch range into `merged` from the `epoch` column's statistics in
    /// the footer, without decoding a page (read from the column when a row group has none).
    fn keep_all(&self, merged: &mut Merged) -> Result<Vec<bool>, OutputError> {
        let meta = self.meta.metadata();
        let rows = usize::try_from(meta.file_metadata().num_rows()).map_err(|_| self.bad("its row count"))?;
        let column = self.meta.parquet_schema().columns().iter().position(|c| c.path().string() == "epoch");
        let mut range: Option<(u64, u64)> = None;
        for group in meta.row_groups() {
            let stats = column.and_then(|c| group.column(c).statistics());
            let Some(Statistics::Int64(stats)) = stats else {
                return self.keep(&|_, _| false, merged);
            };
            let (Some(&lo), Some(&hi)) = (stats.min_opt(), stats.max_opt()) else {
                return self.keep(&|_, _| false, merged);
            };
            // An unsigned column's statistics are its values' bits (epochs are far below 2^63).
            let (lo, hi) = (lo as u64, hi as u64);
            range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
        if let Some((lo, hi)) = range {
            merged.epochs = Some(merged.epochs.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
        Ok(vec![true; rows])
    }

    /// Appends row group `group` to `writer` as it is encoded: the column chunks' bytes, copied
    /// from file to file by the sink, with their statistics and page indexes (moved to their new
    /// offsets by the writer).
    fn copy_row_group(
        &self,
        group: usize,
        writer: &mut SerializedFileWriter<Sink>,
        dest: &Path,
    ) -> Result<(), OutputError> {
        let metadata = self.meta.metadata();
        let rg = metadata.row_group(group);
        let rows = u64::try_from(rg.num_rows()).map_err(|_| self.bad("a row group's row count"))?;
        // The writer puts the chunks one after the other from where it is.
        let base = writer.bytes_written() as u64;
        let mut at = base;
        for chunk in rg.columns() {
            let (offset, len) = chunk.byte_range();
            writer
                .inner_mut()
                .splice(at, &self.file, offset, len)
                .map_err(|e| OutputError::io("copy row groups into", dest, e))?;
            at = at.checked_add(len).ok_or_else(|| self.bad("a column chunk's size"))?;
        }
        let failed = |e: ParquetError| match e {
            ParquetError::External(_) => OutputError::parquet("copy row groups into", dest, e),
            e => OutputError::Parquet {
                action: "copy row groups into",
                path: dest.to_path_buf(),
                source: ParquetError::General(format!("from {}: {e}", self.path.display())),
            },
        };
        let page_index = metadata.page_index();
        let mut out = writer.next_row_group().map_err(failed)?;
        for (c, chunk) in rg.columns().iter().enumerate() {
            let bytes = u64::try_from(chunk.compressed_size()).map_err(|_| self.bad("a column chunk's size"))?;
            let close = ColumnCloseResult {
                bytes_written: bytes,
                rows_written: rows,
                metadata: chunk.clone(),
                bloom_filter: None,
                column_index: page_index.and_then(|p| p.column_index(group, c)).cloned(),
                offset_index: page_index.and_then(|p| p.offset_index(group, c)).cloned(),
            };
            out.append_column(&Placeholders, close).map_err(failed)?;
        }
        out.close().map_err(failed)?;
        if writer.bytes_written() as u64 != at {
            return Err(OutputError::Parquet {
                action: "copy row groups into",
                path: dest.to_path_buf(),
                source: ParquetError::General(format!(
                    "a row group of {} took {} bytes, its chunks {}",
                    self.path.display(),
                    (writer.bytes_written() as u64).saturating_sub(base),
                    at - base
                )),
            });
        }
        Ok(())
    }
}

/// Encodes rows into row groups of at most `max_rows` rows and about `max_bytes`, as the Arrow
/// writer would, beside the copied ones.
struct Encoder {
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    max_rows: usize,
    max_bytes: usize,
    /// The open row group's column writers and rows.
    open: Option<(Vec<ArrowColumnWriter>, usize)>,
}

impl Encoder {
    fn write(&mut self, out: &mut SerializedFileWriter<Sink>, batch: &RecordBatch) -> Result<(), ParquetError> {
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            let (mut writers, mut rows) = match self.open.take() {
                Some(open) => open,
                None => (self.factory.create_column_writers(out.flushed_row_groups().len())?, 0),
            };
            let take = self.max_rows.saturating_sub(rows).clamp(1, rest.num_rows());
            let part = rest.slice(0, take);
            rest = rest.slice(take, rest.num_rows() - take);
            let mut leaves = writers.iter_mut();
            for (field, column) in self.schema.fields().iter().zip(part.columns()) {
                for leaf in compute_leaves(field, column)? {
                    let writer =
                        leaves.next().ok_or_else(|| ParquetError::General("more leaves than columns".into()))?;
                    writer.write(&leaf)?;
                }
            }
            rows += take;
            self.open = Some((writers, rows));
            if rows >= self.max_rows || self.in_progress_size() >= self.max_bytes {
                self.flush(out)?;
            }
        }
        Ok(())
    }

    /// The open row group's estimated encoded size.
    fn in_progress_size(&self) -> usize {
        self.open.as_ref().map_or(0, |(writers, _)| writers.iter().map(|w| w.get_estimated_total_bytes()).sum())
    }

    /// Closes the open row group, if any, into `out`.
    fn flush(&mut self, out: &mut SerializedFileWriter<Sink>) -> Result<(), ParquetError> {
        let Some((writers, _)) = self.open.take() else { return Ok(()) };
        let mut group = out.next_row_group()?;
        for writer in writers {
            writer.close()?.append_to_row_group(&mut group)?;
        }
        group.close()?;
        Ok(())
    }
}

fn arrow_error(action: &str, path: &Path, e: arrow::error::ArrowError) -> OutputError {
    OutputError::Schema { path: path.to_path_buf(), reason: format!("{action}: {e}") }
}
