//! `tweet-embed consolidate`: merges any number of small Parquet files of vectors (ours, and the
//! old Python scripts' shards) into large files, streaming, in bounded memory, verified and
//! atomic. The library entry point is [`run`]; the CLI only parses [`ConsolidateArgs`].
//!
//! A run: list the inputs and read every footer, deciding the output schema and rejecting any
//! incompatible file before anything is created in `--output` ([`input`]); stream the rows, one
//! row group at a time, into large files under temporary names (`output`), through an external
//! merge sort when sorting or deduplicating (`sort`); check that rows in = rows out + duplicates
//! and re-read every written footer; then rename the files into place, fsync the directory, and
//! only then delete the inputs, if asked. Any error before the renames leaves `--output` as it
//! was and the inputs untouched. It never modifies or deletes an input without
//! `--delete-inputs`, and never overwrites a file.

pub mod input;
mod output;
mod progress;
mod sort;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use parquet::file::metadata::KeyValue;
use tweet_embed_operators::output::schema::{default_row_group_rows, writer_properties};
use tweet_embed_operators::output::{sync_dir, FileKind};

use input::{InputFile, Layout};
use output::{PartWriter, Scratch};
use progress::{Figures, Reporter};

/// Bytes of one decoded batch handed from the reader to the writer.
const READ_BATCH_BYTES: usize = 4 << 20;
/// Batches in flight between the reader thread and the writer.
const READ_AHEAD: usize = 4;

/// The column rows can be sorted and deduplicated by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Key {
    /// The `id` column (byte order of the id string).
    Id,
}

/// Flags of `tweet-embed consolidate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsolidateArgs {
    /// Directory of Parquet files to merge (searched recursively; `_`/`.`-prefixed names skipped).
    #[arg(long)]
    pub input: PathBuf,
    /// Directory for the large files (created if needed; may be the input directory).
    #[arg(long)]
    pub output: PathBuf,
    /// Approximate size of each output file, e.g. `1GiB`, `512MiB`, `2GB` or bytes.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub target_size: u64,
    /// Rows per row group of the output (default: 64 Ki rows or about 128 MiB, the fewer).
    #[arg(long)]
    pub row_group_rows: Option<usize>,
    /// Keep one row per key: the one read last (files in path order). Implies `--sort-by id`.
    #[arg(long, value_enum)]
    pub dedup_by: Option<Key>,
    /// Write rows in key order.
    #[arg(long, value_enum)]
    pub sort_by: Option<Key>,
    /// Memory for sorting before a run is spilled to disk under `--output`.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub sort_buffer: u64,
    /// Delete the input files once the output is written, verified and renamed into place.
    #[arg(long)]
    pub delete_inputs: bool,
}

impl ConsolidateArgs {
    /// The defaults of every flag, for `input` and `output`.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> ConsolidateArgs {
        ConsolidateArgs {
            input: input.into(),
            output: output.into(),
            target_size: 1 << 30,
            row_group_rows: None,
            dedup_by: None,
            sort_by: None,
            sort_buffer: 256 << 20,
            delete_inputs: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Input files read.
    pub files_in: usize,
    /// Rows in them.
    pub rows_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Files written, under their final names.
    pub files_out: Vec<PathBuf>,
    /// Rows written.
    pub rows_out: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Rows dropped as duplicate ids.
    pub duplicates: u64,
    /// Input files deleted (`--delete-inputs`).
    pub deleted: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Parses `1GiB`, `512MiB`, `64KiB`, `2GB`, `10MB`, `1000B` or a bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size (e.g. 1GiB, 512MiB)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is not a positive size"));
    }
    Ok(bytes as u64)
}

