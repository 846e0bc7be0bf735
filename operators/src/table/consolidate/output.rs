//! The output side of `consolidate`: the run's scratch directory inside `--output`, the large
//! files being written there under temporary names, their verification from their own footers,
//! and the final renames. Nothing gets a final name before every file of the run is finished,
//! fsynced and verified, so a failed run leaves `--output` as it found it; an existing file is
//! never overwritten. It never reads or deletes inputs.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::table::output::sync_dir;
use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// The prefix of a run's scratch directory; the leading `.` makes readers of `--output` as a
/// dataset, and `consolidate` itself, skip it.
const SCRATCH_PREFIX: &str = ".consolidate-";

/// A run's private directory inside `--output` (same file system, so renames out of it are
/// atomic). Removed with everything in it when dropped, whether the run succeeded or not.
pub struct Scratch {
    dir: PathBuf,
    run_id: String,
}

impl Scratch {
    /// Creates `out_dir` if needed and a fresh scratch directory in it, and warns about scratch
    /// directories of earlier runs that were killed (they are not ours to delete: another run may
    /// be writing there now).
    pub fn create(out_dir: &Path) -> Result<Scratch> {
        std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create --output {}", out_dir.display()))?;
        let entries = std::fs::read_dir(out_dir).with_context(|| format!("cannot list {}", out_dir.display()))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
                tracing::warn!(path = %entry.path().display(), "scratch directory of another or an interrupted consolidate run; remove it if no run is active");
            }
        }
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let run_id = format!("{secs}-p{}", std::process::id());
        let dir = out_dir.join(format!("{SCRATCH_PREFIX}{run_id}"));
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create a directory in --output: {}", dir.display()))?;
        Ok(Scratch { dir, run_id })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove the scratch directory");
        }
    }
}

/// A finished, fsynced output file still under its temporary name.
#[derive(Debug)]
pub struct Part {
    tmp_path: PathBuf,
    final_name: String,
    /// Rows written into it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
}

/// Writes batches into files of about `target_bytes` in the scratch directory.
pub struct PartWriter {
    scratch: PathBuf,
    run_id: String,
    schema: SchemaRef,
    props: WriterProperties,
    target_bytes: u64,
    meta: Vec<KeyValue>,
    open: Option<(ArrowWriter<File>, PathBuf, u64)>,
    parts: Vec<Part>,
}

impl PartWriter {
    /// A writer of `schema` files that roll once they reach `target_bytes` on disk.
    pub fn new(
        scratch: &Scratch,
        schema: SchemaRef,
        props: WriterProperties,
        target_bytes: u64,
        meta: Vec<KeyValue>,
    ) -> Self {
        PartWriter {
            scratch: scratch.path().to_path_buf(),
            run_id: scratch.run_id.clone(),
            schema,
            props,
            target_bytes: target_bytes.max(1),
            meta,
            open: None,
            parts: Vec::new(),
        }
    }

    /// Appends `batch` to the open file, first rolling to a new one if the open one is full.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some((w, _, _)) = &self.open {
            if (w.bytes_written() + w.in_progress_size()) as u64 >= self.target_bytes {
                self.close()?;
            }
        }
        let (writer, path, rows) = match &mut self.open {
            Some(open) => open,
            None => {
                let path = self.scratch.join(format!("part-{:05}.parquet.tmp", self.parts.len() + 1));
                let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
                let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
                    .with_context(|| format!("cannot start {}", path.display()))?;
                self.open.insert((writer, path, 0))
            }
        };
        writer.write(batch).with_context(|| format!("cannot write to {}", path.display()))?;
        *rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the open file and returns every file written.
    pub fn finish(mut self) -> Result<Vec<Part>> {
        self.close()?;
        Ok(self.parts)
    }

    fn close(&mut self) -> Result<()> {
        let Some((mut writer, path, rows)) = self.open.take() else { return Ok(()) };
        for kv in &self.meta {
            writer.append_key_value_metadata(kv.clone());
        }
        writer.finish().with_context(|| format!("cannot finish {}", path.display()))?;
        let file = writer.inner();
        file.sync_all().with_context(|| format!("cannot fsync {}", path.display()))?;
        let bytes = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
        let final_name = format!("consolidated-{}-{:05}.parquet", self.run_id, self.parts.len() + 1);
        self.parts.push(Part { tmp_path: path, final_name, rows, bytes });
        Ok(())
    }
}

/// Re-reads every part's footer: its row count must be what was written into it, and all of
/// them together `expected_rows`.
pub fn verify(parts: &[Part], expected_rows: u64) -> Result<()> {
    let mut total = 0u64;
    for part in parts {
        let path = &part.tmp_path;
        let file = File::open(path).with_context(|| format!("cannot reopen {}", path.display()))?;
        let reader = SerializedFileReader::new(file).with_context(|| format!("cannot read back {}", path.display()))?;
        let rows = u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
        if rows != part.rows {
            bail!("verification failed: {} has {rows} rows in its footer, {} were written", path.display(), part.rows);
        }
        total += rows;
    }
    if total != expected_rows {
        bail!("verification failed: the output files hold {total} rows, {expected_rows} were expected");
    }
    Ok(())
}

/// Gives every part its final name in `out_dir` (never replacing a file) and fsyncs `out_dir`.
pub fn publish(parts: &[Part], out_dir: &Path) -> Result<Vec<PathBuf>> {
    for part in parts {
        let dest = out_dir.join(&part.final_name);
        if dest.symlink_metadata().is_ok() {
            bail!("{} exists already; is another consolidate run writing here?", dest.display());
        }
    }
    let mut published = Vec::with_capacity(parts.len());
    for part in parts {
        let dest = out_dir.join(&part.final_name);
        if let Err(e) = std::fs::rename(&part.tmp_path, &dest) {
            // Take back what this run published: the inputs are untouched, so a rerun is clean.
            for p in &published {
                let _ = std::fs::remove_file(p);
            }
            return Err(e).with_context(|| format!("cannot rename into {}", dest.display()));
        }
        published.push(dest);
    }
    sync_dir(out_dir)?;
    Ok(published)
}
