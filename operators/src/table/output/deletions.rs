//! The deletion log: the file format of `<out>/_deletions/`, the one function that adds a file to
//! it ([`append_to_log`]), reading it back, and the rule that says which rows a deletion removes.
//!
//! A MongoDB change stream reports deletes; rows already written for the deleted documents stay
//! in their rows files (those are never rewritten in place). Instead each delete is recorded as a
//! row of a Parquet file under [`DELETIONS_DIR`], and whoever rewrites rows files
//! (`tweet-embed consolidate`) drops the deleted rows then. The leading `_` makes pyarrow,
//! pandas, DuckDB and Spark skip the folder when they read the output directory as one dataset.
//!
//! The rule ([`Deletion`], [`DeletionSet::deletes`]): a deletion `(id, d)` removes every row with
//! that `id` whose `epoch` is at most `d`; a row of a later epoch is a re-insert after the delete
//! and stays. A rows file without an `epoch` column (the old Python scripts' shards) loses every
//! row with that id.
//!
//! The `id` column has the dataset's id type, as the rows' has, so readers anti-join on it
//! directly; a deleted stray (a document whose `_id` does not fit, see `super::id_type`) has a
//! null `id` and its extended JSON in `stray_id`. Every id this module hands out or compares is
//! the engine's form, as `super::read` gives it.
//!
//! Every producer (the Parquet writer's seal, the marker's vanished documents, `reconcile`, the
//! compactor's merge of the log) adds its file through [`append_to_log`]: written under a partial
//! name readers skip, fsynced, renamed into place, the directory synced. The producer picks the
//! name (its own sequence, or the checkpoint's through [`free_log_name`]). This module never
//! reads, rewrites or deletes rows files.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use serde::{Deserialize, Serialize};

use super::error::OutputError;
use super::id_type::{IdBuilder, IdColumn, IdType, ID_TYPE_KEY, STRAY_ID};
use super::naming::{FileKind, PartName, DELETIONS_DIR};
use super::schema::{timestamp_utc, writer_properties, ROW_GROUP_ROWS, UTC};

const SUFFIX: &str = ".parquet";

/// One recorded delete of a document.
///
/// The rule: it removes every row whose `id` equals [`Deletion::id`] and whose `epoch` is at
/// most [`Deletion::epoch`]. A row of a later epoch was written after the delete (the document
/// was inserted again) and stays. A row without an epoch (a file with no `epoch` column, such as
/// the old Python scripts' shards) is removed whenever its id matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// The deleted document's `_id` in the engine's form (`crate::mongo::document_id::DocId`), as
    /// ids read back from rows files are.
    pub id: String,
    /// The dataflow epoch that carried the delete.
    pub epoch: u64,
    /// The change event's `clusterTime` in milliseconds since the Unix epoch (its seconds ×
    /// 1000), when known.
    pub cluster_time_ms: Option<i64>,
}

/// The Arrow schema of a deletion file of an `extjson` dataset (and of every dataset before id
/// types): `id` Utf8, `cluster_time` Timestamp(ms, UTC) nullable, `epoch` UInt64.
pub fn deletions_schema() -> SchemaRef {
    deletions_schema_for(IdType::ExtJson)
}

/// The Arrow schema of a deletion file of a dataset of `id_type`: `id` of that type (nullable
/// when it has strays), `cluster_time`, `epoch`, and `stray_id` when it has strays.
pub fn deletions_schema_for(id_type: IdType) -> SchemaRef {
    let mut fields = vec![
        id_type.id_field(true),
        Field::new("cluster_time", timestamp_utc(), true),
        Field::new("epoch", DataType::UInt64, false),
    ];
    if id_type.has_strays() {
        fields.push(IdType::stray_field());
    }
    Arc::new(Schema::new(fields))
}