/// Runs a consolidation; see the module docs for its steps and guarantees.
pub fn run(args: &ConsolidateArgs) -> Result<Summary> {
    let started = Instant::now();
    if args.row_group_rows == Some(0) {
        bail!("--row-group-rows must be at least 1");
    }
    let paths = input::discover(&args.input)?;
    if paths.is_empty() {
        bail!("no Parquet files under --input {}", args.input.display());
    }
    let reporter = Reporter::start();
    let figures = reporter.figures();
    let (files, layout) = scan(&paths, figures)?;
    let rows_in: u64 = files.iter().map(|f| f.rows).sum();
    let bytes_in: u64 = files.iter().map(|f| f.bytes).sum();
    let mut summary = Summary { files_in: files.len(), rows_in, bytes_in, ..Summary::default() };
    if let Some(layout) = layout {
        let scratch = Scratch::create(&args.output)?;
        let parts = write(args, &files, &layout, &scratch, figures, &mut summary)?;
        output::verify(&parts, rows_in - summary.duplicates)?;
        summary.rows_out = parts.iter().map(|p| p.rows).sum();
        summary.bytes_out = parts.iter().map(|p| p.bytes).sum();
        summary.files_out = output::publish(&parts, &args.output)?;
    }
    drop(reporter);
    if args.delete_inputs {
        summary.deleted = delete_inputs(&files)?;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Reads every footer: the files, and the layout (`None` when no file has a row).
fn scan(paths: &[PathBuf], figures: &Figures) -> Result<(Vec<InputFile>, Option<Layout>)> {
    figures.phase("scanning files", paths.len() as u64);
    let mut files = Vec::with_capacity(paths.len());
    let mut dim: Option<(usize, PathBuf)> = None;
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    for path in paths {
        let (file, file_dim) = InputFile::open(path)?;
        match (&dim, file_dim) {
            (Some((d, first)), Some(fd)) if *d != fd => bail!(
                "{}: vectors have {fd} dimensions, but {} has {d}; consolidate files of one model at a time",
                path.display(),
                first.display()
            ),
            (None, Some(fd)) => dim = Some((fd, path.clone())),
            _ => {}
        }
        for col in &file.dropped {
            *dropped.entry(col.clone()).or_default() += 1;
        }
        files.push(file);
        figures.rows.fetch_add(1, Ordering::Relaxed);
    }
    for (column, count) in dropped {
        tracing::warn!(column, files = count, "column dropped: not one of design.md's output columns with our type");
    }
    let layout = match dim {
        Some((d, _)) if files.iter().any(|f| f.rows > 0) => Some(Layout::decide(&files, d)?),
        _ => None,
    };
    Ok((files, layout))
}

/// Streams every row into parts in the scratch directory; fills the row counts of `summary`.
fn write(
    args: &ConsolidateArgs,
    files: &[InputFile],
    layout: &Layout,
    scratch: &Scratch,
    figures: &Figures,
    summary: &mut Summary,
) -> Result<Vec<output::Part>> {
    let row_bytes = layout.dim.saturating_mul(4).saturating_add(64);
    let batch_rows = (READ_BATCH_BYTES / row_bytes).clamp(64, 64 * 1024);
    let sorted = args.sort_by.is_some() || args.dedup_by.is_some();
    let mut meta = vec![
        KeyValue::new("tweet_embed.dim".into(), layout.dim.to_string()),
        KeyValue::new("tweet_embed.consolidated_from_files".into(), files.len().to_string()),
    ];
    if sorted {
        meta.push(KeyValue::new("tweet_embed.sorted_by".into(), "id".to_string()));
    }
    let rg_rows = args.row_group_rows.unwrap_or_else(|| default_row_group_rows(layout.dim));
    let mut writer = PartWriter::new(
        scratch,
        layout.schema.clone(),
        writer_properties(FileKind::Rows, rg_rows),
        args.target_size,
        meta,
    );
    figures.phase("reading rows", summary.rows_in);
    let mut sorter = sorted.then(|| {
        let budget = usize::try_from(args.sort_buffer).unwrap_or(usize::MAX);
        sort::Sorter::new(layout.schema.clone(), scratch.path(), budget, row_bytes)
    });
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = sync_channel(READ_AHEAD);
        s.spawn(move || read_all(files, layout, batch_rows, figures, tx));
        consume(rx, |batch| match &mut sorter {
            Some(sorter) => sorter.push(batch),
            None => writer.write(batch),
        })
    })?;
    if let Some(sorter) = sorter {
        figures.phase("merging rows", summary.rows_in);
        let merged = sorter.finish(args.dedup_by.is_some(), &figures.rows, |b| writer.write(b))?;
        summary.duplicates = merged.duplicates;
        if merged.rows + merged.duplicates != summary.rows_in {
            bail!(
                "verification failed: merged {} rows and dropped {} duplicates of {}",
                merged.rows,
                merged.duplicates,
                summary.rows_in
            );
        }
    }
    writer.finish()
}

/// Hands every batch of `rx` to `sink` until the reader is done or fails. Owning `rx` means an
/// early return drops it, which stops the reader.
fn consume(rx: Receiver<Result<RecordBatch>>, mut sink: impl FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
    for batch in rx {
        sink(&batch?)?;
    }
    Ok(())
}

/// The reader thread: every file's batches, mapped to `layout`, in order; stops at the first
/// error (sent on) or when the receiver is gone. Checks each file's rows against its footer.
fn read_all(
    files: &[InputFile],
    layout: &Layout,
    batch_rows: usize,
    figures: &Figures,
    tx: SyncSender<Result<RecordBatch>>,
) {
    for file in files {
        let result = (|| -> Result<()> {
            let mut row = 0u64;
            for batch in file.reader(batch_rows)? {
                let batch = batch.with_context(|| format!("{}: cannot read rows from {row}", file.path.display()))?;
                let mapped = file.map(&batch, layout, row)?;
                row += mapped.num_rows() as u64;
                figures.rows.fetch_add(mapped.num_rows() as u64, Ordering::Relaxed);
                if tx.send(Ok(mapped)).is_err() {
                    return Ok(());
                }
            }
            if row != file.rows {
                bail!("{}: read {row} rows, its footer says {}", file.path.display(), file.rows);
            }
            figures.bytes.fetch_add(file.bytes, Ordering::Relaxed);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.send(Err(e));
            return;
        }
    }
}

/// Deletes the inputs (only called after the output is in place) and fsyncs their directories.
fn delete_inputs(files: &[InputFile]) -> Result<usize> {
    let mut dirs: Vec<&Path> = Vec::new();
    for f in files {
        std::fs::remove_file(&f.path).with_context(|| format!("cannot delete input {}", f.path.display()))?;
        if let Some(parent) = f.path.parent() {
            if !dirs.contains(&parent) {
                dirs.push(parent);
            }
        }
    }
    for d in dirs {
        sync_dir(d)?;
    }
    Ok(files.len())
}

/// The one-line summary printed at the end.
pub fn summary_line(s: &Summary) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut line = format!(
        "consolidated {} files ({} rows, {:.2} GiB) into {} files ({} rows, {:.2} GiB) in {:.1} s",
        s.files_in,
        s.rows_in,
        gib(s.bytes_in),
        s.files_out.len(),
        s.rows_out,
        gib(s.bytes_out),
        s.elapsed.as_secs_f64()
    );
    if s.duplicates > 0 {
        line.push_str(&format!("; {} duplicate rows dropped", s.duplicates));
    }
    if s.deleted > 0 {
        line.push_str(&format!("; {} input files deleted", s.deleted));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("").is_err());
    }
}
