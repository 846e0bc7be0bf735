//! Consolidation: merges any number of small Parquet files of vectors (ours, and the old Python
//! scripts' shards) into large files, streaming, in bounded memory, verified and atomic. The entry
//! point is [`run`] with a plain [`Settings`]; `tweet-embed consolidate` maps its flags onto it
//! and shows the progress ([`Figures`]) and the summary. Error messages name the CLI's flags
//! (`--output`, `--delete-inputs`, …), the settings' fields of the same names.
//!
//! A run: list the inputs and read every footer, deciding the output schema and rejecting any
//! incompatible file before anything is created in `--output` ([`input`]); load the deletions
//! recorded under the input's `_deletions/` (unless `--no-deletions`); stream the rows, one row
//! group at a time, dropping the deleted ones (`read`), into large files under temporary names
//! (`output`), through an external merge sort when sorting or deduplicating (`sort`); check that
//! rows in = rows out + duplicates + deleted rows and re-read every written footer; then rename
//! the files into place, fsync the directory, and only then delete the inputs, if asked. Any
//! error before the renames leaves `--output` as it was and the inputs untouched. It never
//! modifies or deletes an input without `--delete-inputs`, never modifies or deletes
//! `_deletions/` (it is not an input of rows), and never overwrites a file. It never draws on a
//! terminal and knows no flag parser: the caller shows [`Figures`] as it likes.
//!
//! Deletions follow the rule of [`crate::table::output::Deletion`]: a recorded
//! `(id, d)` drops every row with that id whose `epoch` is at most `d`, and every row with that
//! id from a file without an `epoch` column (a null `epoch` in the mapped rows). The set of
//! deleted ids is held in memory; it holds ids only, no vectors. Applying it again to the output
//! drops nothing more, since the rows kept keep their epochs.
//!
//! Identity and ids (`groups`): an output records a dataset identity (`tweet_embed.identity`) only
//! when every one of its files records that same one; it never takes one from flags, defaults or
//! the other files. Files that record none (the old scripts', or ours from before identities) make
//! an output that records none, said once with a WARN; with `--group-by-identity` they are merged
//! on their own into the subfolder `no-identity`. Files that record different id types
//! (`tweet_embed.id_type`) are refused, naming two of them; files whose `id` columns merely have
//! different types (integers beside strings) are merged into a string `id`, said once with a WARN.

mod groups;
pub mod input;
mod output;
mod progress;
mod read;
mod sort;

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use crate::table::output::schema::{default_row_group_rows, writer_properties};
use crate::table::output::{sync_dir, DeletionSet, FileKind, IdType, DELETIONS_DIR, ID_TYPE_KEY};
use anyhow::{bail, Context, Result};
use arrow::datatypes::DataType;
use parquet::file::metadata::KeyValue;

use groups::{by_identity, warn_unknown_identity, IdentityGroup, Scanned};
use input::{InputFile, Layout};
use output::{PartWriter, Scratch};
pub use progress::Figures;
use read::{consume, read_all, Reading};

/// Bytes of one decoded batch handed from the reader to the writer.
const READ_BATCH_BYTES: usize = 4 << 20;
/// Batches in flight between the reader thread and the writer.
const READ_AHEAD: usize = 4;

/// The column rows can be sorted and deduplicated by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The `id` column (numbers by value, strings in byte order).
    Id,
}

/// What a consolidation does: the CLI's `consolidate` flags, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory of Parquet files to merge (searched recursively; `_`/`.`-prefixed names skipped).
    pub input: PathBuf,
    /// Directory for the large files (created if needed; the input directory itself only with
    /// `delete_inputs`, never a folder inside it).
    pub output: PathBuf,
    /// Approximate size of each output file, in bytes.
    pub target_size: u64,
    /// Rows per row group of the output (`None`: 64 Ki rows or about 128 MiB, the fewer).
    pub row_group_rows: Option<usize>,
    /// Keep one row per key: the one read last (files in path order). Implies sorting by it.
    pub dedup_by: Option<Key>,
    /// Write rows in key order.
    pub sort_by: Option<Key>,
    /// Bytes of memory for sorting before a run is spilled to disk under `output`.
    pub sort_buffer: u64,
    /// Delete the input files once the output is written, verified and renamed into place
    /// (never `_deletions/`).
    pub delete_inputs: bool,
    /// Keep the rows that `input`'s `_deletions/` records as deleted instead of dropping them.
    pub no_deletions: bool,
    /// Merge each dataset identity on its own, into a subfolder of `output` named after it,
    /// instead of refusing inputs of different identities.
    pub group_by_identity: bool,
}

