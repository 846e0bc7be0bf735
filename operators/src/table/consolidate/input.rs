//! The input side of `consolidate`: which files it reads, what each file's columns mean, and
//! turning each file's batches into batches of the one output schema. It reads footers and data;
//! it never writes, moves or deletes anything.
//!
//! Mapping rules (README, "consolidate"):
//! - Files: every `*.parquet` under the input directory, recursively, in path order; a file or
//!   directory whose name starts with `_` or `.` is skipped with everything under it (the dataset
//!   convention of pyarrow, Spark and pandas, so `_rejects/` and temporary files stay out). The
//!   input's `_deletions/` is not rows either: the run reads it as deletions to apply (`mod.rs`).
//! - `id`: the first of the columns `id`, `_id`, `tweet_id` the file has; a string (any
//!   encoding) or an integer. When every file's is an Int64 (our `int64` datasets, shards of
//!   numeric tweet ids) the output's `id` is Int64; otherwise Utf8, integers written as their
//!   decimal string. No nulls.
//! - `embedding`: the first of `embedding`, `vector`; a list, large list or fixed-size list of
//!   float32 or float64 (float64 is rounded to float32, our output type). No null vectors or
//!   items; every vector of every file must have the same length.
//! - The other columns of DESIGN.md's schema (`model`, `text_hash`, `tokens`, `lang`,
//!   `created_at`, `source`, `epoch`) are carried when a file has them under that name with our
//!   type (strings may be plain or dictionary; timestamps any unit with a time zone); such a
//!   column is in the output when at least one file carries it, null for rows of files that do
//!   not. Any other column is dropped, with a warning naming it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::table::output::schema::{embedding_item, rows_schema};
use crate::table::output::{IdType, ID_TYPE_KEY};
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{new_null_array, Array, ArrayRef, AsArray, FixedSizeListArray, RecordBatch};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

/// Names tried, in order, for the id column.
pub const ID_COLUMNS: [&str; 3] = ["id", "_id", "tweet_id"];
/// Names tried, in order, for the embedding column.
pub const EMBEDDING_COLUMNS: [&str; 2] = ["embedding", "vector"];

/// One input file as its footer describes it.
#[derive(Debug)]
pub struct InputFile {
    /// Where it is.
    pub path: PathBuf,
    /// Rows, from the footer.
    pub rows: u64,
    /// Size on disk.
    pub bytes: u64,
    /// The file's column holding ids.
    id_column: String,
    /// That column's type.
    id_data_type: DataType,
    /// Whether that column is Int64.
    id_int64: bool,
    /// The id type our own files record in their metadata (`None`: not ours, or written before
    /// id types), which says how a recorded deletion names their rows.
    pub id_type: Option<IdType>,
    /// The file's column holding vectors.
    embedding_column: String,
    /// Output column name → the file's type for it, for the metadata columns this file carries.
    carried: BTreeMap<String, Field>,
    /// Columns neither mapped nor carried, which the output does not have.
    pub dropped: Vec<String>,
    /// The dataset identity in its key-value metadata (`tweet_embed.identity`, JSON); `None` for
    /// files written before identities were recorded and for other tools' files.
    pub identity: Option<String>,
}

/// The output schema every input is mapped onto, decided from all footers before any output.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Vector dimension.
    pub dim: usize,
    /// The output schema: `id`, `embedding`, then DESIGN.md's other columns that some file has.
    pub schema: SchemaRef,
}

/// Every `*.parquet` file under `dir` in path order, skipping `_`- and `.`-prefixed names.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read --input {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("--input {} is not a directory", dir.display());
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", d.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let kind = entry.file_type().with_context(|| format!("cannot stat {}", entry.path().display()))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if name.ends_with(".parquet") {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

