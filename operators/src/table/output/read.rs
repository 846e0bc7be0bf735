//! Reading our own files back: ids and epochs to re-mark epochs in `(marked, committed]` at
//! restart, rejections with their reasons, and whole rows for verification. Reads only the
//! columns asked for; never writes. Ids come back in the engine's form whatever the file's id
//! type (`super::id_type`), a stray's from its `stray_id`.

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Float32Type, Int32Type, TimestampMillisecondType, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::error::OutputError;
use super::id_type::{IdColumn, IdType, STRAY_ID};
use crate::dataflow::record::{DocMeta, EmbeddedRow, Origin};

/// `(id, epoch)` of every row of a rows file (or of a rejects file).
pub fn read_row_ids(path: &Path) -> Result<Vec<(String, u64)>, OutputError> {
    let mut out = Vec::new();
    let (id_type, batches) = read(path, &["id", "epoch"])?;
    for batch in batches {
        let (ids, epochs) = (ids(&batch, id_type, path)?, u64s(&batch, "epoch", path)?);
        for (i, epoch) in epochs.values().iter().enumerate() {
            out.push((id(&ids, i, path)?, *epoch));
        }
    }
    Ok(out)
}

/// `(id, reason, epoch)` of every rejection of a rejects file.
pub fn read_rejects(path: &Path) -> Result<Vec<(String, String, u64)>, OutputError> {
    let mut out = Vec::new();
    let (id_type, batches) = read(path, &["id", "reason", "epoch"])?;
    for batch in batches {
        let (ids, reasons) = (ids(&batch, id_type, path)?, strings(&batch, "reason", path)?);
        let epochs = u64s(&batch, "epoch", path)?;
        for (i, (reason, epoch)) in reasons.iter().zip(epochs.values().iter()).enumerate() {
            if let Some(reason) = reason {
                out.push((id(&ids, i, path)?, reason.to_string(), *epoch));
            }
        }
    }
    Ok(out)
}

/// Every row of a rows file with its epoch: for checks and tools, it holds all vectors in memory.
pub fn read_rows(path: &Path) -> Result<Vec<(u64, EmbeddedRow)>, OutputError> {
    let mut out = Vec::new();
    let columns = ["id", "embedding", "text_hash", "tokens", "lang", "created_at", "source", "epoch"];
    let (id_type, batches) = read(path, &columns)?;
    for batch in batches {
        let ids = ids(&batch, id_type, path)?;
        let lists = column(&batch, "embedding", path)?
            .as_fixed_size_list_opt()
            .ok_or_else(|| bad(path, "embedding is not a fixed-size list"))?;
        let values = lists.values().as_primitive_opt::<Float32Type>().ok_or_else(|| bad(path, "embedding items"))?;
        let dim = usize::try_from(lists.value_length()).map_err(|_| bad(path, "embedding size"))?;
        let hashes = u64s(&batch, "text_hash", path)?;
        let tokens =
            column(&batch, "tokens", path)?.as_primitive_opt::<UInt32Type>().ok_or_else(|| bad(path, "tokens"))?;
        let langs = dict_strings(&batch, "lang", path)?;
        let created = column(&batch, "created_at", path)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| bad(path, "created_at"))?;
        let sources = dict_strings(&batch, "source", path)?;
        let epochs = u64s(&batch, "epoch", path)?;
        for i in 0..batch.num_rows() {
            let origin = match sources[i].as_deref() {
                Some("backfill") => Origin::Backfill,
                Some("change_stream") => Origin::ChangeStream,
                other => return Err(bad(path, &format!("unknown source {other:?}"))),
            };
            let start = lists.value_offset_at(i).min(values.len());
            let doc = DocMeta {
                id: id(&ids, i, path)?,
                lang: langs[i].clone(),
                created_at_ms: created.is_valid(i).then(|| created.value(i)),
                origin,
            };
            let embedding = values.values()[start..(start + dim).min(values.len())].to_vec();
            let row = EmbeddedRow { doc, embedding, text_hash: hashes.value(i), tokens: tokens.value(i) };
            out.push((epochs.value(i), row));
        }
    }
    Ok(out)
}

/// The id type of `path` and all its batches, projected to `names` (all of which must exist),
/// plus its `stray_id` when it has one and `names` has `id`.
fn read(path: &Path, names: &[&str]) -> Result<(IdType, Vec<RecordBatch>), OutputError> {
    let file = File::open(path).map_err(|e| OutputError::io("open", path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| OutputError::parquet("read", path, e))?;
    let kv = builder.metadata().file_metadata().key_value_metadata();
    let id_type = IdType::of_file(kv, builder.schema()).map_err(|e| bad(path, &e))?;
    let mut roots = Vec::with_capacity(names.len() + 1);
    for name in names {
        let index = builder.schema().index_of(name).map_err(|_| bad(path, &format!("no column {name}")))?;
        roots.push(index);
    }
    if names.contains(&"id") {
        roots.extend(builder.schema().index_of(STRAY_ID).ok());
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder.with_projection(mask).build().map_err(|e| OutputError::parquet("read", path, e))?;
    let batches = reader.map(|batch| batch.map_err(OutputError::from)).collect::<Result<_, _>>()?;
    Ok((id_type, batches))
}

fn ids<'a>(batch: &'a RecordBatch, id_type: IdType, path: &Path) -> Result<IdColumn<'a>, OutputError> {
    IdColumn::new(batch, id_type).map_err(|e| bad(path, &e))
}

/// The id of row `i`: every row of our files has one.
fn id(ids: &IdColumn<'_>, i: usize, path: &Path) -> Result<String, OutputError> {
    ids.get(i).ok_or_else(|| bad(path, &format!("row {i} has no id")))
}

fn bad(path: &Path, reason: &str) -> OutputError {
    OutputError::Schema { path: path.to_path_buf(), reason: reason.to_string() }
}

fn column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a dyn Array, OutputError> {
    batch.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| bad(path, &format!("no column {name}")))
}

/// A required string column: nulls would mean the file is not ours.
fn strings<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a StringArray, OutputError> {
    let col = column(batch, name, path)?;
    match col.as_string_opt::<i32>() {
        Some(s) if s.null_count() == 0 => Ok(s),
        _ => Err(bad(path, &format!("{name} is not a non-null string column"))),
    }
}

fn u64s<'a>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a arrow::array::PrimitiveArray<UInt64Type>, OutputError> {
    let col = column(batch, name, path)?;
    match col.as_primitive_opt::<UInt64Type>() {
        Some(a) if a.null_count() == 0 => Ok(a),
        _ => Err(bad(path, &format!("{name} is not a non-null uint64 column"))),
    }
}

/// A dictionary-encoded string column, decoded.
fn dict_strings(batch: &RecordBatch, name: &str, path: &Path) -> Result<Vec<Option<String>>, OutputError> {
    let col = column(batch, name, path)?;
    let dict = col.as_dictionary_opt::<Int32Type>().ok_or_else(|| bad(path, &format!("{name} is not a dictionary")))?;
    let typed =
        dict.downcast_dict::<StringArray>().ok_or_else(|| bad(path, &format!("{name} has no string values")))?;
    Ok(typed.into_iter().map(|v| v.map(str::to_string)).collect())
}
