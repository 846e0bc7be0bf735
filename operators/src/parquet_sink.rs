//! `ParquetSink`: writes each worker's rows and rejections to Parquet, one epoch at a time. Rows
//! wait in memory until the frontier passes their epoch, so a file never mixes an epoch that is
//! complete with one that is not; then the epoch is written, its files are finished, fsynced and
//! moved into the output directory, and a [`Sealed`] record tells the committer which files and
//! ids the epoch holds.
//!
//! A write failure (disk full, unwritable directory) stops the epoch where it is: its capability
//! is kept, so nothing after it can be committed, and the failure is reported for the run to
//! exit with it.

use crate::output::{EpochWriter, FileMeta};
use crate::record::Written;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// A worker's durable output for one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    /// The epoch.
    pub epoch: u64,
    /// Files now durable in the output directory.
    pub files: Vec<FileMeta>,
    /// Ids written as rows.
    pub embedded: Vec<String>,
    /// Ids written as rejections, with reasons.
    pub rejected: Vec<(String, String)>,
    /// Tokens of the rows.
    pub tokens: u64,
}

/// Where a fatal failure of an operator is reported for the run to stop with it.
pub type Failure = Arc<Mutex<Option<String>>>;

/// Extension trait: the Parquet writer.
pub trait ParquetSink<'scope> {
    /// Writes epochs as the frontier completes them; reports write failures in `failure`.
    fn parquet_sink(self, writer: EpochWriter, failure: Failure) -> StreamVec<'scope, u64, Sealed>;
}

impl<'scope> ParquetSink<'scope> for StreamVec<'scope, u64, Written> {
    fn parquet_sink(self, mut writer: EpochWriter, failure: Failure) -> StreamVec<'scope, u64, Sealed> {
        self.unary_frontier(Pipeline, "ParquetSink", move |_cap, _info| {
            let mut stash: HashMap<u64, (Capability<u64>, Vec<Written>)> = HashMap::new();
            let mut failed = false;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    let entry = stash.entry(*c.time()).or_insert_with(|| (c, Vec::new()));
                    entry.1.extend(data.flat_map(|d| d.drain(..)));
                });
                if failed {
                    return;
                }
                let mut ready: Vec<u64> = stash.keys().copied().filter(|t| !frontier.less_equal(t)).collect();
                ready.sort_unstable();
                for t in ready {
                    let Some((cap, records)) = stash.remove(&t) else { continue };
                    match write_epoch(&mut writer, t, records) {
                        Ok(sealed) => output.session(&cap).give(sealed),
                        Err(e) => {
                            *failure.lock() = Some(e);
                            failed = true;
                            // Keep the capability: this epoch must never be committed.
                            stash.insert(t, (cap, Vec::new()));
                            return;
                        }
                    }
                }
            }
        })
    }
}

fn write_epoch(writer: &mut EpochWriter, epoch: u64, records: Vec<Written>) -> Result<Sealed, String> {
    let mut sealed = Sealed { epoch, files: Vec::new(), embedded: Vec::new(), rejected: Vec::new(), tokens: 0 };
    for r in records {
        match r {
            Written::Row(row) => {
                writer.push_row(epoch, &row).map_err(|e| e.to_string())?;
                sealed.tokens += row.tokens as u64;
                sealed.embedded.push(row.doc.id);
            }
            Written::Reject(rej) => {
                writer.push_reject(epoch, &rej).map_err(|e| e.to_string())?;
                sealed.rejected.push((rej.doc.id, rej.reason));
            }
        }
    }
    sealed.files = writer.seal(epoch).map_err(|e| e.to_string())?;
    Ok(sealed)
}