impl InputFile {
    /// Reads `path`'s footer and maps its columns; `dim` is the vector length if the footer says
    /// it (fixed-size list) or the first vector does, `None` for a file without rows.
    pub fn open(path: &Path) -> Result<(InputFile, Option<usize>)> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let bytes = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
        let schema = builder.schema().clone();
        let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let identity = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == "tweet_embed.identity"))
            .and_then(|kv| kv.value.clone());
        let (id_column, id_data_type) = pick(&schema, &ID_COLUMNS)
            .ok_or_else(|| anyhow!("{}: no id column (looked for {})", path.display(), ID_COLUMNS.join(", ")))?;
        if !id_type_ok(&id_data_type) {
            bail!("{}: id column `{id_column}` is {id_data_type}; a string or integer is needed", path.display());
        }
        let id_type = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .find(|kv| kv.key == ID_TYPE_KEY)
            .and_then(|kv| kv.value.as_deref())
            .map(|v| v.parse::<IdType>().map_err(|e| anyhow!("{}: {ID_TYPE_KEY}: {e}", path.display())))
            .transpose()?;
        let id_int64 = id_data_type == DataType::Int64;
        let (embedding_column, emb_type) = pick(&schema, &EMBEDDING_COLUMNS).ok_or_else(|| {
            anyhow!("{}: no embedding column (looked for {})", path.display(), EMBEDDING_COLUMNS.join(", "))
        })?;
        let fixed_dim = embedding_dim(&emb_type).map_err(|what| {
            anyhow!(
                "{}: embedding column `{embedding_column}` is {what}; a list of float32 or float64 is needed",
                path.display()
            )
        })?;
        let ours = rows_schema(1);
        let (mut carried, mut dropped) = (BTreeMap::new(), Vec::new());
        for field in schema.fields() {
            let name = field.name();
            if *name == id_column || *name == embedding_column {
                continue;
            }
            match ours.field_with_name(name) {
                Ok(target) if name != "id" && name != "embedding" && carries(field.data_type(), target.data_type()) => {
                    carried.insert(name.clone(), field.as_ref().clone());
                }
                _ => dropped.push(format!("{name} ({})", field.data_type())),
            }
        }
        let input = InputFile {
            path: path.to_path_buf(),
            rows,
            bytes,
            id_column,
            id_data_type,
            id_int64,
            id_type,
            embedding_column,
            carried,
            dropped,
            identity,
        };
        let dim = match fixed_dim {
            Some(d) => Some(d),
            None if rows == 0 => None,
            None => input.first_vector_len(builder)?,
        };
        Ok((input, dim))
    }

    /// The type of the file's id column.
    pub fn id_data_type(&self) -> &DataType {
        &self.id_data_type
    }

    fn first_vector_len(&self, builder: ParquetRecordBatchReaderBuilder<File>) -> Result<Option<usize>> {
        let mask = mask_of(&builder, &[self.embedding_column.as_str()]);
        let mut reader = builder
            .with_projection(mask)
            .with_limit(1)
            .with_batch_size(1)
            .build()
            .with_context(|| format!("{}: cannot read", self.path.display()))?;
        let Some(batch) = reader.next() else { return Ok(None) };
        let batch = batch.with_context(|| format!("{}: cannot read the first vector", self.path.display()))?;
        let col = batch.column(0);
        let len = match col.data_type() {
            DataType::List(_) => col.as_list::<i32>().value_length(0) as usize,
            DataType::LargeList(_) => col.as_list::<i64>().value_length(0) as usize,
            _ => return Ok(None),
        };
        Ok(Some(len))
    }

    /// A reader of this file's batches of about `batch_rows` rows, one row group at a time,
    /// reading only the columns it maps.
    pub fn reader(&self, batch_rows: usize) -> Result<ParquetRecordBatchReader> {
        let file = File::open(&self.path).with_context(|| format!("cannot open {}", self.path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{}: not a readable Parquet file", self.path.display()))?;
        let mut names = vec![self.id_column.as_str(), self.embedding_column.as_str()];
        names.extend(self.carried.keys().map(String::as_str));
        let mask = mask_of(&builder, &names);
        builder
            .with_projection(mask)
            .with_batch_size(batch_rows.max(1))
            .build()
            .with_context(|| format!("{}: cannot read", self.path.display()))
    }

    /// `batch` (read from this file) as a batch of `layout`'s schema; `first_row` is the index
    /// in the file of its first row, for error messages.
    pub fn map(&self, batch: &RecordBatch, layout: &Layout, first_row: u64) -> Result<RecordBatch> {
        let path = self.path.display();
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| anyhow!("{path}: column `{name}` vanished while reading"))
        };
        let strict = CastOptions { safe: false, ..CastOptions::default() };
        let ids = column(&self.id_column)?;
        if let Some(i) = first_null(ids.as_ref()) {
            bail!("{path}: row {} has a null id", first_row + i as u64);
        }
        let ids = cast_with_options(ids, layout.schema.field(0).data_type(), &strict)
            .with_context(|| format!("{path}: ids"))?;
        let vectors = to_vectors(column(&self.embedding_column)?.as_ref(), layout.dim)
            .map_err(|(i, what)| anyhow!("{path}: row {}: {what}", first_row + i as u64))?;
        let mut columns: Vec<ArrayRef> = vec![ids, Arc::new(vectors)];
        for field in layout.schema.fields().iter().skip(2) {
            let array = match self.carried.get(field.name()) {
                Some(_) => cast_with_options(column(field.name())?, field.data_type(), &strict)
                    .with_context(|| format!("{path}: column `{}`", field.name()))?,
                None => new_null_array(field.data_type(), batch.num_rows()),
            };
            columns.push(array);
        }
        RecordBatch::try_new(layout.schema.clone(), columns).with_context(|| format!("{path}: rows {first_row}.."))
    }
}

