//! Graph assembly and the backfill run: connects to MongoDB and the TEI endpoints, recovers from
//! the checkpoint (stale files removed, `(marked, committed]` re-marked), then runs passes of the
//! dataflow — work-queue source → dedup → token batcher → TEI sink → Parquet sink → committer —
//! until the work queue is empty.
//!
//! It owns the order of start-up and recovery; the protocol itself lives in the operators.

use crate::config::PipelineArgs;
use anyhow::{anyhow, bail, Context, Result};
use mongodb::bson::{doc, Document};
use mongodb::Client;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::ProbeHandle;
use tweet_embed_operators::change_stream_source::{ChangeStreamSource, StreamFeed};
use tweet_embed_operators::commit::{Commit, CommitTotals, Committer};
use tweet_embed_operators::dedup::{Dedup, TokenCounter};
use tweet_embed_operators::embed_sink::{EmbedSink, Embedder};
use tweet_embed_operators::epoch_clock::{EpochClock, StopSignal};
use tweet_embed_operators::id_gate::IdGate;
use tweet_embed_operators::marker::Marker;
use tweet_embed_operators::output::{
    list_files, read_rejects, read_row_ids, remove_stale, Checkpoint, CheckpointStore, EpochWriter, FileKind,
    OutputConfig, OutputStats, SourcePositions,
};
use tweet_embed_operators::parquet_sink::{Failure, ParquetSink};
use tweet_embed_operators::tei::PackLimits;
use tweet_embed_operators::timely;
use tweet_embed_operators::token_batch::TokenBatch;
use tweet_embed_operators::work_queue::WorkQueue;
use tweet_embed_operators::work_queue_source::{SourcePacing, WorkQueueSource};

/// Documents per worker after which an epoch closes even before the checkpoint interval: every
/// open epoch holds its rows in the writer until it is sealed, so this bounds memory (about 30 MiB
/// of 768-float rows per epoch per worker) at the price of smaller files.
const EPOCH_DOCS: usize = 10_000;

/// Vectors of recent texts each worker keeps, so recurring texts are embedded once: about
/// 12 MiB of 768-float vectors per worker.
const VECTOR_CACHE: usize = 4_096;

/// What a backfill did.
#[derive(Debug, Clone, Default)]
pub struct BackfillSummary {
    /// Documents embedded and marked.
    pub embedded: u64,
    /// Documents rejected and marked.
    pub rejected: u64,
    /// Tokens embedded.
    pub tokens: u64,
    /// Parquet files committed.
    pub files: u64,
    /// Passes over the work queue.
    pub passes: usize,
    /// Stale files removed at start.
    pub stale_removed: usize,
    /// Documents re-marked at start.
    pub remarked: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// What one pass of the dataflow reads.
pub(crate) struct PassPlan {
    /// Scan the work queue: `Some(whole_partitions)` (one worker per partition after the first
    /// pass, when the queue is small), or no scan.
    pub scan: Option<bool>,
    /// Follow this change stream, already opened.
    pub stream: Option<StreamFeed>,
    /// Stops the pass's sources (a signal, or a stream that lost its history).
    pub stop: StopSignal,
}

impl BackfillSummary {
    /// Copies the committed totals into the summary, with the time since `started`.
    pub(crate) fn take_totals(&mut self, totals: &CommitTotals, started: Instant) {
        self.embedded = totals.embedded.load(Ordering::Relaxed);
        self.rejected = totals.rejected.load(Ordering::Relaxed);
        self.tokens = totals.tokens.load(Ordering::Relaxed);
        self.files = totals.files.load(Ordering::Relaxed);
        self.elapsed = started.elapsed();
    }
}

/// Connections and shared components of one run.
pub(crate) struct Run {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) queue: WorkQueue,
    pub(crate) marker: Marker,
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) counter: TokenCounter,
    pub(crate) limits: PackLimits,
    pub(crate) in_flight: usize,
    pub(crate) dim: usize,
    pub(crate) model_id: String,
    pub(crate) pool: Arc<tweet_embed_operators::tei::EndpointPool>,
    pub(crate) output_stats: Arc<OutputStats>,
}

