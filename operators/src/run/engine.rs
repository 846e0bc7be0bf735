//! [`Engine`]: one run's connections and shared components. `connect` reaches MongoDB (and
//! checks the work-queue index) and every TEI endpoint; what progress displays and exporters read
//! is its [`Monitor`]. The entry points (`backfill`, `continuous`) are the parent module's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use mongodb::bson::{doc, Document};
use mongodb::Client;

use super::config::RunConfig;
use crate::dataflow::epoch_clock::EpochClock;
use crate::mongo::error::{describe, MongoRetry, Waits};
use crate::mongo::marker::Marker;
use crate::mongo::work_queue::WorkQueue;
use crate::table::checkpoint::{CommitTotals, StateLock};
use crate::table::compaction::CompactionStats;
use crate::table::output::OutputStats;
use crate::tei::EndpointPool;

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
    /// Compaction and deletion counters (they move on the leading process only).
    pub compaction: Arc<CompactionStats>,
    /// The epoch the sources are at.
    pub clock: EpochClock,
    /// MongoDB operations waiting out an error that heals.
    pub waits: Waits,
    /// How long the run has made no progress while work remains ([`Monitor::stalled_seconds`]).
    pub(crate) stalled_ms: Arc<std::sync::atomic::AtomicU64>,
}

/// A connected run.
pub struct Engine {
    pub(crate) config: RunConfig,
    pub(crate) queue: WorkQueue,
    pub(crate) marker: Marker,
    pub(crate) pool: Arc<EndpointPool>,
    pub(crate) output_stats: Arc<OutputStats>,
    pub(crate) compaction: Arc<CompactionStats>,
    pub(crate) totals: Arc<CommitTotals>,
    pub(crate) clock: EpochClock,
    pub(crate) stalled_ms: Arc<std::sync::atomic::AtomicU64>,
    /// This run's hold on its state directory, released when the engine is dropped.
    pub(crate) _lock: StateLock,
    /// Shared with whoever holds [`Engine::keep_runtime`]: a progress display still counting
    /// when the run ends must not call into a runtime being torn down (the driver panics).
    /// Declared last, so dropped last: the MongoDB client in `queue` and `marker` ends its
    /// sessions when dropped, through this runtime (mongodb 3.9 panics with a `SendError` in
    /// `connection_requester.rs` when the runtime went first, which printed a panic under a
    /// refused run's one error line).
    pub(crate) runtime: Arc<tokio::runtime::Runtime>,
}

/// How long the start's ping may go unanswered before the run says it waits for MongoDB.
const MONGO_SILENT_FOR: Duration = Duration::from_secs(2);

impl Engine {
    /// Locks the state directory (a second run on it is refused, naming the holder: see
    /// `crate::table::checkpoint::StateLock`), then connects: MongoDB within 30 s with the work-queue
    /// index present, then every TEI endpoint (one model, one dimension). Errors name what to
    /// fix; URIs are never in them.
    pub fn connect(config: RunConfig) -> Result<Engine> {
        config.validate()?;
        // Before anything reads or removes a file of the run, and before any connection.
        let lock = StateLock::acquire(&config.state_dir).map_err(|e| anyhow!(e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tweet-embed-io")
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let (queue, pool) = runtime.block_on(async {
            let client = Client::with_uri_str(&config.mongo.uri)
                .await
                .map_err(|e| anyhow!("bad --mongo-uri: {}", describe(&e)))?;
            let db = client.database(&config.mongo.db);
            let uri = crate::tei::redact(&config.mongo.uri);
            let ping = tokio::time::timeout(Duration::from_secs(30), db.run_command(doc! {"ping": 1}));
            tokio::pin!(ping);
            // Say at once what the start waits for, not after 30 s of silence.
            let answered = tokio::select! {
                answered = &mut ping => answered,
                _ = tokio::time::sleep(MONGO_SILENT_FOR) => {
                    tracing::warn!(
                        uri = %uri,
                        "MongoDB does not answer yet (a ping at start, through server selection); waiting up to 30 s"
                    );
                    ping.await
                }
            };
            answered
                .map_err(|_| anyhow!("MongoDB is not reachable at {uri} (no answer in 30 s)"))?
                .map_err(|e| anyhow!("MongoDB is not reachable at {uri}: {}", describe(&e)))?;
            let queue = WorkQueue {
                coll: db.collection::<Document>(&config.mongo.collection),
                text_field: config.text_field.clone(),
                mark_field: config.mark_field.clone(),
                langs: config.langs.clone(),
                classified: config.classified,
                retry: MongoRetry { waits: Waits::default(), policy: config.mongo_retry },
            };
            queue.check_index().await.map_err(|e| anyhow!(e))?;
            let pool = EndpointPool::connect(config.tei.clone()).await.map_err(|e| anyhow!("{e}"))?;
            Ok::<_, anyhow::Error>((queue, Arc::new(pool)))
        })?;
        let marker =
            Marker { coll: queue.coll.clone(), mark_field: config.mark_field.clone(), retry: queue.retry.clone() };
        Ok(Engine {
            config,
            runtime: Arc::new(runtime),
            queue,
            marker,
            pool,
            output_stats: Arc::new(OutputStats::default()),
            compaction: Arc::default(),
            totals: Arc::new(CommitTotals::default()),
            clock: EpochClock::new(0),
            stalled_ms: Arc::default(),
            _lock: lock,
        })
    }

    /// How this run's vectors are made: its servers' model, revision and dimension, its
    /// embedding options, text and mark fields.
    pub fn identity(&self) -> crate::table::identity::DatasetIdentity {
        let limits = self.pool.limits();
        crate::table::identity::DatasetIdentity::new(
            &limits.model_id,
            limits.model_sha.as_deref(),
            self.pool.dim(),
            self.pool.options(),
            &self.config.text_field,
            &self.config.mark_field,
        )
    }

    /// The runtime, kept alive for as long as the returned value is held, even after the engine
    /// is gone: hold it while a [`Monitor`] is still read (a progress display, an exporter), and
    /// drop it last, outside any async context.
    pub fn keep_runtime(&self) -> Arc<tokio::runtime::Runtime> {
        self.runtime.clone()
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
            compaction: self.compaction.clone(),
            clock: self.clock.clone(),
            waits: self.queue.retry.waits.clone(),
            stalled_ms: self.stalled_ms.clone(),
        }
    }
}
