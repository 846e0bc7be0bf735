//! `WriteParquet`: writes each worker's rows and rejections to Parquet as they arrive, each epoch
//! into its own files on hot storage (the writer keeps one lane per open epoch, so a file never
//! mixes epochs). When the frontier passes an epoch, its files are finished, fsynced and moved
//! into the output directory, and a [`Sealed`] record tells the committer which files and ids the
//! epoch holds. Memory is the writer's staging per open epoch, not the epoch's rows.
//!
//! A write failure (disk full, unwritable directory) stops the epoch where it is: its capability
//! is kept, so nothing after it can be committed, and the failure is reported for the run to
//! exit with it.

use crate::failure::Failure;
use crate::output::{EpochWriter, FileMeta};
use crate::record::Written;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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

/// Extension trait: the Parquet writer.
pub trait WriteParquet<'scope> {
    /// Writes epochs as the frontier completes them; reports write failures in `failure`.
    fn write_parquet(self, writer: EpochWriter, failure: Failure) -> StreamVec<'scope, u64, Sealed>;
}

impl<'scope> WriteParquet<'scope> for StreamVec<'scope, u64, Written> {
    fn write_parquet(self, mut writer: EpochWriter, failure: Failure) -> StreamVec<'scope, u64, Sealed> {
        self.unary_frontier(Pipeline, "WriteParquet", move |_cap, _info| {
            // Per open epoch: its capability and what the committer will need to mark.
            let mut open: HashMap<u64, (Capability<u64>, Sealed)> = HashMap::new();
            let mut failed = false;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    let t = *c.time();
                    let entry = open.entry(t).or_insert_with(|| (c, Sealed::empty(t)));
                    for record in data.flat_map(|d| d.drain(..)) {
                        if failed {
                            continue;
                        }
                        if let Err(e) = push(&mut writer, &mut entry.1, record) {
                            *failure.lock() = Some(e);
                            failed = true;
                        }
                    }
                });
                if failed {
                    // Keep every capability: nothing from here on may be committed.
                    return;
                }
                let mut ready: Vec<u64> = open.keys().copied().filter(|t| !frontier.less_equal(t)).collect();
                ready.sort_unstable();
                for t in ready {
                    let Some((cap, mut sealed)) = open.remove(&t) else { continue };
                    match writer.seal(t) {
                        Ok(files) => {
                            sealed.files = files;
                            output.session(&cap).give(sealed);
                        }
                        Err(e) => {
                            *failure.lock() = Some(e.to_string());
                            failed = true;
                            open.insert(t, (cap, sealed));
                            return;
                        }
                    }
                }
            }
        })
    }
}

impl Sealed {
    fn empty(epoch: u64) -> Sealed {
        Sealed { epoch, files: Vec::new(), embedded: Vec::new(), rejected: Vec::new(), tokens: 0 }
    }
}

fn push(writer: &mut EpochWriter, sealed: &mut Sealed, record: Written) -> Result<(), String> {
    match record {
        Written::Row(row) => {
            writer.push_row(sealed.epoch, &row).map_err(|e| e.to_string())?;
            sealed.tokens += row.tokens as u64;
            sealed.embedded.push(row.doc.id);
        }
        Written::Reject(rej) => {
            writer.push_reject(sealed.epoch, &rej).map_err(|e| e.to_string())?;
            sealed.rejected.push((rej.doc.id, rej.reason));
        }
    }
    Ok(())
}
