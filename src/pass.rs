//! The passes of a run: the graph — work-queue source (+ change-stream source and `IdGate` when
//! streaming) → dedup → token batcher → TEI sink → Parquet sink → committer — built on every
//! worker of this process (and of the cluster's other processes) once per pass, in one timely
//! computation for the whole run.
//!
//! It owns the worker side: asking the planner for the next pass (worker 0 of process 0), handing
//! its start to every worker, building and stepping the graph, and stopping on a failure. What a
//! pass reads and when the run ends is the planner's (`pipeline::backfill`, `run::run`); the
//! protocol lives in the operators.

use crate::config::PipelineArgs;
use crate::pipeline::{connect, load_or_new, serve_metrics, Run};
use anyhow::{anyhow, bail, Context, Result};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::ProbeHandle;
use tweet_embed_operators::change_stream_source::{ChangeStreamSource, StreamFeed};
use tweet_embed_operators::commit::{Commit, CommitTotals, Committer};
use tweet_embed_operators::dedup::Dedup;
use tweet_embed_operators::embed_sink::EmbedSink;
use tweet_embed_operators::epoch_clock::{EpochClock, StopSignal};
use tweet_embed_operators::id_gate::IdGate;
use tweet_embed_operators::output::{CheckpointStore, EpochWriter, OutputConfig};
use tweet_embed_operators::parquet_sink::{Failure, ParquetSink};
use tweet_embed_operators::pass_control::{agree, PassRelay, PassStart};
use tweet_embed_operators::timely;
use tweet_embed_operators::timely::worker::Worker;
use tweet_embed_operators::token_batch::TokenBatch;
use tweet_embed_operators::work_queue::ScanPlan;
use tweet_embed_operators::work_queue_source::{SourcePacing, WorkQueueSource};

/// Documents per worker after which an epoch closes even before the checkpoint interval: every
/// open epoch holds its rows in the writer until it is sealed, so this bounds memory (about 30 MiB
/// of 768-float rows per epoch per worker) at the price of smaller files.
const EPOCH_DOCS: usize = 10_000;

/// Vectors of recent texts each worker keeps, so recurring texts are embedded once: about
/// 12 MiB of 768-float vectors per worker, and 1.5 MiB more for the window of texts seen once.
const VECTOR_CACHE: usize = 4_096;

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

/// Decides the passes of a run, on worker 0 of process 0: called before each pass (and so after
/// the one before it has committed everything), it returns what the next pass reads, or `None`
/// when the run is over.
pub(crate) type Planner = Box<dyn FnMut() -> Result<Option<PassPlan>> + Send>;

/// What the leading process brings to a run: the checkpoint and the planner.
pub(crate) struct Leading {
    pub store: CheckpointStore,
    pub planner: Planner,
}

/// A follower of a cluster: connects, then runs each pass the leading process starts until it
/// says the run is over. Returns the passes it ran.
pub fn follow(args: &PipelineArgs) -> Result<usize> {
    args.validate()?;
    let run = Arc::new(connect(args)?);
    let totals = Arc::new(CommitTotals::default());
    let _metrics = serve_metrics(args, &run, &totals)?;
    execute_run(args, &run, &totals, None)
}

/// What worker 0 of the leading process holds for one pass.
struct Lead {
    start: PassStart,
    committer: Option<Committer>,
    feed: Option<StreamFeed>,
    stop: StopSignal,
    /// Removed when the pass ends.
    _out_marker: Option<crate::cluster::OutMarker>,
}