/// Runs the one-shot backfill until the work queue is drained and everything is committed and
/// marked.
pub fn backfill(args: &PipelineArgs) -> Result<BackfillSummary> {
    let started = Instant::now();
    args.validate()?;
    let run = connect(args)?;
    let store = CheckpointStore::open(&args.state_dir)?;
    let mut summary = BackfillSummary::default();
    recover(args, &run, &store, &mut summary)?;
    let totals = Arc::new(CommitTotals::default());
    let _metrics = serve_metrics(args, &run, &totals)?;
    let mut last_done = 0;
    loop {
        let parts = run.runtime.block_on(run.queue.partitions()).context("reading the work queue's partitions")?;
        if parts.is_empty() {
            break;
        }
        summary.passes += 1;
        let plan = PassPlan { scan: Some(summary.passes > 1), stream: None, stop: StopSignal::default() };
        run_pass(args, &run, &store, &totals, plan)?;
        let done = totals.embedded.load(Ordering::Relaxed) + totals.rejected.load(Ordering::Relaxed);
        let remaining = run.runtime.block_on(run.queue.remaining()).context("counting the work queue")?;
        if remaining == 0 {
            break;
        }
        if done == last_done {
            bail!("{remaining} documents remain in the work queue but this pass read none of them");
        }
        last_done = done;
    }
    summary.take_totals(&totals, started);
    Ok(summary)
}

/// The Prometheus exporter, when `--metrics-addr` asks for one.
pub(crate) fn serve_metrics(
    args: &PipelineArgs,
    run: &Run,
    totals: &Arc<CommitTotals>,
) -> Result<Option<crate::metrics::MetricsServer>> {
    let Some(addr) = args.metrics_addr else { return Ok(None) };
    let sources = crate::metrics::MetricSources {
        totals: totals.clone(),
        output: run.output_stats.clone(),
        pool: run.pool.clone(),
    };
    crate::metrics::serve(run.runtime.handle(), addr, sources).map(Some)
}

pub(crate) fn connect(args: &PipelineArgs) -> Result<Run> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tweet-embed-io")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (queue, pool) = runtime.block_on(async {
        let client = Client::with_uri_str(&args.mongo.mongo_uri).await.map_err(|e| anyhow!("bad --mongo-uri: {e}"))?;
        let db = client.database(&args.mongo.db);
        tokio::time::timeout(Duration::from_secs(30), db.run_command(doc! {"ping": 1}))
            .await
            .map_err(|_| anyhow!("MongoDB is not reachable at --mongo-uri (no answer in 30 s)"))?
            .map_err(|e| anyhow!("MongoDB is not reachable at --mongo-uri: {e}"))?;
        let queue = WorkQueue {
            coll: db.collection::<Document>(&args.mongo.collection),
            text_field: args.text_field.clone(),
            mark_field: args.mark_field.clone(),
            langs: args.lang.clone(),
            classified: args.classified,
        };
        queue.check_index().await.map_err(|e| anyhow!(e))?;
        let pool = crate::tei::connect_pool(args).await?;
        Ok::<_, anyhow::Error>((queue, pool))
    })?;
    let marker = Marker { coll: queue.coll.clone(), mark_field: args.mark_field.clone() };
    let p = crate::tei::graph_parts(args, pool.clone());
    Ok(Run {
        runtime,
        queue,
        marker,
        embedder: p.embedder,
        counter: p.counter,
        limits: p.limits,
        in_flight: p.in_flight,
        dim: p.dim,
        model_id: p.model_id,
        pool,
        output_stats: Arc::new(OutputStats::default()),
    })
}

