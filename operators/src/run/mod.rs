//! The run engine: a run built from a resolved [`RunConfig`], with no flags and no environment.
//!
//! [`Engine::connect`] reaches MongoDB and the TEI endpoints; [`Engine::backfill`] embeds the
//! work queue once; [`Engine::continuous`] backfills and then follows the change stream until its
//! stop signal. Both recover from the checkpoint first (`crate::table::checkpoint`) and run passes of
//! one graph (`passes`); [`Engine::monitor`] hands progress displays and exporters what to read.
//!
//! ```no_run
//! use tweet_embed_operators::run::{Engine, MongoTarget, RunConfig};
//! let config = RunConfig::new(
//!     MongoTarget::tweets_at("mongodb://127.0.0.1:27017/?replicaSet=rs0"),
//!     vec!["http://127.0.0.1:18080".into()],
//!     std::path::Path::new("/data/tweet-embed"),
//! );
//! let summary = Engine::connect(config)?.backfill()?;
//! println!("{} embedded, {} rejected", summary.embedded, summary.rejected);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod autotune;
mod backfill;
mod cluster;
mod config;
mod continuous;
mod engine;
pub mod failure;
mod graph;
mod ids;
mod passes;
mod reset;
mod stall;
pub mod status;
mod written;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

pub use cluster::{is_peer_loss, peer_lost};
#[cfg(feature = "test-hooks")]
pub use config::TestHooks;
pub use config::{ClusterConfig, MongoTarget, RunConfig};
pub use continuous::Continuous;
pub use engine::{Engine, Monitor};

use crate::dataflow::epoch_clock::StopSignal;
use crate::run::failure::Failure;
use crate::table::checkpoint::{recover, Checkpoint, CheckpointStore, Ledger};
use crate::table::compaction::{CompactionSettings, Compactor};
use crate::table::output::schema::default_row_group_rows;
use passes::{execute, Leading, Planner};
use stall::StallWatch;

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Documents embedded and marked.
    pub embedded: u64,
    /// Documents rejected and marked.
    pub rejected: u64,
    /// Tokens embedded.
    pub tokens: u64,
    /// Epoch files committed into the staging directory.
    pub files: u64,
    /// Passes of the graph.
    pub passes: usize,
    /// Stale files removed at start.
    pub stale_removed: usize,
    /// Documents re-marked at start.
    pub remarked: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Deletions from the change stream recorded in `_deletions/`.
    pub deletions: u64,
    /// Rows of tweets inserted and deleted within one epoch, never written.
    pub cancelled: u64,
    /// Bytes the writers sealed into the staging directory (each row's first write).
    pub staged_bytes: u64,
    /// Compaction and deletions, as the run ended.
    pub compaction: crate::table::compaction::CompactionSnapshot,
    /// The type of the output's `id` column (on the leading process).
    pub id_type: Option<crate::table::output::IdType>,
    /// Of the rejected, documents whose `_id` does not fit the id column (strays).
    pub strays: u64,
    /// Real tokens over what a padded server computes for the requests this process sent
    /// ([`PoolStats::real_share`](crate::tei::PoolStats::real_share)); None if none was sent.
    pub real_share: Option<f64>,
}

impl Engine {
    /// The one-shot backfill: runs until the work queue is drained and everything is committed
    /// and marked. Errors: recovery failing, a pass that reads nothing of what remains, a write
    /// or marking failure, a lost cluster peer.
    pub fn backfill(self) -> Result<Summary> {
        self.drive(false, None, |engine, _ledger| Ok(backfill::backfill_planner(engine)))
    }

    /// Continuous mode: the work queue (unless `options` skip it) and the change stream, until
    /// `stop`; then the epochs in flight are committed and marked.
    pub fn continuous(self, options: Continuous, stop: StopSignal) -> Result<Summary> {
        // Without a stream the run ends when the work queue is drained, as a backfill does.
        // Without a stream the run is a backfill that rescans: no file ages out mid-run.
        let follows = options.stream;
        // Only a run that follows the stream waits for an empty collection's first document;
        // without one it ends when the (empty) queue is drained, as a backfill does.
        let waits = follows.then(|| stop.clone());
        self.drive(follows, waits, move |engine, ledger| {
            Ok(continuous::continuous_planner(options, engine, ledger.clone(), stop))
        })
    }

