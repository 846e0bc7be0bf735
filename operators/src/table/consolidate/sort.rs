//! External merge sort by id for `--sort-by id` and `--dedup-by id`, in memory bounded by its
//! buffer whatever the input size: rows are buffered up to a byte budget, sorted, and spilled as
//! a run (an uncompressed Parquet file in the scratch directory); at the end the runs are merged
//! k ways (in passes of at most [`FAN_IN`] runs), each run read one small row group at a time.
//!
//! Order is id order (an Int64 `id` by value, a Utf8 one in byte order), ties broken by input
//! order (files in path order, rows in file order), latest first; dedup keeps that first row of
//! each id, i.e. the one read last.
//! It owns its run files and removes each once merged; it never touches inputs or final files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchReader, UInt64Array};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt64Type};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

/// Runs merged at once: bounds the merge's memory at `FAN_IN` row groups of a run.
pub const FAN_IN: usize = 32;
/// Most rows of a batch the merge hands on.
const MERGE_BATCH_ROWS: usize = 1024;
/// The spilled column holding a row's position in the input.
const SEQ: &str = "__consolidate_seq";
/// Target bytes of a run's row group, which is what the merge holds per run.
const RUN_GROUP_BYTES: usize = 1 << 20;

/// An id as the sort compares it: the layout's `id` is all Int64 or all Utf8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    Int(i64),
    Str(&'a str),
}

/// A [`Key`] kept across batches (dedup's last id).
#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnedKey {
    Int(i64),
    Str(String),
}

impl OwnedKey {
    /// Becomes `key`, reusing its string's buffer: dedup keeps one per distinct id.
    fn set(&mut self, key: Key<'_>) {
        match (&mut *self, key) {
            (OwnedKey::Str(a), Key::Str(b)) => {
                a.clear();
                a.push_str(b);
            }
            (_, Key::Str(b)) => *self = OwnedKey::Str(b.to_string()),
            (_, Key::Int(n)) => *self = OwnedKey::Int(n),
        }
    }

    fn is(&self, key: Key<'_>) -> bool {
        match (self, key) {
            (OwnedKey::Int(a), Key::Int(b)) => *a == b,
            (OwnedKey::Str(a), Key::Str(b)) => a == b,
            _ => false,
        }
    }
}

/// The id of row `row` of `batch`, whose first column is the Int64 or Utf8 `id`.
fn key_at(batch: &RecordBatch, row: usize) -> Key<'_> {
    let col = batch.column(0);
    match col.as_primitive_opt::<Int64Type>() {
        Some(ints) => Key::Int(ints.value(row)),
        None => Key::Str(col.as_string::<i32>().value(row)),
    }
}

/// Rows handed to the sink and duplicates dropped by [`Sorter::finish`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Merged {
    /// Rows handed to the sink.
    pub rows: u64,
    /// Rows dropped as duplicates of an id (zero without dedup).
    pub duplicates: u64,
}

/// Buffers, sorts and spills batches of one schema, then merges them in id order.
pub struct Sorter {
    out_schema: SchemaRef,
    spill_schema: SchemaRef,
    dir: PathBuf,
    budget: usize,
    run_rows: usize,
    buffer: Vec<RecordBatch>,
    buffered: usize,
    next_seq: u64,
    runs: Vec<PathBuf>,
    run_count: usize,
}