impl Settings {
    /// The CLI's defaults for `input` and `output`: 1 GiB files, a 256 MiB sort buffer, no
    /// sorting, deletions applied, inputs kept.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Settings {
        Settings {
            input: input.into(),
            output: output.into(),
            target_size: 1 << 30,
            row_group_rows: None,
            dedup_by: None,
            sort_by: None,
            sort_buffer: 256 << 20,
            delete_inputs: false,
            no_deletions: false,
            group_by_identity: false,
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
    /// Rows dropped because `_deletions/` records their deletion.
    pub deleted_rows: u64,
    /// What the run did with the input's `_deletions/`.
    pub deletions: Deletions,
    /// Input files deleted (`--delete-inputs`).
    pub inputs_deleted: usize,
    /// With `--group-by-identity` and several identities: the subfolder each went to.
    pub groups: Vec<PathBuf>,
    /// Wall time.
    pub elapsed: Duration,
}

/// What a run did with the deletions recorded under the input's `_deletions/`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Deletions {
    /// The input has no `_deletions/`.
    #[default]
    NoneRecorded,
    /// Applied: the rows of the deleted ids were dropped.
    Applied {
        /// Distinct ids recorded as deleted.
        ids: usize,
    },
    /// Present, but kept (`--no-deletions`).
    Skipped,
}

