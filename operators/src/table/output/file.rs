//! One Parquet file being written on hot storage, and the same file once finished: footer
//! written, fsynced, its epoch range and size known, ready to be moved to cold storage. It never
//! moves anything itself.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::error::OutputError;
use super::naming::{tmp_name, FileKind, PartName};

/// A file open for writing under the temporary directory.
pub(crate) struct OpenFile {
    writer: ArrowWriter<File>,
    path: PathBuf,
    kind: FileKind,
    worker: usize,
    seq: u64,
    /// Epoch range of the rows written so far; `None` until the first row.
    epochs: Option<(u64, u64)>,
    rows: u64,
}

/// A finished, fsynced file still under the temporary directory.
#[derive(Debug)]
pub(crate) struct FinishedFile {
    /// Where it is now.
    pub(crate) tmp_path: PathBuf,
    /// Rows or rejections.
    pub(crate) kind: FileKind,
    /// Its final name's parts.
    pub(crate) name: PartName,
    /// Rows in it.
    pub(crate) rows: u64,
    /// Its size.
    pub(crate) bytes: u64,
}

impl OpenFile {
    /// Creates `tmp_dir/<tmp name>` for `worker`'s file number `seq`.
    pub(crate) fn create(
        tmp_dir: &Path,
        kind: FileKind,
        worker: usize,
        seq: u64,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<Self, OutputError> {
        let path = tmp_dir.join(tmp_name(worker, seq));
        let file = File::create(&path).map_err(|e| OutputError::io("create", &path, e))?;
        let writer =
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| OutputError::parquet("start", &path, e))?;
        Ok(OpenFile { writer, path, kind, worker, seq, epochs: None, rows: 0 })
    }

    /// Appends a batch whose rows all belong to `epoch`.
    pub(crate) fn write(&mut self, batch: &RecordBatch, epoch: u64) -> Result<(), OutputError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer.write(batch).map_err(|e| OutputError::parquet("write to", &self.path, e))?;
        self.rows += batch.num_rows() as u64;
        self.epochs = Some(match self.epochs {
            None => (epoch, epoch),
            Some((lo, hi)) => (lo.min(epoch), hi.max(epoch)),
        });
        Ok(())
    }

    /// Bytes on disk plus the estimated encoded size of the row group still in memory.
    pub(crate) fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Writes the footer (with the epoch range in its key-value metadata, for tools that see
    /// the file without its name) and fsyncs. `None` when no row was ever written: the empty
    /// file is removed, since empty epochs produce no file.
    pub(crate) fn finish(mut self, extra: &[(String, String)]) -> Result<Option<FinishedFile>, OutputError> {
        let Some((lo, hi)) = self.epochs else {
            drop(self.writer);
            std::fs::remove_file(&self.path).map_err(|e| OutputError::io("remove empty", &self.path, e))?;
            return Ok(None);
        };
        let kv = [
            ("tweet_embed.epoch_lo".to_string(), lo.to_string()),
            ("tweet_embed.epoch_hi".to_string(), hi.to_string()),
        ];
        for (k, v) in kv.into_iter().chain(extra.iter().cloned()) {
            self.writer.append_key_value_metadata(KeyValue::new(k, v));
        }
        self.writer.finish().map_err(|e| OutputError::parquet("finish", &self.path, e))?;
        let file = self.writer.inner();
        file.sync_all().map_err(|e| OutputError::io("fsync", &self.path, e))?;
        let bytes = file.metadata().map_err(|e| OutputError::io("stat", &self.path, e))?.len();
        let name = PartName { epoch_lo: lo, epoch_hi: hi, worker: self.worker, seq: self.seq };
        Ok(Some(FinishedFile { tmp_path: self.path, kind: self.kind, name, rows: self.rows, bytes }))
    }
}