impl Sorter {
    /// A sorter of batches of `schema` (whose first column is the Int64 or Utf8 `id`) that buffers about
    /// `budget` bytes before spilling a run into `dir`; `row_bytes` estimates one row's size.
    pub fn new(schema: SchemaRef, dir: &Path, budget: usize, row_bytes: usize) -> Sorter {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(SEQ, DataType::UInt64, false));
        Sorter {
            out_schema: schema,
            spill_schema: Arc::new(Schema::new(fields)),
            dir: dir.to_path_buf(),
            budget: budget.max(1),
            run_rows: (RUN_GROUP_BYTES / row_bytes.max(1)).max(64),
            buffer: Vec::new(),
            buffered: 0,
            next_seq: 0,
            runs: Vec::new(),
            run_count: 0,
        }
    }

    /// Adds a batch (rows in input order), spilling a run when the buffer is full.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows() as u64;
        let seq: ArrayRef = Arc::new(UInt64Array::from_iter_values(self.next_seq..self.next_seq + n));
        self.next_seq += n;
        let mut columns = batch.columns().to_vec();
        columns.push(seq);
        let batch = RecordBatch::try_new(self.spill_schema.clone(), columns).context("sort buffer")?;
        self.buffered += batch.get_array_memory_size();
        self.buffer.push(batch);
        if self.buffered >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts the buffer into a new run file.
    fn spill(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = &self.buffer;
        let mut order: Vec<(usize, usize)> =
            buffer.iter().enumerate().flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r))).collect();
        // Buffer position is input order, so "latest first" among equal ids is descending position.
        order.sort_unstable_by(|a, b| key_at(&buffer[a.0], a.1).cmp(&key_at(&buffer[b.0], b.1)).then(b.cmp(a)));
        let mut run = self.start_run()?;
        let refs: Vec<&RecordBatch> = self.buffer.iter().collect();
        for chunk in order.chunks(self.run_rows) {
            let sorted = interleave_record_batch(&refs, chunk).context("sorting a run")?;
            run.write(&sorted)?;
        }
        self.runs.push(run.finish()?);
        self.buffer.clear();
        self.buffered = 0;
        Ok(())
    }

    fn start_run(&mut self) -> Result<RunWriter> {
        self.run_count += 1;
        let path = self.dir.join(format!("run-{:05}.spill.parquet", self.run_count));
        RunWriter::create(path, self.spill_schema.clone(), self.run_rows)
    }

    /// Merges everything pushed, in id order, into `sink` (batches of the input schema), dropping
    /// all but the latest row of each id when `dedup`; `merged` counts rows as they go.
    pub fn finish(
        mut self,
        dedup: bool,
        merged: &AtomicU64,
        mut sink: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<Merged> {
        self.spill()?;
        // Earlier passes merge the oldest runs into one, until one pass can take them all.
        while self.runs.len() > FAN_IN {
            let group: Vec<PathBuf> = self.runs.drain(..FAN_IN).collect();
            let mut run = self.start_run()?;
            merge(&group, self.run_rows, false, &AtomicU64::new(0), |b| run.write(b))?;
            self.runs.push(run.finish()?);
            remove_runs(&group)?;
        }
        let out_columns: Vec<usize> = (0..self.out_schema.fields().len()).collect();
        let runs = std::mem::take(&mut self.runs);
        let result = merge(&runs, self.run_rows, dedup, merged, |b| {
            let projected = b.project(&out_columns).context("dropping the sequence column")?;
            sink(&projected)
        })?;
        remove_runs(&runs)?;
        Ok(result)
    }
}

fn remove_runs(runs: &[PathBuf]) -> Result<()> {
    for r in runs {
        std::fs::remove_file(r).with_context(|| format!("cannot remove sort run {}", r.display()))?;
    }
    Ok(())
}

/// One run being written.
struct RunWriter {
    writer: ArrowWriter<File>,
    path: PathBuf,
}

impl RunWriter {
    fn create(path: PathBuf, schema: SchemaRef, rows: usize) -> Result<RunWriter> {
        // Runs live minutes and are read once: no compression, dictionaries or statistics.
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_max_row_group_row_count(Some(rows))
            .build();
        let file = File::create(&path).with_context(|| format!("cannot create sort run {}", path.display()))?;
        let writer = ArrowWriter::try_new(file, schema, Some(props))
            .with_context(|| format!("cannot start sort run {}", path.display()))?;
        Ok(RunWriter { writer, path })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).with_context(|| format!("cannot write sort run {}", self.path.display()))
    }

    fn finish(self) -> Result<PathBuf> {
        self.writer.close().with_context(|| format!("cannot finish sort run {}", self.path.display()))?;
        Ok(self.path)
    }
}

/// A run being read: its current batch and row.
struct Cursor {
    reader: ParquetRecordBatchReader,
    path: PathBuf,
    batch: RecordBatch,
    row: usize,
    /// Index of `batch` in the merge's pending batches, once a row of it was taken.
    slot: Option<usize>,
}