impl Layout {
    /// The output schema for `files` of vectors of `dim`: `id` (Int64 when every file's is,
    /// else Utf8), `embedding`, and each other column of DESIGN.md that some file carries,
    /// nullable when ours is or any file lacks it or has it nullable. Only our own files thus
    /// give exactly DESIGN.md's schema.
    pub fn decide(files: &[&InputFile], dim: usize) -> Result<Layout> {
        let dim_i32 = i32::try_from(dim).ok().filter(|d| *d > 0).ok_or_else(|| anyhow!("vector dimension {dim}"))?;
        let ours = rows_schema(dim_i32);
        let id_type = if files.iter().all(|f| f.id_int64) { DataType::Int64 } else { DataType::Utf8 };
        let mut fields = vec![Field::new("id", id_type, false), ours.field(1).clone()];
        for target in ours.fields().iter().skip(2) {
            let name = target.name();
            let having = files.iter().filter(|f| f.carried.contains_key(name)).count();
            if having == 0 {
                continue;
            }
            let nullable = target.is_nullable()
                || having < files.len()
                || files.iter().any(|f| f.carried.get(name).is_some_and(Field::is_nullable));
            fields.push(target.as_ref().clone().with_nullable(nullable));
        }
        Ok(Layout { dim, schema: Arc::new(Schema::new(fields)) })
    }
}

/// The first of `names` that `schema` has, with its type.
fn pick(schema: &Schema, names: &[&str]) -> Option<(String, DataType)> {
    names.iter().find_map(|n| schema.field_with_name(n).ok().map(|f| (n.to_string(), f.data_type().clone())))
}

fn mask_of(builder: &ParquetRecordBatchReaderBuilder<File>, names: &[&str]) -> ProjectionMask {
    let roots = names.iter().filter_map(|n| builder.schema().index_of(n).ok());
    ProjectionMask::roots(builder.parquet_schema(), roots)
}

fn id_type_ok(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, v) => id_type_ok(v),
        t => matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) || t.is_integer(),
    }
}

/// `Ok(Some(n))` for a fixed-size list of `n` floats, `Ok(None)` for a variable list of floats,
/// `Err(what it is)` otherwise.
fn embedding_dim(t: &DataType) -> Result<Option<usize>, String> {
    let float = |f: &Field| matches!(f.data_type(), DataType::Float32 | DataType::Float64);
    match t {
        DataType::FixedSizeList(f, n) if float(f) && *n > 0 => Ok(Some(*n as usize)),
        DataType::List(f) | DataType::LargeList(f) if float(f) => Ok(None),
        other => Err(other.to_string()),
    }
}

/// Whether a file's column of type `source` is carried into our column of type `target`.
fn carries(source: &DataType, target: &DataType) -> bool {
    let stringy = |t: &DataType| match t {
        DataType::Dictionary(_, v) => matches!(**v, DataType::Utf8 | DataType::LargeUtf8),
        t => matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
    };
    match target {
        DataType::Dictionary(_, _) => stringy(source),
        DataType::Timestamp(_, _) => matches!(source, DataType::Timestamp(_, Some(_))),
        t => source == t,
    }
}

fn first_null(a: &dyn Array) -> Option<usize> {
    a.logical_nulls().and_then(|n| (0..a.len()).find(|&i| n.is_null(i)))
}