/// Prepares a pass on the leading process: its first epoch, the scan plan, the committer.
fn lead_pass(
    args: &PipelineArgs,
    run: &Run,
    store: &CheckpointStore,
    totals: &Arc<CommitTotals>,
    failure: &Failure,
    plan: PassPlan,
) -> Result<Lead> {
    let checkpoint = load_or_new(args, store)?;
    let start_epoch = checkpoint.committed + 1;
    // One scan plan for all workers, taken after the stream was opened (the planner opened it).
    let scan = match plan.scan {
        Some(whole) => {
            let p = run.runtime.block_on(run.queue.plan(whole)).context("planning the work-queue scan")?;
            Some(p.to_bytes().map_err(|e| anyhow!(e))?)
        }
        None => None,
    };
    let out_marker = crate::cluster::OutMarker::place(args, start_epoch)?;
    let start = PassStart {
        start_epoch,
        scan,
        streaming: plan.stream.is_some(),
        finish: false,
        failed: None,
        out_marker: out_marker.as_ref().map(|m| m.name.clone()),
    };
    let committer = Committer {
        store: store.clone(),
        checkpoint,
        marker: run.marker.clone(),
        runtime: run.runtime.handle().clone(),
        totals: totals.clone(),
        failure: failure.clone(),
        crash_after_commit: std::env::var("TWEET_EMBED_CRASH_AFTER_COMMIT").ok().and_then(|v| v.parse().ok()),
        commits: 0,
        positions: plan.stream.as_ref().map(|f| f.positions.clone()),
    };
    Ok(Lead { start, committer: Some(committer), feed: plan.stream, stop: plan.stop, _out_marker: out_marker })
}

