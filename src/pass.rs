//! One pass of the dataflow: the graph — work-queue source (+ change-stream source and `IdGate`
//! when streaming) → dedup → token batcher → TEI sink → Parquet sink → committer — built on every
//! worker of this process (and of the cluster's other processes), run until it completes.
//!
//! It owns the worker side of a pass: taking the pass's start from worker 0, building the graph,
//! stepping it, and stopping on a failure. What a pass reads and when passes happen is decided by
//! the callers (`pipeline::backfill`, `run::run`); the protocol lives in the operators.

use crate::config::PipelineArgs;
use crate::pipeline::{connect, load_or_new, serve_metrics, Run};
use anyhow::{anyhow, bail, Context, Result};
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
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

/// Runs the dataflow once: until the scan is done and (with a stream) a stop is asked for. On the
/// leading process; in a cluster the others take the pass from it ([`follow`]).
pub(crate) fn run_pass(
    args: &PipelineArgs,
    run: &Run,
    store: &CheckpointStore,
    totals: &Arc<CommitTotals>,
    plan: PassPlan,
) -> Result<()> {
    let checkpoint = load_or_new(args, store)?;
    let start_epoch = checkpoint.committed + 1;
    // One scan plan for all workers, taken after the stream was opened (the caller opened it).
    let scan = match plan.scan {
        Some(whole) => {
            let p = run.runtime.block_on(run.queue.plan(whole)).context("planning the work-queue scan")?;
            Some(p.to_bytes().map_err(|e| anyhow!(e))?)
        }
        None => None,
    };
    let marker = crate::cluster::OutMarker::place(args, start_epoch)?;
    let start = PassStart {
        start_epoch,
        scan,
        streaming: plan.stream.is_some(),
        finish: false,
        out_marker: marker.as_ref().map(|m| m.name.clone()),
    };
    let failure: Failure = Arc::new(Mutex::new(None));
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
    let lead = Lead { start, committer: Some(committer), feed: plan.stream, stop: plan.stop };
    execute_pass(args, run, totals, Some(lead), failure).map(|_| ())
}

/// A follower of a cluster: connects, then runs each pass the leading process starts until it
/// says the run is over. Returns the passes it ran.
pub fn follow(args: &PipelineArgs) -> Result<usize> {
    args.validate()?;
    let run = connect(args)?;
    let totals = Arc::new(CommitTotals::default());
    let _metrics = serve_metrics(args, &run, &totals)?;
    let mut passes = 0;
    while execute_pass(args, &run, &totals, None, Arc::new(Mutex::new(None)))? {
        passes += 1;
        tracing::info!(passes, process = args.cluster.process, "pass done; waiting for the next from process 0");
    }
    Ok(passes)
}

/// Tells the followers of a cluster that the run is over, so they exit.
pub(crate) fn finish_followers(args: &PipelineArgs, run: &Run, totals: &Arc<CommitTotals>) -> Result<()> {
    if !args.cluster.is_cluster() {
        return Ok(());
    }
    let lead = Lead { start: PassStart::finish(), committer: None, feed: None, stop: StopSignal::default() };
    execute_pass(args, run, totals, Some(lead), Arc::new(Mutex::new(None))).map(|_| ())
}

/// What only the leading process brings to a pass.
struct Lead {
    start: PassStart,
    committer: Option<Committer>,
    feed: Option<StreamFeed>,
    stop: StopSignal,
}

/// Runs one pass on this process's workers: worker 0 hands every worker the pass's start, then
/// all build the graph and run it to completion. False when the start said the run is over.
fn execute_pass(
    args: &PipelineArgs,
    run: &Run,
    totals: &Arc<CommitTotals>,
    lead: Option<Lead>,
    failure: Failure,
) -> Result<bool> {
    let leads = lead.is_some();
    let (offer, committer, feed, stop) = match lead {
        Some(l) => (Some(l.start), l.committer, l.feed, l.stop),
        None => (None, None, None, StopSignal::default()),
    };
    let (committer, feed) = (Arc::new(Mutex::new(committer)), Arc::new(Mutex::new(feed)));
    let clock = EpochClock::new(0);
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
    let (fail, ran_here) = (failure.clone(), ran.clone());
    let config = args.cluster.timely_config(args.workers)?;
    let (cluster, threads) = (args.cluster.is_cluster(), args.workers.max(1));
    let guards = timely::execute(config, move |worker| {
        let (queue, embedder, counter, rt, out) = &*shared;
        let (index, peers) = (worker.index(), worker.peers());
        // One worker per process tells the others where the process's epoch clock is.
        let speaks = index % threads == 0;
        let Some(start) = agree(worker, offer.clone()) else {
            *fail.lock() = Some("process 0 started no pass".into());
            return abandon(worker, &fail, cluster);
        };
        if start.finish {
            return;
        }
        ran_here.store(true, Ordering::Relaxed);
        let (out_dir, tmp_dir, dim, model_id, target, stats) = out;
        if let Some(name) = &start.out_marker {
            if let Err(e) = crate::cluster::OutMarker::expect(out_dir, name) {
                *fail.lock() = Some(e);
                return abandon(worker, &fail, cluster);
            }
        }
        let ranges = match start.scan.as_deref().map(ScanPlan::from_bytes).transpose() {
            Ok(plan) => plan.map(|p| p.ranges_for(index, peers)).unwrap_or_default(),
            Err(e) => {
                *fail.lock() = Some(e);
                return abandon(worker, &fail, cluster);
            }
        };
        clock.advance_to(start.start_epoch);
        let mut relay = PassRelay::new(worker, stop.clone(), clock.clone());
        let mut cfg = OutputConfig::new(out_dir.clone(), tmp_dir.clone(), index, *dim, model_id);
        cfg.target_file_bytes = *target;
        cfg.stats = stats.clone();
        let writer = match EpochWriter::new(cfg) {
            Ok(w) => w,
            Err(e) => {
                *fail.lock() = Some(e.to_string());
                return abandon(worker, &fail, cluster);
            }
        };
        // The committer and the change stream live on worker 0: the stream's positions reach
        // the checkpoint through memory, not through the graph.
        let (committer, feed) = if index == 0 { (committer.lock().take(), feed.lock().take()) } else { (None, None) };
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
            if fail.lock().is_some() {
                // The run stops with the failure; the checkpoint is as the last commit left it.
                return abandon(worker, &fail, cluster);
            }
            relay.poll(index, speaks, &stop, &clock);
            if probe.done() {
                relay.close();
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
    for r in joined {
        match r {
            Err(e) if args.cluster.is_cluster() && crate::cluster::is_peer_loss(&e) => {
                return Err(crate::cluster::peer_lost())
            }
            r => r.map_err(|e| anyhow!("a worker failed: {e}"))?,
        }
    }
    if let Some(e) = failure.lock().take() {
        bail!(e);
    }
    Ok(ran.load(Ordering::Relaxed))
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