impl Cursor {
    fn open(path: &Path, rows: usize) -> Result<Option<Cursor>> {
        let file = File::open(path).with_context(|| format!("cannot open sort run {}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(rows).build())
            .with_context(|| format!("cannot read sort run {}", path.display()))?;
        let empty = RecordBatch::new_empty(reader.schema());
        let mut c = Cursor { reader, path: path.to_path_buf(), batch: empty, row: 0, slot: None };
        Ok(c.load()?.then_some(c))
    }

    /// Loads the next non-empty batch; false at the end of the run.
    fn load(&mut self) -> Result<bool> {
        for next in self.reader.by_ref() {
            let batch = next.with_context(|| format!("cannot read sort run {}", self.path.display()))?;
            if batch.num_rows() > 0 {
                (self.batch, self.row, self.slot) = (batch, 0, None);
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn id(&self) -> Key<'_> {
        key_at(&self.batch, self.row)
    }

    fn seq(&self) -> u64 {
        let seq = self.batch.column(self.batch.num_columns() - 1);
        seq.as_primitive::<UInt64Type>().value(self.row)
    }
}

/// Whether the row under `a` comes before the row under `b`: id ascending, latest first.
fn before(a: &Cursor, b: &Cursor) -> bool {
    a.id().cmp(&b.id()).then_with(|| b.seq().cmp(&a.seq())).is_lt()
}

/// Merges `runs` into `sink` in batches of about `rows` rows of the spill schema.
fn merge(
    runs: &[PathBuf],
    rows: usize,
    dedup: bool,
    merged: &AtomicU64,
    mut sink: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<Merged> {
    let mut cursors = Vec::with_capacity(runs.len());
    for r in runs {
        cursors.extend(Cursor::open(r, rows)?);
    }
    let mut pending: Vec<RecordBatch> = Vec::new();
    // Output batches are smaller than a run's row group so the writer can roll files finely.
    let out_rows = rows.min(MERGE_BATCH_ROWS);
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(out_rows);
    let (mut last_id, mut any) = (OwnedKey::Str(String::new()), false);
    let mut result = Merged::default();
    // A linear scan for the smallest cursor: at most FAN_IN string comparisons per row, with
    // no allocation, which is cheap next to decoding the row.
    while !cursors.is_empty() {
        let mut best = 0;
        for i in 1..cursors.len() {
            if before(&cursors[i], &cursors[best]) {
                best = i;
            }
        }
        let c = &mut cursors[best];
        if dedup && any && last_id.is(c.id()) {
            result.duplicates += 1;
        } else {
            if dedup {
                last_id.set(c.id());
                any = true;
            }
            let slot = *c.slot.get_or_insert_with(|| {
                pending.push(c.batch.clone());
                pending.len() - 1
            });
            picks.push((slot, c.row));
            result.rows += 1;
        }
        c.row += 1;
        if c.row == c.batch.num_rows() && !c.load()? {
            cursors.swap_remove(best);
        }
        if picks.len() >= out_rows {
            flush(&mut pending, &mut picks, &mut cursors, &mut sink)?;
            merged.store(result.rows + result.duplicates, Ordering::Relaxed);
        }
    }
    flush(&mut pending, &mut picks, &mut cursors, &mut sink)?;
    merged.store(result.rows + result.duplicates, Ordering::Relaxed);
    Ok(result)
}

/// Hands the picked rows to `sink` as one batch and forgets the batches they came from.
fn flush(
    pending: &mut Vec<RecordBatch>,
    picks: &mut Vec<(usize, usize)>,
    cursors: &mut [Cursor],
    sink: &mut impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    if !picks.is_empty() {
        let refs: Vec<&RecordBatch> = pending.iter().collect();
        let batch = interleave_record_batch(&refs, picks).context("merging sort runs")?;
        sink(&batch)?;
    }
    picks.clear();
    pending.clear();
    for c in cursors.iter_mut() {
        c.slot = None;
    }
    Ok(())
}
