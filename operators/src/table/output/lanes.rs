//! Per-epoch lanes of one kind (rows or rejections) of one worker. The invariant that makes
//! exactly-once work lives here: a file holds exactly one epoch. Then a file is wholly committed
//! or wholly stale whatever bounds the workers seal at, and restart can judge it by its name.
//! (Merging epochs into one file is safe only for committed epochs: that is `consolidate`'s job.)
//! Each epoch in flight stages rows in memory; a full batch goes to the epoch's file on hot
//! storage, which rolls at the target size.

use std::collections::BTreeMap;
use std::mem;
use std::path::PathBuf;

use parquet::file::properties::WriterProperties;

use super::batch::Stage;
use super::error::OutputError;
use super::file::{FinishedFile, OpenFile};
use super::naming::FileKind;

/// What every lane of a worker shares.
pub(crate) struct FileCtx {
    /// Hot storage.
    pub(crate) tmp_dir: PathBuf,
    /// The worker, for names.
    pub(crate) worker: usize,
    /// The next file number.
    pub(crate) next_seq: u64,
    /// Files roll past this size.
    pub(crate) target_file_bytes: u64,
    /// Key-value metadata of every file (the dataset's identity, the worker).
    pub(crate) file_meta: Vec<(String, String)>,
}

impl FileCtx {
    fn open<S: Stage>(&mut self, kind: FileKind, proto: &S, props: &WriterProperties) -> Result<OpenFile, OutputError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        OpenFile::create(&self.tmp_dir, kind, self.worker, seq, proto.schema(), props.clone())
    }

    fn finish(&self, file: OpenFile, out: &mut Vec<FinishedFile>) -> Result<(), OutputError> {
        if let Some(done) = file.finish(&self.file_meta)? {
            out.push(done);
        }
        Ok(())
    }
}

struct Lane<S> {
    stage: S,
    file: Option<OpenFile>,
}

/// The lanes of one kind.
pub(crate) struct Lanes<S: Stage> {
    kind: FileKind,
    proto: S,
    props: WriterProperties,
    /// Rows staged per epoch before they are written as one batch.
    batch_rows: usize,
    lanes: BTreeMap<u64, Lane<S>>,
    /// Files that rolled at the target size, waiting for their epoch's seal.
    rolled: Vec<FinishedFile>,
}

impl<S: Stage> Lanes<S> {
    pub(crate) fn new(kind: FileKind, proto: S, props: WriterProperties, batch_rows: usize) -> Self {
        Lanes { kind, proto, props, batch_rows: batch_rows.max(1), lanes: BTreeMap::new(), rolled: Vec::new() }
    }

    /// Stages `item` in `epoch`'s lane, writing the lane's batch once it is full.
    pub(crate) fn push(&mut self, ctx: &mut FileCtx, epoch: u64, item: &S::Item) -> Result<(), OutputError> {
        let proto = &self.proto;
        let lane = self.lanes.entry(epoch).or_insert_with(|| Lane { stage: proto.fresh(), file: None });
        lane.stage.push(epoch, item)?;
        if lane.stage.len() < self.batch_rows {
            return Ok(());
        }
        let file = write_stage(ctx, self.kind, &self.proto, &self.props, epoch, lane)?;
        if file.size() >= ctx.target_file_bytes {
            ctx.finish(file, &mut self.rolled)?;
        } else {
            lane.file = Some(file);
        }
        Ok(())
    }

    /// Items staged in memory and not yet handed to a file.
    pub(crate) fn staged(&self) -> usize {
        self.lanes.values().map(|l| l.stage.len()).sum()
    }

    /// Finishes the files of every epoch ≤ `upto` (writing what is staged) and returns them
    /// with the rolled ones of those epochs.
    pub(crate) fn seal(&mut self, ctx: &mut FileCtx, upto: u64) -> Result<Vec<FinishedFile>, OutputError> {
        let later = match upto.checked_add(1) {
            Some(next) => self.lanes.split_off(&next),
            None => BTreeMap::new(),
        };
        let sealing = mem::replace(&mut self.lanes, later);
        let (mut out, keep): (Vec<_>, Vec<_>) = self.rolled.drain(..).partition(|f| f.name.epoch_hi <= upto);
        self.rolled = keep;
        for (epoch, mut lane) in sealing {
            let file = match lane.stage.len() {
                0 => lane.file.take(),
                _ => Some(write_stage(ctx, self.kind, &self.proto, &self.props, epoch, &mut lane)?),
            };
            if let Some(file) = file {
                ctx.finish(file, &mut out)?;
            }
        }
        Ok(out)
    }
}

/// Writes what `lane` staged to its file, opening one if it has none, and hands the file out.
fn write_stage<S: Stage>(
    ctx: &mut FileCtx,
    kind: FileKind,
    proto: &S,
    props: &WriterProperties,
    epoch: u64,
    lane: &mut Lane<S>,
) -> Result<OpenFile, OutputError> {
    let batch = lane.stage.take_batch()?;
    let mut file = match lane.file.take() {
        Some(file) => file,
        None => ctx.open(kind, proto, props)?,
    };
    file.write(&batch, epoch)?;
    Ok(file)
}