/// The checkpoint, or a fresh one when none exists yet — but never over an output directory that
/// already holds our files: without a checkpoint they cannot be told committed from stale.
pub(crate) fn load_or_new(args: &PipelineArgs, store: &CheckpointStore) -> Result<Checkpoint> {
    if let Some(cp) = store.load()? {
        return Ok(cp);
    }
    let found = list_files(&args.out)?;
    if !found.is_empty() {
        bail!(
            "{} holds {} tweet-embed files but {} has no checkpoint: use the --state-dir of the run that wrote them, or a new --out",
            args.out.display(),
            found.len(),
            args.state_dir.display()
        );
    }
    Ok(Checkpoint::new(0, 0, Vec::new(), SourcePositions::default()))
}

/// Start-up recovery: remove files written after the last commit, re-mark `(marked, committed]`.
pub(crate) fn recover(
    args: &PipelineArgs,
    run: &Run,
    store: &CheckpointStore,
    summary: &mut BackfillSummary,
) -> Result<()> {
    let mut cp = load_or_new(args, store)?;
    let removed = remove_stale(&args.out, cp.committed)?;
    summary.stale_removed = removed.len();
    if !removed.is_empty() {
        tracing::info!(files = removed.len(), committed = cp.committed, "removed files of uncommitted epochs");
    }
    if cp.marked < cp.committed {
        let (mut embedded, mut rejected) = (Vec::new(), Vec::new());
        for f in &cp.files {
            let path = args.out.join(&f.path);
            match f.kind {
                FileKind::Rows => {
                    embedded.extend(read_row_ids(&path)?.into_iter().filter(|(_, e)| *e > cp.marked).map(|(id, _)| id))
                }
                FileKind::Rejects => rejected.extend(
                    read_rejects(&path)?
                        .into_iter()
                        .filter(|(_, _, e)| *e > cp.marked)
                        .map(|(id, reason, _)| (id, reason)),
                ),
            }
        }
        let marked =
            run.runtime.block_on(run.marker.mark(&embedded, &rejected)).context("re-marking committed epochs")?;
        summary.remarked = marked.embedded + marked.rejected;
        tracing::info!(
            from = cp.marked + 1,
            to = cp.committed,
            documents = summary.remarked,
            "re-marked committed epochs"
        );
        cp.marked = cp.committed;
        cp.files.clear();
        store.save(&cp)?;
    }
    Ok(())
}