/// Runs a consolidation; see the module docs for its steps and guarantees. Once the inputs are
/// listed it calls `show` for the [`Figures`] to count into, and drops what it returned (a
/// progress display, say) when the output is in place, before deleting any input:
/// `|| Box::<Figures>::default()` shows nothing.
pub fn run<P: Deref<Target = Figures>>(settings: &Settings, show: impl FnOnce() -> P) -> Result<Summary> {
    let started = Instant::now();
    if settings.row_group_rows == Some(0) {
        bail!("--row-group-rows must be at least 1");
    }
    let paths = input::discover(&settings.input)?;
    if paths.is_empty() {
        bail!("no Parquet files under --input {}", settings.input.display());
    }
    let reporter = show();
    let figures: &Figures = &reporter;
    check_output_apart(settings)?;
    // Every footer once: identities first (a file of another identity is refused for that), then
    // each output's dimension and id column, all before anything is written.
    let scanned = scan(&paths, figures)?;
    let files_in = scanned.len();
    let rows_in: u64 = scanned.iter().map(|s| s.file.rows).sum();
    let bytes_in: u64 = scanned.iter().map(|s| s.file.bytes).sum();
    let groups = by_identity(scanned);
    let known = groups.iter().filter(|g| g.identity.is_some()).count();
    if known > 1 && !settings.group_by_identity {
        let named: Vec<String> = groups
            .iter()
            .map(|g| format!("{} ({} files, e.g. {})", g.label(), g.files.len(), g.files[0].file.path.display()))
            .collect();
        bail!(
            "the inputs hold vectors of {known} dataset identities, which cannot be compared: {}. Merge each on its \
             own with --group-by-identity (a subfolder of --output per identity)",
            named.join("; ")
        );
    }
    let grouped = settings.group_by_identity && groups.len() > 1;
    let groups = if grouped { groups } else { vec![IdentityGroup::merge(groups)] };
    warn_unknown_identity(&groups, files_in, grouped);
    let mut planned = Vec::with_capacity(groups.len());
    for group in groups {
        let layout = group.layout()?;
        planned.push((group, layout));
    }
    let mut summary = Summary { files_in, rows_in, bytes_in, ..Summary::default() };
    let deletions = load_deletions(settings, &mut summary)?;
    for (group, layout) in &planned {
        let output = if grouped { settings.output.join(group.slug()) } else { settings.output.clone() };
        let Some(layout) = layout else { continue };
        let files: Vec<&InputFile> = group.files.iter().map(|s| &s.file).collect();
        let rows_in: u64 = files.iter().map(|f| f.rows).sum();
        let mut part = Summary { rows_in, ..Summary::default() };
        let scratch = Scratch::create(&output)?;
        let identity = group.identity.as_deref();
        let parts = write(settings, &files, layout, identity, deletions.as_ref(), &scratch, figures, &mut part)?;
        let Some(kept) = rows_in.checked_sub(part.duplicates + part.deleted_rows) else {
            bail!(
                "verification failed: {} duplicates and {} deleted rows dropped of {rows_in} rows",
                part.duplicates,
                part.deleted_rows
            );
        };
        output::verify(&parts, kept)?;
        summary.rows_out += parts.iter().map(|p| p.rows).sum::<u64>();
        summary.bytes_out += parts.iter().map(|p| p.bytes).sum::<u64>();
        summary.files_out.extend(output::publish(&parts, &output)?);
        summary.duplicates += part.duplicates;
        summary.deleted_rows += part.deleted_rows;
        if grouped {
            summary.groups.push(output);
        }
    }
    drop(reporter);
    if settings.delete_inputs {
        let files: Vec<&InputFile> = planned.iter().flat_map(|(g, _)| g.files.iter().map(|s| &s.file)).collect();
        summary.inputs_deleted = delete_inputs(&files)?;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Refuses an `--output` where the merged files would sit beside their inputs, so that a reader
/// of the folder (or the next consolidate) would read every row twice: the input directory
/// itself, unless `--delete-inputs` removes the inputs, or any folder inside it.
fn check_output_apart(settings: &Settings) -> Result<()> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let input = canonical(&settings.input);
    // The output may not exist yet: judge by its nearest existing ancestor.
    let mut output = settings.output.clone();
    let mut rest = Vec::new();
    while !output.exists() {
        match (output.file_name().map(|n| n.to_os_string()), output.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                output = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut output = canonical(&output);
    output.extend(rest.into_iter().rev());
    if output == input && !settings.delete_inputs {
        bail!(
            "--output is the input directory {}: the merged files would sit beside their inputs and readers would see \
             every row twice; pass --delete-inputs to replace the inputs, or choose another --output",
            settings.input.display()
        );
    }
    if output != input && output.starts_with(&input) {
        bail!(
            "--output {} is inside --input {}: the merged files would be read again as inputs; choose a directory \
             outside it",
            settings.output.display(),
            settings.input.display()
        );
    }
    Ok(())
}

/// The deletions to apply: `None` when the input has no `_deletions/` or `--no-deletions` keeps
/// them. Records in `summary` which it was.
fn load_deletions(settings: &Settings, summary: &mut Summary) -> Result<Option<DeletionSet>> {
    let dir = settings.input.join(DELETIONS_DIR);
    let recorded = match std::fs::symlink_metadata(&dir) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    if !recorded {
        return Ok(None);
    }
    if settings.no_deletions {
        summary.deletions = Deletions::Skipped;
        return Ok(None);
    }
    let set = DeletionSet::load(&settings.input)?;
    summary.deletions = Deletions::Applied { ids: set.len() };
    Ok((!set.is_empty()).then_some(set))
}

/// Reads every footer, in path order; says once which columns no output has.
fn scan(paths: &[PathBuf], figures: &Figures) -> Result<Vec<Scanned>> {
    figures.phase("scanning files", paths.len() as u64);
    let mut files = Vec::with_capacity(paths.len());
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    for path in paths {
        let (file, dim) = InputFile::open(path)?;
        for col in &file.dropped {
            *dropped.entry(col.clone()).or_default() += 1;
        }
        files.push(Scanned { file, dim });
        figures.rows.fetch_add(1, Ordering::Relaxed);
    }
    if !dropped.is_empty() {
        let columns: Vec<String> = dropped.iter().map(|(c, n)| format!("{c} in {n} files")).collect();
        tracing::warn!(
            "columns dropped, not one of the output columns with our type (operators/DESIGN.md, \"The output\"): {}",
            columns.join(", ")
        );
    }
    Ok(files)
}

/// Streams every row into parts in the scratch directory; fills the row counts of `summary`.
#[allow(clippy::too_many_arguments)]
fn write(
    settings: &Settings,
    files: &[&InputFile],
    layout: &Layout,
    identity: Option<&str>,
    deletions: Option<&DeletionSet>,
    scratch: &Scratch,
    figures: &Figures,
    summary: &mut Summary,
) -> Result<Vec<output::Part>> {
    let row_bytes = layout.dim.saturating_mul(4).saturating_add(64);
    let batch_rows = (READ_BATCH_BYTES / row_bytes).clamp(64, 64 * 1024);
    let sorted = settings.sort_by.is_some() || settings.dedup_by.is_some();
    let mut meta = vec![
        KeyValue::new("tweet_embed.dim".into(), layout.dim.to_string()),
        KeyValue::new("tweet_embed.consolidated_from_files".into(), files.len().to_string()),
    ];
    if sorted {
        meta.push(KeyValue::new("tweet_embed.sorted_by".into(), "id".to_string()));
    }
    if let Some(identity) = identity {
        meta.push(KeyValue::new("tweet_embed.identity".into(), identity.to_string()));
    }
    if let Some(id_type) = output_id_type(files, layout) {
        meta.push(KeyValue::new(ID_TYPE_KEY.into(), id_type.to_string()));
    }
    let rg_rows = settings.row_group_rows.unwrap_or_else(|| default_row_group_rows(layout.dim));
    let mut writer = PartWriter::new(
        scratch,
        layout.schema.clone(),
        writer_properties(FileKind::Rows, rg_rows),
        settings.target_size,
        meta,
    );
    figures.phase("reading rows", summary.rows_in);
    let mut sorter = sorted.then(|| {
        let budget = usize::try_from(settings.sort_buffer).unwrap_or(usize::MAX);
        sort::Sorter::new(layout.schema.clone(), scratch.path(), budget, row_bytes)
    });
    let deleted = AtomicU64::new(0);
    let reading = Reading { files, layout, deletions, batch_rows, figures, deleted: &deleted };
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = sync_channel(READ_AHEAD);
        s.spawn(move || read_all(&reading, tx));
        consume(rx, |batch| match &mut sorter {
            Some(sorter) => sorter.push(batch),
            None => writer.write(batch),
        })
    })?;
    summary.deleted_rows = deleted.load(Ordering::Relaxed);
    if let Some(sorter) = sorter {
        figures.phase("merging rows", summary.rows_in.saturating_sub(summary.deleted_rows));
        let merged = sorter.finish(settings.dedup_by.is_some(), &figures.rows, |b| writer.write(b))?;
        summary.duplicates = merged.duplicates;
        if merged.rows + merged.duplicates + summary.deleted_rows != summary.rows_in {
            bail!(
                "verification failed: merged {} rows, dropped {} duplicates and {} deleted rows of {}",
                merged.rows,
                merged.duplicates,
                summary.deleted_rows,
                summary.rows_in
            );
        }
    }
    writer.finish()
}

/// The id type to record in the output's metadata: the one every input records, else `int64`
/// for an Int64 `id`; none for a mix.
fn output_id_type(files: &[&InputFile], layout: &Layout) -> Option<IdType> {
    let first = files.first().and_then(|f| f.id_type);
    match first {
        Some(t) if files.iter().all(|f| f.id_type == Some(t)) => Some(t),
        _ if layout.schema.field(0).data_type() == &DataType::Int64 => Some(IdType::Int64),
        _ => None,
    }
}

/// Deletes the inputs (only called after the output is in place) and fsyncs their directories.
fn delete_inputs(files: &[&InputFile]) -> Result<usize> {
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