/// Adds `deletions` to the deletion log of the output directory `out` as the file `name`:
/// written under its partial name (which readers and recovery skip), fsynced, renamed into place
/// and the directory synced, so a reader sees the whole file or none. Ids are of `id_type`;
/// `key_values` go into its metadata (plus the id type's key when they lack it). Returns the
/// file's path relative to `out` and its size in bytes. Errors: the directory cannot be made,
/// the name is taken (see [`free_log_name`]), any write, sync or rename.
pub fn append_to_log(
    out: &Path,
    name: PartName,
    deletions: &[Deletion],
    id_type: IdType,
    key_values: &[(String, String)],
) -> Result<(PathBuf, u64), OutputError> {
    let dir = out.join(DELETIONS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| OutputError::io("create", &dir, e))?;
    let (partial, dest) = (dir.join(name.partial_name()), dir.join(name.file_name()));
    if dest.exists() {
        return Err(OutputError::io("create", &dest, io::Error::from(io::ErrorKind::AlreadyExists)));
    }
    let bytes = write_deletions(&partial, deletions, id_type, key_values)?;
    std::fs::rename(&partial, &dest).map_err(|e| OutputError::io("rename", &partial, e))?;
    super::sync_dir(&dir)?;
    Ok((Path::new(DELETIONS_DIR).join(name.file_name()), bytes))
}

/// The first name of the deletion log of `out` for epochs `epoch_lo..=epoch_hi` of `worker` at
/// sequence `seq` or above that no file (final or partial) holds yet: for producers that take
/// their sequence from the checkpoint, which a writer's own sequence may have reached already.
pub fn free_log_name(out: &Path, epoch_lo: u64, epoch_hi: u64, worker: usize, mut seq: u64) -> PartName {
    let dir = out.join(DELETIONS_DIR);
    loop {
        let name = PartName { epoch_lo, epoch_hi, worker, seq };
        if !dir.join(name.file_name()).exists() && !dir.join(name.partial_name()).exists() {
            return name;
        }
        seq += 1;
    }
}

/// Writes `deletions` as a new Parquet file at `path` (failing if anything exists there) with
/// ids of `id_type`, with `key_values` as its key-value metadata (plus the id type's key when
/// they lack it), fsyncs it and returns its size in bytes. It neither renames the file nor syncs
/// its directory ([`append_to_log`] does). On failure after the file was created, the partial
/// file is removed. Public for tests and benchmarks that lay out a log by hand.
pub fn write_deletions(
    path: &Path,
    deletions: &[Deletion],
    id_type: IdType,
    key_values: &[(String, String)],
) -> Result<u64, OutputError> {
    let file =
        OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| OutputError::io("create", path, e))?;
    let written = encode(file, path, deletions, id_type, key_values);
    if written.is_err() {
        // Best effort: the file is ours (`create_new`), and a partial file helps no one.
        let _ = std::fs::remove_file(path);
    }
    written
}

fn encode(
    file: File,
    path: &Path,
    deletions: &[Deletion],
    id_type: IdType,
    key_values: &[(String, String)],
) -> Result<u64, OutputError> {
    // The rejects settings are the generic ones: zstd, statistics, no dictionary on `id`.
    let props = writer_properties(FileKind::Rejects, ROW_GROUP_ROWS);
    let schema = deletions_schema_for(id_type);
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| OutputError::parquet("start", path, e))?;
    let mut ids = IdBuilder::new(id_type, true);
    for chunk in deletions.chunks(ROW_GROUP_ROWS) {
        for d in chunk {
            // Only a builder that refuses strays refuses anything.
            ids.append(&d.id).map_err(|reason| OutputError::Stray { id: d.id.clone(), reason })?;
        }
        let (id, stray) = ids.finish();
        let times = TimestampMillisecondArray::from_iter(chunk.iter().map(|d| d.cluster_time_ms)).with_timezone(UTC);
        let epochs = UInt64Array::from_iter_values(chunk.iter().map(|d| d.epoch));
        let mut columns: Vec<ArrayRef> = vec![id, Arc::new(times), Arc::new(epochs)];
        columns.extend(stray);
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        writer.write(&batch).map_err(|e| OutputError::parquet("write to", path, e))?;
    }
    for (k, v) in key_values {
        writer.append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
    }
    if !key_values.iter().any(|(k, _)| k == ID_TYPE_KEY) {
        writer.append_key_value_metadata(KeyValue::new(ID_TYPE_KEY.to_string(), id_type.to_string()));
    }
    writer.finish().map_err(|e| OutputError::parquet("finish", path, e))?;
    let file = writer.inner();
    file.sync_all().map_err(|e| OutputError::io("fsync", path, e))?;
    Ok(file.metadata().map_err(|e| OutputError::io("stat", path, e))?.len())
}

