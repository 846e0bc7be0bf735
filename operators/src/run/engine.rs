//! [`Engine`]: one run's connections and shared components, and its entry points. `connect`
//! reaches MongoDB (and checks the work-queue index) and every TEI endpoint; `backfill` and
//! `continuous` recover from the checkpoint (on the leading process) and run passes of the graph
//! until the run is over. A process that follows a cluster's leader runs whatever passes it is
//! handed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use mongodb::bson::{doc, Document};
use mongodb::Client;

use super::config::RunConfig;
use super::continuous::{continuous_planner, Continuous};
use super::passes::{execute, Leading};
use crate::checkpoint::{recover, CheckpointStore, CommitTotals};
use crate::epoch_clock::StopSignal;
use crate::marker::Marker;
use crate::output::OutputStats;
use crate::tei::EndpointPool;
use crate::work_queue::WorkQueue;

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Documents embedded and marked.
    pub embedded: u64,
    /// Documents rejected and marked.
    pub rejected: u64,
    /// Tokens embedded.
    pub tokens: u64,
    /// Parquet files committed.
    pub files: u64,
    /// Passes of the graph.
    pub passes: usize,
    /// Stale files removed at start.
    pub stale_removed: usize,
    /// Documents re-marked at start.
    pub remarked: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// What progress displays and metrics exporters read while a run goes on. Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    /// Committed totals (the summary comes from the same counters).
    pub totals: Arc<CommitTotals>,
    /// The TEI endpoint pool.
    pub pool: Arc<EndpointPool>,
    /// The work queue, to count what remains.
    pub queue: WorkQueue,
    /// A runtime handle to count it on.
    pub runtime: tokio::runtime::Handle,
    /// Parquet writer counters.
    pub output: Arc<OutputStats>,
}

/// A connected run.
pub struct Engine {
    pub(crate) config: RunConfig,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) queue: WorkQueue,
    pub(crate) marker: Marker,
    pub(crate) pool: Arc<EndpointPool>,
    pub(crate) output_stats: Arc<OutputStats>,
    pub(crate) totals: Arc<CommitTotals>,
}

impl Engine {
    /// Connects: MongoDB within 30 s with the work-queue index present, then every TEI endpoint
    /// (one model, one dimension). Errors name what to fix; URIs are never in them.
    pub fn connect(config: RunConfig) -> Result<Engine> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tweet-embed-io")
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let (queue, pool) = runtime.block_on(async {
            let client = Client::with_uri_str(&config.mongo.uri).await.map_err(|e| anyhow!("bad --mongo-uri: {e}"))?;
            let db = client.database(&config.mongo.db);
            tokio::time::timeout(Duration::from_secs(30), db.run_command(doc! {"ping": 1}))
                .await
                .map_err(|_| anyhow!("MongoDB is not reachable at --mongo-uri (no answer in 30 s)"))?
                .map_err(|e| anyhow!("MongoDB is not reachable at --mongo-uri: {e}"))?;
            let queue = WorkQueue {
                coll: db.collection::<Document>(&config.mongo.collection),
                text_field: config.text_field.clone(),
                mark_field: config.mark_field.clone(),
                langs: config.langs.clone(),
                classified: config.classified,
            };
            queue.check_index().await.map_err(|e| anyhow!(e))?;
            let pool = EndpointPool::connect(config.tei.clone()).await.map_err(|e| anyhow!("{e}"))?;
            Ok::<_, anyhow::Error>((queue, Arc::new(pool)))
        })?;
        let marker = Marker { coll: queue.coll.clone(), mark_field: config.mark_field.clone() };
        Ok(Engine {
            config,
            runtime,
            queue,
            marker,
            pool,
            output_stats: Arc::new(OutputStats::default()),
            totals: Arc::new(CommitTotals::default()),
        })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// What progress and metrics read. Only the leading process commits, so only its totals move.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            totals: self.totals.clone(),
            pool: self.pool.clone(),
            queue: self.queue.clone(),
            runtime: self.runtime.handle().clone(),
            output: self.output_stats.clone(),
        }
    }

    /// The one-shot backfill: runs until the work queue is drained and everything is committed
    /// and marked. Errors: recovery failing, a pass that reads nothing of what remains, a write
    /// or marking failure, a lost cluster peer.
    pub fn backfill(self) -> Result<Summary> {
        self.drive(|engine, _store| Ok(super::backfill::backfill_planner(engine)))
    }

    /// Continuous mode: the work queue (unless `options` skip it) and the change stream, until
    /// `stop`; then the epochs in flight are committed and marked.
    pub fn continuous(self, options: Continuous, stop: StopSignal) -> Result<Summary> {
        self.drive(move |engine, store| Ok(continuous_planner(options, engine, store.clone(), stop)))
    }

    fn drive(
        self,
        planner: impl FnOnce(Arc<Engine>, &CheckpointStore) -> Result<super::passes::Planner>,
    ) -> Result<Summary> {
        let started = Instant::now();
        let engine = Arc::new(self);
        let mut summary = Summary::default();
        let leading = if engine.config.cluster.leads() {
            let store = CheckpointStore::open(&engine.config.state_dir)?;
            let recovered = recover(&store, &engine.config.out, &engine.marker, engine.runtime.handle())?;
            summary.stale_removed = recovered.stale_removed;
            summary.remarked = recovered.remarked;
            let planner = planner(engine.clone(), &store)?;
            Some(Leading { store, planner })
        } else {
            None
        };
        summary.passes = execute(&engine, leading)?;
        let t = &engine.totals;
        summary.embedded = t.embedded.load(Ordering::Relaxed);
        summary.rejected = t.rejected.load(Ordering::Relaxed);
        summary.tokens = t.tokens.load(Ordering::Relaxed);
        summary.files = t.files.load(Ordering::Relaxed);
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}
