//! `tweet-embed consolidate`: merges any number of small Parquet files of vectors (ours, and the
//! old Python scripts' shards) into large files, streaming, in bounded memory, verified and
//! atomic. The library entry point is [`run`]; the CLI only parses [`ConsolidateArgs`].
//!
//! A run: list the inputs and read every footer, deciding the output schema and rejecting any
//! incompatible file before anything is created in `--output` ([`input`]); load the deletions
//! recorded under the input's `_deletions/` (unless `--no-deletions`); stream the rows, one row
//! group at a time, dropping the deleted ones, into large files under temporary names
//! (`output`), through an external merge sort when sorting or deduplicating (`sort`); check that
//! rows in = rows out + duplicates + deleted rows and re-read every written footer; then rename
//! the files into place, fsync the directory, and only then delete the inputs, if asked. Any
//! error before the renames leaves `--output` as it was and the inputs untouched. It never
//! modifies or deletes an input without `--delete-inputs`, never modifies or deletes
//! `_deletions/` (it is not an input of rows), and never overwrites a file.
//!
//! Deletions follow the rule of [`tweet_embed_operators::table::output::Deletion`]: a recorded
//! `(id, d)` drops every row with that id whose `epoch` is at most `d`, and every row with that
//! id from a file without an `epoch` column (a null `epoch` in the mapped rows). The set of
//! deleted ids is held in memory; it holds ids only, no vectors. Applying it again to the output
//! drops nothing more, since the rows kept keep their epochs.
//!
//! Identity and ids: an output records a dataset identity (`tweet_embed.identity`) only when
//! every one of its files records that same one; it never takes one from flags, defaults or the
//! other files. Files that record none (the old scripts', or ours from before identities) make
//! an output that records none, said once with a WARN; with `--group-by-identity` they are merged
//! on their own into the subfolder `no-identity`. Files that record different id types
//! (`tweet_embed.id_type`) are refused, naming two of them; files whose `id` columns merely have
//! different types (integers beside strings) are merged into a string `id`, said once with a WARN.

pub mod input;
mod output;
mod progress;
mod sort;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Int64Type, UInt64Type};
use parquet::file::metadata::KeyValue;
use tweet_embed_operators::table::output::schema::{default_row_group_rows, writer_properties};
use tweet_embed_operators::table::output::{sync_dir, DeletionSet, FileKind, IdType, DELETIONS_DIR, ID_TYPE_KEY};

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
    /// The `id` column (numbers by value, strings in byte order).
    Id,
}