/// Runs every pass of a run on this process's workers, in one timely computation (one set of
/// connections in a cluster): before each pass worker 0 asks the planner (leading process) and
/// hands every worker the pass's start; all build the graph and run it to completion; a start
/// that says the run is over ends it. Returns the passes run.
pub(crate) fn execute_run(
    args: &PipelineArgs,
    run: &Arc<Run>,
    totals: &Arc<CommitTotals>,
    leading: Option<Leading>,
) -> Result<usize> {
    let leads = leading.is_some();
    let failure: Failure = Arc::new(Mutex::new(None));
    // Worker 0's source of passes: the planner's plans, prepared into leads.
    let next_lead = leading.map(|Leading { store, mut planner }| {
        let (args, run, totals, failure) = (args.clone(), run.clone(), totals.clone(), failure.clone());
        move || -> Result<Option<Lead>> {
            match planner()? {
                Some(plan) => lead_pass(&args, &run, &store, &totals, &failure, plan).map(Some),
                None => Ok(None),
            }
        }
    });
    let next_lead = Arc::new(Mutex::new(next_lead));
    let clock = EpochClock::new(0);
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
    // Why process 0 ended the run, when it ended it with an error.
    let ended_with: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let (fail, ended) = (failure.clone(), ended_with.clone());
    let config = args.cluster.timely_config(args.workers)?;
    let (cluster, threads) = (args.cluster.is_cluster(), args.workers.max(1));
    let guards = timely::execute(config, move |worker| {
        let (queue, embedder, counter, rt, out) = &*shared;
        let ended_with = &ended;
        let (out_dir, tmp_dir, dim, model_id, target, stats) = out;
        let (index, peers) = (worker.index(), worker.peers());
        // One worker per process tells the others where the process's epoch clock is.
        let speaks = index % threads == 0;
        let mut next_lead = if index == 0 { next_lead.lock().take() } else { None };
        let failed = || fail.lock().is_some();
        let mut passes = 0;
        loop {
            let mut lead = None;
            let offer = next_lead.as_mut().map(|next| match next() {
                Ok(Some(l)) => {
                    let start = l.start.clone();
                    lead = Some(l);
                    start
                }
                Ok(None) => PassStart::finish(None),
                // Everyone is told the run is over, and why; the run returns the error.
                Err(e) => PassStart::finish(Some(format!("{e:#}"))),
            });
            let Some(start) = agree(worker, offer, &failed) else {
                abandon(worker, &fail, cluster);
                return passes;
            };
            if start.finish {
                if let Some(e) = start.failed {
                    // Not `fail`: a failure there makes workers still in `agree` stop waiting.
                    let e = if index < threads { e } else { format!("process 0 stopped the run: {e}") };
                    ended_with.lock().get_or_insert(e);
                }
                return passes;
            }
            passes += 1;
            if let Some(name) = &start.out_marker {
                if let Err(e) = crate::cluster::OutMarker::expect(out_dir, name) {
                    *fail.lock() = Some(e);
                    abandon(worker, &fail, cluster);
                    return passes;
                }
            }
            let ranges = match start.scan.as_deref().map(ScanPlan::from_bytes).transpose() {
                Ok(plan) => plan.map(|p| p.ranges_for(index, peers)).unwrap_or_default(),
                Err(e) => {
                    *fail.lock() = Some(e);
                    abandon(worker, &fail, cluster);
                    return passes;
                }
            };
            clock.advance_to(start.start_epoch);
            // Worker 0's sources watch the planner's stop (a signal, or a stream that lost its
            // history) and relay it; every other worker's sources hear it from the relay.
            let stop = lead.as_ref().map_or_else(StopSignal::default, |l| l.stop.clone());
            let mut relay = PassRelay::new(worker, stop.clone(), clock.clone());
            let mut cfg = OutputConfig::new(out_dir.clone(), tmp_dir.clone(), index, *dim, model_id);
            cfg.target_file_bytes = *target;
            cfg.stats = stats.clone();
            let writer = match EpochWriter::new(cfg) {
                Ok(w) => w,
                Err(e) => {
                    *fail.lock() = Some(e.to_string());
                    abandon(worker, &fail, cluster);
                    return passes;
                }
            };
            // The committer and the change stream live on worker 0: the stream's positions reach
            // the checkpoint through memory, not through the graph.
            let (committer, feed) = lead.as_mut().map_or((None, None), |l| (l.committer.take(), l.feed.take()));
            let (probe, committed) = (ProbeHandle::new(), ProbeHandle::new());
            let mut pacing = SourcePacing::new(start.start_epoch, interval, EPOCH_DOCS, probe.clone());
            pacing.clock = clock.clone();
            pacing.stop = stop.clone();
            worker.dataflow::<u64, _, _>(|scope| {
                let scanned = scope.work_queue_source(queue.clone(), ranges, rt.clone(), pacing.clone());
                let candidates = if start.streaming {
                    let streamed = scope.change_stream_source(feed, rt.clone(), pacing);
                    // Two sources can read one document: the gate lets it through once.
                    scanned.concat(streamed).id_gate(queue.clone(), rt.clone(), committed.clone())
                } else {
                    scanned
                };
                candidates
                    .dedup(counter.clone())
                    .token_batch(limits)
                    .embed_sink(embedder.clone(), rt.clone(), in_flight, VECTOR_CACHE)
                    .parquet_sink(writer, fail.clone())
                    .probe_with(&probe)
                    .commit(committer)
                    .probe_with(&committed);
            });
            while worker.step_or_park(Some(Duration::from_millis(20))) {
                if failed() {
                    // The run stops with the failure; the checkpoint is as the last commit left it.
                    abandon(worker, &fail, cluster);
                    return passes;
                }
                relay.poll(index, speaks, &stop, &clock);
                if probe.done() {
                    relay.close();
                }
            }
        }
    })
    .map_err(|e| anyhow!("starting the workers: {e}"))?;
    // Progress counts commits, which only the leading process makes.
    let progress = leads.then(|| {
        crate::progress::Reporter::start(crate::progress::ProgressSources {
            totals: totals.clone(),
            pool: Some(run.pool.clone()),
            queue: Some((run.queue.clone(), run.runtime.handle().clone())),
        })
    });
    // Joining timely's transport panics when a peer process went away.
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
    if let Some(p) = progress {
        p.stop();
    }
    let joined = match joined {
        Ok(joined) => joined,
        Err(_) if args.cluster.is_cluster() => return Err(crate::cluster::peer_lost()),
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let mut passes = 0;
    for r in joined {
        match r {
            Err(e) if args.cluster.is_cluster() && crate::cluster::is_peer_loss(&e) => {
                return Err(crate::cluster::peer_lost())
            }
            r => passes = passes.max(r.map_err(|e| anyhow!("a worker failed: {e}"))?),
        }
    }
    if let Some(e) = failure.lock().take().or_else(|| ended_with.lock().take()) {
        bail!(e);
    }
    Ok(passes)
}

/// Ends this worker after a failure (in `fail`). Alone, it drops its dataflows and the run
/// returns the error. In a cluster it exits the process: workers that return hang up cleanly,
/// and the other processes would wait forever for their progress; an exit breaks the
/// connections, which stops those processes too (see [`crate::cluster::peer_lost`]).
fn abandon(worker: &mut Worker, fail: &Failure, cluster: bool) {
    if cluster {
        let e = fail.lock().clone().unwrap_or_default();
        tracing::error!(error = %e, "this process of the cluster stops");
        eprintln!("tweet-embed: {e}");
        std::process::exit(1);
    }
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
}