/// Vectors of any accepted list type as our `FixedSizeList<Float32, dim>`; `Err((row, what))`
/// for a null vector, a null item or a vector of another length.
fn to_vectors(col: &dyn Array, dim: usize) -> Result<FixedSizeListArray, (usize, String)> {
    if let Some(i) = first_null(col) {
        return Err((i, "the vector is null".into()));
    }
    let values = match col.data_type() {
        DataType::FixedSizeList(_, n) => {
            if *n as usize != dim {
                return Err((0, format!("vectors have {n} dimensions, expected {dim}")));
            }
            col.as_fixed_size_list().values().clone()
        }
        DataType::List(_) => list_values(col.as_list::<i32>().value_offsets(), col.as_list::<i32>().values(), dim)?,
        DataType::LargeList(_) => {
            list_values(col.as_list::<i64>().value_offsets(), col.as_list::<i64>().values(), dim)?
        }
        other => return Err((0, format!("embedding type {other} changed while reading"))),
    };
    let values = cast_with_options(&values, &DataType::Float32, &CastOptions { safe: false, ..Default::default() })
        .map_err(|e| (0, format!("vector values: {e}")))?;
    if values.null_count() > 0 {
        let i = first_null(values.as_ref()).unwrap_or(0) / dim.max(1);
        return Err((i, "the vector has a null item".into()));
    }
    FixedSizeListArray::try_new(embedding_item(), dim as i32, values, None).map_err(|e| (0, e.to_string()))
}

/// The items of a variable list whose every element must have `dim` values.
fn list_values<O: arrow::array::OffsetSizeTrait>(
    offsets: &[O],
    values: &ArrayRef,
    dim: usize,
) -> Result<ArrayRef, (usize, String)> {
    for (i, w) in offsets.windows(2).enumerate() {
        let len = (w[1] - w[0]).as_usize();
        if len != dim {
            return Err((i, format!("the vector has {len} values, expected {dim}")));
        }
    }
    let (start, end) = match (offsets.first(), offsets.last()) {
        (Some(s), Some(e)) => (s.as_usize(), e.as_usize()),
        _ => (0, 0),
    };
    Ok(values.slice(start, end - start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, ListArray};
    use arrow::buffer::OffsetBuffer;

    #[test]
    fn accepted_embedding_and_id_types() {
        let f32_item = Arc::new(Field::new("item", DataType::Float32, true));
        let f64_item = Arc::new(Field::new("item", DataType::Float64, true));
        assert_eq!(embedding_dim(&DataType::FixedSizeList(f32_item.clone(), 768)), Ok(Some(768)));
        assert_eq!(embedding_dim(&DataType::List(f64_item.clone())), Ok(None));
        assert_eq!(embedding_dim(&DataType::LargeList(f32_item)), Ok(None));
        assert!(embedding_dim(&DataType::Utf8).is_err());
        assert!(embedding_dim(&DataType::List(Arc::new(Field::new("item", DataType::Int32, true)))).is_err());
        assert!(id_type_ok(&DataType::Utf8) && id_type_ok(&DataType::Int64) && id_type_ok(&DataType::UInt32));
        assert!(!id_type_ok(&DataType::Float64) && !id_type_ok(&DataType::Binary));
    }

    #[test]
    fn carried_columns_need_our_type() {
        let dict = rows_schema(1).field_with_name("lang").map(|f| f.data_type().clone()).unwrap();
        assert!(carries(&DataType::Utf8, &dict));
        assert!(carries(&DataType::UInt64, &DataType::UInt64));
        assert!(!carries(&DataType::Int64, &DataType::UInt64));
        let ts = rows_schema(1).field_with_name("created_at").map(|f| f.data_type().clone()).unwrap();
        assert!(carries(&DataType::Timestamp(arrow::datatypes::TimeUnit::Second, Some("UTC".into())), &ts));
        assert!(!carries(&DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None), &ts));
    }

    #[test]
    fn vectors_are_rounded_to_f32_and_checked_for_length() {
        let item = Arc::new(Field::new("item", DataType::Float64, true));
        let values = Arc::new(Float64Array::from(vec![0.1, 0.2, 0.3, 0.4, 0.5]));
        let ok = ListArray::new(item.clone(), OffsetBuffer::from_lengths([2, 2]), values.clone(), None);
        let v = to_vectors(&ok, 2).unwrap();
        assert_eq!(v.value_length(), 2);
        assert_eq!(v.values().as_primitive::<arrow::datatypes::Float32Type>().values(), &[0.1f32, 0.2, 0.3, 0.4]);
        let ragged = ListArray::new(item, OffsetBuffer::from_lengths([2, 3]), values, None);
        let (row, what) = to_vectors(&ragged, 2).unwrap_err();
        assert_eq!((row, what.as_str()), (1, "the vector has 3 values, expected 2"));
    }
}