/// Flags of `tweet-embed consolidate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsolidateArgs {
    /// Directory of Parquet files to merge (searched recursively; `_`/`.`-prefixed names skipped).
    #[arg(long)]
    pub input: PathBuf,
    /// Directory for the large files (created if needed; the input directory itself only with
    /// --delete-inputs, never a folder inside it).
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
    /// Delete the input files once the output is written, verified and renamed into place
    /// (never `_deletions/`).
    #[arg(long)]
    pub delete_inputs: bool,
    /// Keep the rows that `--input`'s `_deletions/` records as deleted, instead of dropping
    /// them: for an audit copy of everything ever embedded. `_deletions/` stays as it is either
    /// way, so a later run without this flag still drops them.
    #[arg(long)]
    pub no_deletions: bool,
    /// Inputs of different dataset identities (another model, dimension, prompt … in their
    /// `tweet_embed.identity` metadata) are refused: their vectors cannot be compared. With this
    /// flag each identity is merged on its own, into a subfolder of --output named after it, and
    /// the files that record no identity into the subfolder `no-identity`.
    #[arg(long)]
    pub group_by_identity: bool,
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
    check_output_apart(args)?;
    // Every footer once: identities first (a file of another identity is refused for that), then
    // each output's dimension and id column, all before anything is written.
    let scanned = scan(&paths, figures)?;
    let files_in = scanned.len();
    let rows_in: u64 = scanned.iter().map(|s| s.file.rows).sum();
    let bytes_in: u64 = scanned.iter().map(|s| s.file.bytes).sum();
    let groups = by_identity(scanned);
    let known = groups.iter().filter(|g| g.identity.is_some()).count();
    if known > 1 && !args.group_by_identity {
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
    let grouped = args.group_by_identity && groups.len() > 1;
    let groups = if grouped { groups } else { vec![IdentityGroup::merge(groups)] };
    warn_unknown_identity(&groups, files_in, grouped);
    let mut planned = Vec::with_capacity(groups.len());
    for group in groups {
        let layout = group.layout()?;
        planned.push((group, layout));
    }
    let mut summary = Summary { files_in, rows_in, bytes_in, ..Summary::default() };
    let deletions = load_deletions(args, &mut summary)?;
    for (group, layout) in &planned {
        let output = if grouped { args.output.join(group.slug()) } else { args.output.clone() };
        let Some(layout) = layout else { continue };
        let files: Vec<&InputFile> = group.files.iter().map(|s| &s.file).collect();
        let rows_in: u64 = files.iter().map(|f| f.rows).sum();
        let mut part = Summary { rows_in, ..Summary::default() };
        let scratch = Scratch::create(&output)?;
        let identity = group.identity.as_deref();
        let parts = write(args, &files, layout, identity, deletions.as_ref(), &scratch, figures, &mut part)?;
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
    if args.delete_inputs {
        let files: Vec<&InputFile> = planned.iter().flat_map(|(g, _)| g.files.iter().map(|s| &s.file)).collect();
        summary.inputs_deleted = delete_inputs(&files)?;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Refuses an `--output` where the merged files would sit beside their inputs, so that a reader
/// of the folder (or the next consolidate) would read every row twice: the input directory
/// itself, unless `--delete-inputs` removes the inputs, or any folder inside it.
fn check_output_apart(args: &ConsolidateArgs) -> Result<()> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let input = canonical(&args.input);
    // The output may not exist yet: judge by its nearest existing ancestor.
    let mut output = args.output.clone();
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
    if output == input && !args.delete_inputs {
        bail!(
            "--output is the input directory {}: the merged files would sit beside their inputs and readers would see \
             every row twice; pass --delete-inputs to replace the inputs, or choose another --output",
            args.input.display()
        );
    }
    if output != input && output.starts_with(&input) {
        bail!(
            "--output {} is inside --input {}: the merged files would be read again as inputs; choose a directory \
             outside it",
            args.output.display(),
            args.input.display()
        );
    }
    Ok(())
}

/// An input file as its footer describes it, and the length of its vectors (`None` for a file
/// without rows whose footer does not say it).
struct Scanned {
    file: InputFile,
    dim: Option<usize>,
}

/// The inputs of one output: of one dataset identity, or of none recorded.
struct IdentityGroup {
    /// The identity the output records: `None` unless every file of the group records this one.
    identity: Option<String>,
    /// In path order.
    files: Vec<Scanned>,
}

impl IdentityGroup {
    /// For people: the identity's summary line, or "no recorded identity".
    fn label(&self) -> String {
        match self
            .identity
            .as_deref()
            .map(serde_json::from_str::<tweet_embed_operators::table::identity::DatasetIdentity>)
        {
            Some(Ok(i)) => i.summary(),
            Some(Err(_)) => "an unreadable identity".into(),
            None => "no recorded identity".into(),
        }
    }

    /// The subfolder name of the group: `dim768-prompt-document-<FNV-1a of the identity>`, or
    /// `no-identity`.
    fn slug(&self) -> String {
        let Some(json) = &self.identity else { return NO_IDENTITY.into() };
        let hash = json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        match serde_json::from_str::<tweet_embed_operators::table::identity::DatasetIdentity>(json) {
            Ok(i) => format!("dim{}-prompt-{}-{hash:016x}", i.dim, i.prompt_name.as_deref().unwrap_or("none"))
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
                .collect(),
            Err(_) => format!("identity-{hash:016x}"),
        }
    }

    /// All `groups` as one output, in path order. It records the identity only when there is
    /// one group with one: an identity is never stamped on files that do not record it.
    fn merge(groups: Vec<IdentityGroup>) -> IdentityGroup {
        let identity = match groups.as_slice() {
            [one] => one.identity.clone(),
            _ => None,
        };
        let mut files: Vec<Scanned> = groups.into_iter().flat_map(|g| g.files).collect();
        files.sort_by(|a, b| a.file.path.cmp(&b.file.path));
        IdentityGroup { identity, files }
    }

    /// The output's layout (`None` when no file has a row), after checking that every vector
    /// has one length and that no two files record different id types; says once when the
    /// output's `id` column changes some file's ids (integers written as decimal text).
    fn layout(&self) -> Result<Option<Layout>> {
        let mut dim: Option<(usize, &Path)> = None;
        for s in &self.files {
            match (dim, s.dim) {
                (Some((d, first)), Some(fd)) if d != fd => bail!(
                    "{}: vectors have {fd} dimensions, but {} has {d}; consolidate files of one model at a time",
                    s.file.path.display(),
                    first.display()
                ),
                (None, Some(fd)) => dim = Some((fd, &s.file.path)),
                _ => {}
            }
        }
        let files: Vec<&InputFile> = self.files.iter().map(|s| &s.file).collect();
        check_id_types(&files)?;
        let layout = match dim {
            Some((d, _)) if files.iter().any(|f| f.rows > 0) => Layout::decide(&files, d)?,
            _ => return Ok(None),
        };
        warn_id_conversion(&files, &layout);
        Ok(Some(layout))
    }
}

/// The subfolder of `--group-by-identity` for the files that record no identity.
const NO_IDENTITY: &str = "no-identity";

/// The inputs grouped by identity, in order of first appearance, each group in path order.
/// Files that record no identity are a group of their own: nothing tells which model made them.
fn by_identity(files: Vec<Scanned>) -> Vec<IdentityGroup> {
    let mut groups: Vec<IdentityGroup> = Vec::new();
    for s in files {
        match groups.iter_mut().find(|g| g.identity == s.file.identity) {
            Some(g) => g.files.push(s),
            None => groups.push(IdentityGroup { identity: s.file.identity.clone(), files: vec![s] }),
        }
    }
    groups
}

/// Says once, when some output holds files that record no identity, that it records none.
fn warn_unknown_identity(groups: &[IdentityGroup], files_in: usize, grouped: bool) {
    for g in groups.iter().filter(|g| g.identity.is_none()) {
        let unknown: Vec<&Path> =
            g.files.iter().filter(|s| s.file.identity.is_none()).map(|s| s.file.path.as_path()).collect();
        let Some(example) = unknown.first() else { continue };
        let n = unknown.len();
        if grouped {
            tracing::warn!(
                "{n} of {files_in} input files record no dataset identity (e.g. {}): they are merged into the \
                 subfolder {NO_IDENTITY}, whose files record none either",
                example.display()
            );
        } else if n == files_in {
            tracing::warn!(
                "none of the {files_in} input files records a dataset identity (model, revision, dimension, prompt: \
                 tweet_embed.identity; e.g. {}): the output records none either",
                example.display()
            );
        } else {
            tracing::warn!(
                "{n} of {files_in} input files record no dataset identity (e.g. {}): the output cannot say which \
                 model made their vectors and records none; --group-by-identity keeps the identity of the others \
                 (the files without one go to the subfolder {NO_IDENTITY})",
                example.display()
            );
        }
    }
}

/// Refuses files that record different id types ([`ID_TYPE_KEY`]): one `id` column would hold
/// ids that name documents differently (the number 5 and the string "5" would be one id).
fn check_id_types(files: &[&InputFile]) -> Result<()> {
    let mut recorded = files.iter().filter_map(|f| f.id_type.map(|t| (f, t)));
    let Some((first, t)) = recorded.next() else { return Ok(()) };
    if let Some((other, u)) = recorded.find(|(_, u)| *u != t) {
        bail!(
            "the inputs' ids are of different types: {} records id type {t} ({} column) and {} records {u} ({} \
             column); one id column cannot hold both (the number 5 and the string \"5\" would be one id). \
             Consolidate each dataset on its own",
            first.path.display(),
            first.id_data_type(),
            other.path.display(),
            other.id_data_type()
        );
    }
    Ok(())
}

/// Says once when the output's `id` column is a string column but some file's ids are
/// integers, which are written as their decimal text.
fn warn_id_conversion(files: &[&InputFile], layout: &Layout) {
    if layout.schema.field(0).data_type() != &DataType::Utf8 {
        return;
    }
    let integer = |t: &DataType| match t {
        DataType::Dictionary(_, v) => v.is_integer(),
        t => t.is_integer(),
    };
    let integers: Vec<&&InputFile> = files.iter().filter(|f| integer(f.id_data_type())).collect();
    let Some(int_file) = integers.first() else { return };
    let other = files.iter().find(|f| f.id_data_type() != int_file.id_data_type());
    let beside = match other {
        Some(o) => format!(" and {} has {} ids", o.path.display(), o.id_data_type()),
        None => String::new(),
    };
    tracing::warn!(
        "the inputs' id columns differ: {} has {} ids{beside}; the output's id is a string column, the integer ids \
         of {} of {} files written as their decimal text",
        int_file.path.display(),
        int_file.id_data_type(),
        integers.len(),
        files.len()
    );
}

/// The deletions to apply: `None` when the input has no `_deletions/` or `--no-deletions` keeps
/// them. Records in `summary` which it was.
fn load_deletions(args: &ConsolidateArgs, summary: &mut Summary) -> Result<Option<DeletionSet>> {
    let dir = args.input.join(DELETIONS_DIR);
    let recorded = match std::fs::symlink_metadata(&dir) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    if !recorded {
        return Ok(None);
    }
    if args.no_deletions {
        summary.deletions = Deletions::Skipped;
        return Ok(None);
    }
    let set = DeletionSet::load(&args.input)?;
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
    args: &ConsolidateArgs,
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
    let sorted = args.sort_by.is_some() || args.dedup_by.is_some();
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
        let merged = sorter.finish(args.dedup_by.is_some(), &figures.rows, |b| writer.write(b))?;
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

/// Hands every batch of `rx` to `sink` until the reader is done or fails. Owning `rx` means an
/// early return drops it, which stops the reader.
fn consume(rx: Receiver<Result<RecordBatch>>, mut sink: impl FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
    for batch in rx {
        sink(&batch?)?;
    }
    Ok(())
}

/// What the reader thread reads, and where it counts.
struct Reading<'a> {
    files: &'a [&'a InputFile],
    layout: &'a Layout,
    /// Rows to drop, if any.
    deletions: Option<&'a DeletionSet>,
    batch_rows: usize,
    figures: &'a Figures,
    /// Rows dropped as deleted.
    deleted: &'a AtomicU64,
}

/// The reader thread: every file's batches, mapped to `layout`, without deleted rows, in order;
/// stops at the first error (sent on) or when the receiver is gone. Checks each file's rows
/// against its footer.
fn read_all(r: &Reading<'_>, tx: SyncSender<Result<RecordBatch>>) {
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

/// `batch` (of the output layout: `id` first, `epoch` if any file has it), read from a file of
/// `id_type` (its metadata's), without the rows `deletions` deletes; a null `epoch` (a file
/// without one) matches any deletion of its id. A deletion names a row as the engine does
/// (`tweet_embed_operators::table::output::id_type`): an `int64` file's `5` as `{"$numberLong":"5"}`,
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

/// The one-line summary printed at the end.
pub fn summary_line(s: &Summary) -> String {
    use indicatif::HumanBytes;
    let mut line = format!(
        "consolidated {} files ({} rows, {}) into {} files ({} rows, {}) in {:.1} s",
        s.files_in,
        s.rows_in,
        HumanBytes(s.bytes_in),
        s.files_out.len(),
        s.rows_out,
        HumanBytes(s.bytes_out),
        s.elapsed.as_secs_f64()
    );
    if s.duplicates > 0 {
        line.push_str(&format!("; {} duplicate rows dropped", s.duplicates));
    }
    match s.deletions {
        Deletions::NoneRecorded => {}
        Deletions::Applied { .. } => {
            line.push_str(&format!("; {} deleted rows dropped (recorded in {DELETIONS_DIR}/)", s.deleted_rows))
        }
        Deletions::Skipped => line.push_str(&format!("; {DELETIONS_DIR}/ not applied (--no-deletions)")),
    }
    if s.inputs_deleted > 0 {
        line.push_str(&format!("; {} input files deleted", s.inputs_deleted));
    }
    if !s.groups.is_empty() {
        let names: Vec<String> = s.groups.iter().map(|g| g.display().to_string()).collect();
        line.push_str(&format!("; one folder per dataset identity: {}", names.join(", ")));
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