/// Every deletion of the deletion file at `path`. A file that is not one (no such columns, other
/// types, null ids or epochs) is an error naming it.
pub fn read_deletions(path: &Path) -> Result<Vec<Deletion>, OutputError> {
    let mut out = Vec::new();
    for_each_deletion(path, |d| out.push(d))?;
    Ok(out)
}

/// Every deletion of every deletion file of the output directory `out`: the `*.parquet` files
/// directly in `out/_deletions/`, in name order, skipping names that start with `.` (files
/// being copied in). A missing `_deletions/` holds none.
pub fn read_deletion_dir(out: &Path) -> Result<Vec<Deletion>, OutputError> {
    let mut all = Vec::new();
    for path in deletion_files(out)? {
        for_each_deletion(&path, |d| all.push(d))?;
    }
    Ok(all)
}

/// The deletion files of the output directory `out` (see [`read_deletion_dir`]).
fn deletion_files(out: &Path) -> Result<Vec<PathBuf>, OutputError> {
    let dir = out.join(DELETIONS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(OutputError::io("list", &dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| OutputError::io("list", &dir, e))?;
        let name = entry.file_name();
        // Names we did not write (not UTF-8) are not deletion files.
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(SUFFIX) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|e| OutputError::io("stat", &path, e))?;
        if meta.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Hands every deletion of the file at `path` to `sink`, one batch in memory at a time.
fn for_each_deletion(path: &Path, mut sink: impl FnMut(Deletion)) -> Result<(), OutputError> {
    let file = File::open(path).map_err(|e| OutputError::io("open", path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| OutputError::parquet("read", path, e))?;
    let kv = builder.metadata().file_metadata().key_value_metadata();
    let id_type = IdType::of_file(kv, builder.schema()).map_err(|e| bad(path, &e))?;
    let expected = deletions_schema_for(id_type);
    for field in expected.fields().iter().filter(|f| f.name() != STRAY_ID) {
        let found = builder
            .schema()
            .field_with_name(field.name())
            .map_err(|_| bad(path, &format!("no column {}", field.name())))?;
        if found.data_type() != field.data_type() {
            let reason = format!("{} is {}, expected {}", field.name(), found.data_type(), field.data_type());
            return Err(bad(path, &reason));
        }
    }
    let reader = builder.build().map_err(|e| OutputError::parquet("read", path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| OutputError::parquet("read", path, e.into()))?;
        let ids = IdColumn::new(&batch, id_type).map_err(|e| bad(path, &e))?;
        let times = column(&batch, "cluster_time", path)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| bad(path, "cluster_time is not a millisecond timestamp"))?;
        let epochs = column(&batch, "epoch", path)?
            .as_primitive_opt::<UInt64Type>()
            .filter(|a| a.null_count() == 0)
            .ok_or_else(|| bad(path, "epoch is not a non-null uint64 column"))?;
        for i in 0..batch.num_rows() {
            let id = ids.get(i).ok_or_else(|| bad(path, &format!("row {i} has no id")))?;
            sink(Deletion { id, epoch: epochs.value(i), cluster_time_ms: times.is_valid(i).then(|| times.value(i)) });
        }
    }
    Ok(())
}

fn column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a dyn Array, OutputError> {
    batch.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| bad(path, &format!("no column {name}")))
}

fn bad(path: &Path, reason: &str) -> OutputError {
    OutputError::Schema { path: path.to_path_buf(), reason: format!("{reason} (as a deletion file)") }
}

/// Deletions indexed for the rule: each deleted id with the highest epoch any of its deletions
/// was carried by (a later deletion of an id subsumes an earlier one). Holds ids only, so it
/// stays small next to the rows it filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletionSet {
    latest: HashMap<String, u64>,
}

impl DeletionSet {
    /// An empty set.
    pub fn new() -> DeletionSet {
        DeletionSet::default()
    }