    /// Recovers, starts the compactor (leading process), runs the passes, and at the end stops
    /// the compactor. A run that ends well compacts everything staged (the tail, below target)
    /// so its rows are visible; a failed one leaves them staged and listed for the next run.
    /// With `follows` (continuous mode) staged files older than `--max-file-age` are compacted
    /// as the run goes.
    /// `stop` ends the wait for a first document on an empty collection (`ids::settle`).
    fn drive(
        self,
        follows: bool,
        stop: Option<StopSignal>,
        planner: impl FnOnce(Arc<Engine>, &Ledger) -> Result<Planner>,
    ) -> Result<Summary> {
        let started = Instant::now();
        let engine = Arc::new(self);
        let mut summary = Summary::default();
        let mut _watch = None;
        let failure = Failure::default();
        let mut compactor = None;
        let leading = if engine.config.cluster.leads() {
            let config = &engine.config;
            let store = CheckpointStore::open(&config.state_dir)?;
            let staging = config.staging_dir();
            // Before recovery marks or removes anything: the output must hold vectors like ours.
            let identity = engine.identity();
            let mut adopt = false;
            if let Some(cp) = store.load()? {
                if let Some(recorded) = cp.identity() {
                    if let Err(refusal) = identity.check(&recorded, &config.out.display().to_string()) {
                        if !written::Holdings::of(&cp, &config.out)?.vectors {
                            // Only rejections (a wrong --text-field, requeued): no vector to mix with.
                            tracing::warn!(
                                recorded = %recorded.summary(),
                                now = %identity.summary(),
                                "the output holds no vector yet: this run's settings replace the identity recorded for it"
                            );
                            adopt = true;
                        } else if !config.reset_output {
                            anyhow::bail!(refusal);
                        } else {
                            reset::reset_output(&engine, &store, &staging)?;
                        }
                    }
                }
            }
            ids::refuse_another(&store, config.id_type, &config.out)?;
            let (recovered, ledger) = recover(&store, &config.out, &staging, &engine.marker, engine.runtime.handle())?;
            summary.stale_removed = recovered.stale_removed;
            summary.remarked = recovered.remarked;
            // Everything up to the checkpoint is committed and marked now.
            engine.totals.committed_epoch.fetch_max(recovered.committed, Ordering::SeqCst);
            engine.clock.advance_to(recovered.committed);
            _watch = Some(StallWatch::start(engine.monitor(), config.stall_warn_every));
            if adopt {
                ledger.set_identity(None)?;
            } else if ledger.read(|cp| !cp.has_identity() && cp.committed() > 0) {
                tracing::warn!(
                    identity = %identity.summary(),
                    "this output was written before datasets recorded how their vectors were made: recording this \
                     run's settings as its identity (they cannot be checked against the earlier rows)"
                );
            }
            if !ledger.read(Checkpoint::has_identity) {
                ledger.set_identity(Some(identity.clone()))?;
            }
            let id_type = ids::settle(&engine, &ledger, stop.as_ref())?;
            summary.id_type = Some(id_type);
            // The id column's type is part of how the dataset is made: one `settle` chose without
            // recording it (an empty collection) is recorded now.
            if ledger.read(|cp| cp.id_type().is_none()) {
                ledger.set_id_type(id_type)?;
            }
            let settings = CompactionSettings {
                out: config.out.clone(),
                staging,
                target_file_bytes: config.target_file_bytes,
                max_file_age: follows.then_some(config.max_file_age),
                row_group_rows: default_row_group_rows(engine.pool.dim()),
                delete_within: config.delete_within,
                #[cfg(feature = "test-hooks")]
                pause: config.hooks.compaction_pause,
            };
            compactor = Some(Compactor::start(ledger.clone(), settings, engine.compaction.clone(), failure.clone()));
            let planner = planner(engine.clone(), &ledger)?;
            Some(Leading { ledger, planner })
        } else {
            None
        };
        let passes = execute(&engine, leading, failure);
        // A failed run leaves the staged files listed; the next run compacts them.
        let ended = compactor.map(|c| c.finish(passes.is_ok()));
        summary.passes = passes?;
        if let Some(ended) = ended {
            ended?;
        }
        summary.compaction = engine.compaction.snapshot();
        summary.staged_bytes = engine.output_stats.snapshot().bytes_sealed;
        let t = &engine.totals;
        summary.embedded = t.embedded.load(Ordering::Relaxed);
        summary.rejected = t.rejected.load(Ordering::Relaxed);
        summary.strays = t.strays.load(Ordering::Relaxed);
        summary.tokens = t.tokens.load(Ordering::Relaxed);
        summary.files = t.files.load(Ordering::Relaxed);
        summary.deletions = t.deletions.load(Ordering::Relaxed);
        summary.cancelled = t.cancelled.load(Ordering::Relaxed);
        summary.real_share = engine.pool.stats().real_share();
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}