/// Runs the dataflow once: until the scan is done and (with a stream) a stop is asked for.
pub(crate) fn run_pass(
    args: &PipelineArgs,
    run: &Run,
    store: &CheckpointStore,
    totals: &Arc<CommitTotals>,
    plan: PassPlan,
) -> Result<()> {
    let checkpoint = load_or_new(args, store)?;
    let start_epoch = checkpoint.committed + 1;
    let streaming = plan.stream.is_some();
    let positions = plan.stream.as_ref().map(|f| f.positions.clone());
    let feed = Arc::new(Mutex::new(plan.stream));
    let (stop, clock) = (plan.stop, EpochClock::new(start_epoch));
    // One scan plan for all workers, taken after the stream was opened (the caller opened it).
    let plan = match plan.scan {
        Some(whole) => Some(run.runtime.block_on(run.queue.plan(whole)).context("planning the work-queue scan")?),
        None => None,
    };
    let plan = Arc::new(plan);
    let failure: Failure = Arc::new(Mutex::new(None));
    let committer = Arc::new(Mutex::new(Some(Committer {
        store: store.clone(),
        checkpoint,
        marker: run.marker.clone(),
        runtime: run.runtime.handle().clone(),
        totals: totals.clone(),
        failure: failure.clone(),
        crash_after_commit: std::env::var("TWEET_EMBED_CRASH_AFTER_COMMIT").ok().and_then(|v| v.parse().ok()),
        commits: 0,
        positions,
    })));
    let shared = Arc::new((
        run.queue.clone(),
        run.embedder.clone(),
        run.counter.clone(),
        run.runtime.handle().clone(),
        (
            args.out.clone(),
            args.tmp_dir(),
            run.dim,
            run.model_id.clone(),
            args.target_file_bytes,
            run.output_stats.clone(),
        ),
    ));
    let (limits, in_flight, interval) = (run.limits, run.in_flight, args.checkpoint_interval);
    let fail = failure.clone();
    let gate_totals = totals.clone();
    let config = timely::Config::process(args.workers);
    let guards = timely::execute(config, move |worker| {
        let (queue, embedder, counter, rt, out) = &*shared;
        let (index, peers) = (worker.index(), worker.peers());
        let ranges = (*plan).as_ref().map(|p| p.ranges_for(index, peers)).unwrap_or_default();
        let (out_dir, tmp_dir, dim, model_id, target, stats) = out;
        let mut cfg = OutputConfig::new(out_dir.clone(), tmp_dir.clone(), index, *dim, model_id);
        cfg.target_file_bytes = *target;
        cfg.stats = stats.clone();
        let writer = match EpochWriter::new(cfg) {
            Ok(w) => w,
            Err(e) => {
                *fail.lock() = Some(e.to_string());
                return;
            }
        };
        // The committer and the change stream live on worker 0: the stream's positions reach
        // the checkpoint through memory, not through the graph.
        let (committer, feed) = if index == 0 { (committer.lock().take(), feed.lock().take()) } else { (None, None) };
        let probe = ProbeHandle::new();
        let mut pacing = SourcePacing::new(start_epoch, interval, EPOCH_DOCS, probe.clone());
        pacing.clock = clock.clone();
        pacing.stop = stop.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let scanned = scope.work_queue_source(queue.clone(), ranges, rt.clone(), pacing.clone());
            let candidates = if streaming {
                let streamed = scope.change_stream_source(feed, rt.clone(), pacing);
                // Two sources can read one document: the gate lets it through once.
                scanned.concat(streamed).id_gate(queue.clone(), rt.clone(), gate_totals.clone())
            } else {
                scanned
            };
            candidates
                .dedup(counter.clone())
                .token_batch(limits)
                .embed_sink(embedder.clone(), rt.clone(), in_flight, VECTOR_CACHE)
                .parquet_sink(writer, fail.clone())
                .probe_with(&probe)
                .commit(committer);
        });
        while worker.step_or_park(Some(Duration::from_millis(20))) {
            if fail.lock().is_some() {
                // The run stops with the failure; the checkpoint is as the last commit left it.
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
                return;
            }
        }
    })
    .map_err(|e| anyhow!("starting the workers: {e}"))?;
    let progress = crate::progress::Reporter::start(crate::progress::ProgressSources {
        totals: totals.clone(),
        pool: Some(run.pool.clone()),
        queue: Some((run.queue.clone(), run.runtime.handle().clone())),
    });
    let joined = guards.join();
    progress.stop();
    for r in joined {
        r.map_err(|e| anyhow!("a worker failed: {e}"))?;
    }
    if let Some(e) = failure.lock().take() {
        bail!(e);
    }
    Ok(())
}

/// Prints the one-screen summary of a backfill or run (`what`).
pub fn print_summary(what: &str, s: &BackfillSummary, args: &PipelineArgs) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!("{what} done in {:.1} s ({} pass{})", secs, s.passes, if s.passes == 1 { "" } else { "es" });
    println!("  documents embedded : {}", s.embedded);
    println!("  documents rejected : {} (see {}/_rejects)", s.rejected, args.out.display());
    println!(
        "  throughput         : {:.0} docs/s, {:.0} tok/s",
        (s.embedded + s.rejected) as f64 / secs,
        s.tokens as f64 / secs
    );
    println!("  files committed    : {} in {}", s.files, args.out.display());
    if s.stale_removed > 0 || s.remarked > 0 {
        println!("  recovery           : {} stale files removed, {} documents re-marked", s.stale_removed, s.remarked);
    }
}