    /// The deletions of every deletion file of the output directory `out` (see
    /// [`read_deletion_dir`]), read one file and one batch at a time.
    pub fn load(out: &Path) -> Result<DeletionSet, OutputError> {
        let mut set = DeletionSet::new();
        for path in deletion_files(out)? {
            for_each_deletion(&path, |d| set.insert(&d.id, d.epoch))?;
        }
        Ok(set)
    }

    /// Records that `id` was deleted by epoch `epoch`.
    pub fn insert(&mut self, id: &str, epoch: u64) {
        match self.latest.get_mut(id) {
            Some(latest) => *latest = (*latest).max(epoch),
            None => {
                self.latest.insert(id.to_string(), epoch);
            }
        }
    }

    /// Whether a row with `id`, written in epoch `row_epoch` (`None`: the file has no epoch), is
    /// deleted: some deletion of `id` has an epoch at least `row_epoch`, or the row has no epoch.
    pub fn deletes(&self, id: &str, row_epoch: Option<u64>) -> bool {
        match (self.latest.get(id), row_epoch) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(deleted), Some(row)) => row <= *deleted,
        }
    }

    /// Forgets every id whose latest deletion is of an epoch below `epoch`: they can match no
    /// row of an epoch `epoch` or later.
    pub fn forget_below(&mut self, epoch: u64) {
        self.latest.retain(|_, deleted| *deleted >= epoch);
    }

    /// The highest epoch `id` was deleted by, if it was.
    pub fn deleted_epoch(&self, id: &str) -> Option<u64> {
        self.latest.get(id).copied()
    }

    /// Deleted ids.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether no id is deleted.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

impl<'a> FromIterator<&'a Deletion> for DeletionSet {
    fn from_iter<I: IntoIterator<Item = &'a Deletion>>(deletions: I) -> DeletionSet {
        let mut set = DeletionSet::new();
        for d in deletions {
            set.insert(&d.id, d.epoch);
        }
        set
    }
}

impl FromIterator<Deletion> for DeletionSet {
    fn from_iter<I: IntoIterator<Item = Deletion>>(deletions: I) -> DeletionSet {
        let mut set = DeletionSet::new();
        for d in deletions {
            set.insert(&d.id, d.epoch);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn del(id: &str, epoch: u64, cluster_time_ms: Option<i64>) -> Deletion {
        Deletion { id: id.to_string(), epoch, cluster_time_ms }
    }

    #[test]
    fn a_file_round_trips_with_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let deletions = vec![
            del("65a000000000000000000001", 7, Some(1_700_000_000_000)),
            del("42", 9, None),
            del("", 0, Some(-1000)),
        ];
        let kv = [("tweet_embed.dataset".to_string(), "x".to_string())];
        let bytes = write_deletions(&path, &deletions, IdType::ExtJson, &kv).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        assert_eq!(read_deletions(&path).unwrap(), deletions);

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.schema().fields(), deletions_schema().fields());
        let meta = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
        assert!(meta.iter().any(|kv| kv.key == "tweet_embed.dataset" && kv.value.as_deref() == Some("x")), "{meta:?}");
        let column = reader.metadata().row_group(0).column(0);
        assert!(matches!(column.compression(), parquet::basic::Compression::ZSTD(_)), "{:?}", column.compression());
    }

