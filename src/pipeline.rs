//! The backfill run: connects to MongoDB and the TEI endpoints, recovers from the checkpoint
//! (stale files removed, `(marked, committed]` re-marked), then runs passes of the dataflow
//! ([`crate::pass`]) until the work queue is empty.
//!
//! It owns the order of start-up and recovery; the graph is the pass's, the protocol the
//! operators'.

use crate::config::PipelineArgs;
use crate::pass::{execute_run, follow, Leading, PassPlan, Planner};
use anyhow::{anyhow, bail, Context, Result};
use mongodb::bson::{doc, Document};
use mongodb::Client;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tweet_embed_operators::commit::CommitTotals;
use tweet_embed_operators::dedup::TokenCounter;
use tweet_embed_operators::embed_sink::Embedder;
use tweet_embed_operators::epoch_clock::StopSignal;
use tweet_embed_operators::marker::Marker;
use tweet_embed_operators::output::{
    list_files, read_rejects, read_row_ids, remove_stale, Checkpoint, CheckpointStore, FileKind, OutputStats,
    SourcePositions,
};
use tweet_embed_operators::tei::PackLimits;
use tweet_embed_operators::work_queue::WorkQueue;

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
    if !args.cluster.leads() {
        let passes = follow(args)?;
        return Ok(BackfillSummary { passes, elapsed: started.elapsed(), ..BackfillSummary::default() });
    }
    let run = Arc::new(connect(args)?);
    let store = CheckpointStore::open(&args.state_dir)?;
    let mut summary = BackfillSummary::default();
    recover(args, &run, &store, &mut summary)?;
    let totals = Arc::new(CommitTotals::default());
    let _metrics = serve_metrics(args, &run, &totals)?;
    let planner = backfill_planner(run.clone(), totals.clone());
    summary.passes = execute_run(args, &run, &totals, Some(Leading { store, planner }))?;
    summary.take_totals(&totals, started);
    Ok(summary)
}

/// The backfill's passes: another while the work queue has documents, each after the first over
/// whole partitions; an error if a pass read none of what remains.
fn backfill_planner(run: Arc<Run>, totals: Arc<CommitTotals>) -> Planner {
    let (mut passes, mut last_done) = (0usize, 0u64);
    Box::new(move || {
        if passes > 0 {
            let done = totals.embedded.load(Ordering::Relaxed) + totals.rejected.load(Ordering::Relaxed);
            let remaining = run.runtime.block_on(run.queue.remaining()).context("counting the work queue")?;
            if remaining == 0 {
                return Ok(None);
            }
            if done == last_done {
                bail!("{remaining} documents remain in the work queue but this pass read none of them");
            }
            last_done = done;
        }
        let parts = run.runtime.block_on(run.queue.partitions()).context("reading the work queue's partitions")?;
        if parts.is_empty() {
            return Ok(None);
        }
        passes += 1;
        Ok(Some(PassPlan { scan: Some(passes > 1), stream: None, stop: StopSignal::default() }))
    })
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

/// Prints the one-screen summary of a backfill or run (`what`).
pub fn print_summary(what: &str, s: &BackfillSummary, args: &PipelineArgs) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    if !args.cluster.leads() {
        println!(
            "{what}: process {} followed process 0 for {} pass{} in {:.1} s; its summary has the totals",
            args.cluster.process,
            s.passes,
            if s.passes == 1 { "" } else { "es" },
            secs
        );
        return;
    }
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