    #[test]
    fn ids_take_the_datasets_type_and_strays_their_own_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let (int, small, stray) = (r#"{"$numberLong":"17"}"#, r#"{"$numberInt":"3"}"#, r#"{"$numberDouble":"1.5"}"#);
        let deletions = vec![del(int, 4, None), del(small, 5, None), del(stray, 6, Some(1))];
        write_deletions(&path, &deletions, IdType::Int64, &[]).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.schema().fields(), deletions_schema_for(IdType::Int64).fields());
        let meta = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
        assert!(meta.iter().any(|kv| kv.key == ID_TYPE_KEY && kv.value.as_deref() == Some("int64")), "{meta:?}");
        let back = read_deletions(&path).unwrap();
        let ids: Vec<&str> = back.iter().map(|d| d.id.as_str()).collect();
        // The Int32 `_id` reads back as Int64, as rows do.
        assert_eq!(ids, [int, r#"{"$numberLong":"3"}"#, stray]);
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        std::fs::write(&path, b"old").unwrap();
        let err = write_deletions(&path, &[del("a", 1, None)], IdType::ExtJson, &[]).unwrap_err();
        assert!(err.to_string().contains("d.parquet"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn the_rule_compares_epochs_and_removes_rows_without_one() {
        let set: DeletionSet = [del("a", 5, None), del("a", 3, None), del("b", 0, None)].iter().collect();
        assert_eq!((set.len(), set.is_empty()), (2, false));
        assert_eq!(set.deleted_epoch("a"), Some(5), "the later deletion of an id counts");
        assert!(set.deletes("a", Some(5)) && set.deletes("a", Some(1)) && set.deletes("a", None));
        assert!(!set.deletes("a", Some(6)), "a re-insert after the delete stays");
        assert!(set.deletes("b", Some(0)) && !set.deletes("b", Some(1)));
        assert!(!set.deletes("c", None) && !set.deletes("c", Some(0)));
        assert!(!set.deletes("A", Some(0)), "ids compare exactly");
        assert!(DeletionSet::new().is_empty());
    }

    #[test]
    fn a_missing_directory_holds_no_deletions() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_deletion_dir(dir.path()).unwrap(), []);
        assert!(DeletionSet::load(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_directory_is_read_in_name_order_skipping_hidden_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(DELETIONS_DIR);
        std::fs::create_dir(&d).unwrap();
        write_deletions(&d.join("b.parquet"), &[del("x", 2, None)], IdType::ExtJson, &[]).unwrap();
        write_deletions(&d.join("a.parquet"), &[del("x", 1, None), del("y", 1, None)], IdType::ExtJson, &[]).unwrap();
        std::fs::write(d.join(".c.parquet.partial"), b"half").unwrap();
        std::fs::write(d.join(".d.parquet"), b"hidden").unwrap();
        std::fs::write(d.join("notes.txt"), b"text").unwrap();
        std::fs::create_dir(d.join("sub.parquet")).unwrap();
        let all = read_deletion_dir(dir.path()).unwrap();
        assert_eq!(all, [del("x", 1, None), del("y", 1, None), del("x", 2, None)]);
        let set = DeletionSet::load(dir.path()).unwrap();
        assert_eq!((set.len(), set.deleted_epoch("x")), (2, Some(2)));
    }

    #[test]
    fn foreign_and_corrupt_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(DELETIONS_DIR);
        std::fs::create_dir(&d).unwrap();
        let corrupt = d.join("corrupt.parquet");
        std::fs::write(&corrupt, b"PAR1 not really").unwrap();
        let err = read_deletion_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains(&corrupt.display().to_string()), "{err}");
        std::fs::remove_file(&corrupt).unwrap();

        // A rows file put there by mistake: no `cluster_time`.
        let foreign = d.join("rows.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("epoch", DataType::UInt64, false),
        ]));
        let cols: Vec<arrow::array::ArrayRef> =
            vec![Arc::new(StringArray::from(vec!["a"])), Arc::new(UInt64Array::from(vec![1u64]))];
        let mut w = ArrowWriter::try_new(File::create(&foreign).unwrap(), schema.clone(), None).unwrap();
        w.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
        w.close().unwrap();
        for err in [read_deletions(&foreign).unwrap_err(), DeletionSet::load(dir.path()).unwrap_err()] {
            let msg = err.to_string();
            assert!(msg.contains(&foreign.display().to_string()) && msg.contains("cluster_time"), "{msg}");
        }

        // `epoch` of another type.
        let typed = d.join("typed.parquet");
        std::fs::remove_file(&foreign).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("cluster_time", timestamp_utc(), true),
            Field::new("epoch", DataType::Int64, false),
        ]));
        let cols: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a"])),
            Arc::new(TimestampMillisecondArray::from(vec![None::<i64>]).with_timezone(UTC)),
            Arc::new(arrow::array::Int64Array::from(vec![1i64])),
        ];
        let mut w = ArrowWriter::try_new(File::create(&typed).unwrap(), schema.clone(), None).unwrap();
        w.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
        w.close().unwrap();
        let msg = read_deletions(&typed).unwrap_err().to_string();
        assert!(msg.contains("typed.parquet") && msg.contains("epoch is Int64"), "{msg}");
    }
}
