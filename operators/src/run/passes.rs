//! The passes of a run, in one timely computation (one set of connections in a cluster): the
//! graph (`super::graph`) is built on every worker of every process once per pass.
//!
//! It owns the worker side, in four steps per pass: **agree** (worker 0 of the leading process
//! asks the planner for the next pass and hands its start to every worker, `lead_pass` and
//! `pass_control::agree`), **join** (each worker checks the start against its process and opens
//! its writer, [`join_pass`]), **build** ([`PassGraph::build`]) and **step** ([`step_pass`]),
//! stopping on a failure. What a pass reads and when the run ends is the planner's (`backfill`,
//! `continuous`); the commit order and recovery are `checkpoint`'s.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use parking_lot::Mutex;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use super::cluster::{is_peer_loss, peer_lost};
use super::engine::Engine;
use super::graph::PassGraph;
use crate::dataflow::change_stream_source::StreamFeed;
use crate::dataflow::embed::Embedder;
use crate::dataflow::epoch_clock::{EpochClock, StopSignal};
use crate::dataflow::pass_control::{agree, PassRelay, PassStart};
use crate::dataflow::source_pacing::SourcePacing;
use crate::mongo::error::{describe, retry};
use crate::mongo::work_queue::ScanPlan;
use crate::run::failure::Failure;
use crate::table::checkpoint::{Committer, Ledger, OutMarker, RejectionGuard, VanishedLog};
use crate::table::output::{EpochWriter, OutputConfig};
use crate::tei::EndpointPool;
use crate::timely;

/// Documents per worker after which an epoch closes whatever the checkpoint interval and the
/// completion rate say (`source_pacing::EpochSizer` sizes epochs below it): every open epoch
/// holds its rows in the writer until it is sealed, so this bounds memory (about 30 MiB of
/// 768-float rows per epoch per worker).
const EPOCH_DOCS: usize = 10_000;

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

/// Decides the passes of a run, on worker 0 of the leading process: called before each pass (and
/// so after the one before it has committed everything), it returns what the next pass reads, or
/// `None` when the run is over.
pub(crate) type Planner = Box<dyn FnMut() -> Result<Option<PassPlan>> + Send>;

/// What the leading process brings to a run: the checkpoint and the planner.
pub(crate) struct Leading {
    pub ledger: Ledger,
    pub planner: Planner,
}

/// What worker 0 of the leading process holds for one pass.
struct Lead {
    start: PassStart,
    committer: Option<Committer>,
    feed: Option<StreamFeed>,
    stop: StopSignal,
    /// Removed when the pass ends.
    _out_marker: Option<OutMarker>,
}

/// Prepares a pass on the leading process: its first epoch, the scan plan, the committer.
fn lead_pass(engine: &Engine, ledger: &Ledger, failure: &Failure, plan: PassPlan) -> Result<Lead> {
    let config = &engine.config;
    let start_epoch = ledger.snapshot().committed() + 1;
    // One scan plan for all workers, taken after the stream was opened (the planner opened it).
    let scan = match plan.scan {
        Some(whole) => {
            let q = &engine.queue;
            let p = engine
                .runtime
                .block_on(retry(&q.retry, "planning the work-queue scan", || q.plan(whole)))
                .map_err(|e| anyhow!("planning the work-queue scan: {}", describe(&e)))?;
            Some(p.to_bytes().map_err(|e| anyhow!(e))?)
        }
        None => None,
    };
    let out_marker = OutMarker::place(&config.out, config.cluster.is_cluster(), start_epoch)?;
    let id_type = ledger.snapshot().id_type().unwrap_or(crate::table::output::IdType::ExtJson);
    let mut identity = engine.identity();
    identity.id_type = Some(id_type);
    let start = PassStart {
        start_epoch,
        scan,
        streaming: plan.stream.is_some(),
        finish: false,
        failed: None,
        out_marker: out_marker.as_ref().map(|m| m.name.clone()),
        identity: ledger.snapshot().identity().and_then(|i| serde_json::to_string(&i).ok()),
        // Recorded before the first pass (`super::ids`).
        id_type,
    };
    let committer = Committer {
        ledger: ledger.clone(),
        marker: engine.marker.clone(),
        runtime: engine.runtime.handle().clone(),
        totals: engine.totals.clone(),
        failure: failure.clone(),
        #[cfg(feature = "test-hooks")]
        crash_after_commit: config.hooks.crash_after_commit,
        commits: 0,
        positions: plan.stream.as_ref().map(|f| f.positions.clone()),
        vanished: VanishedLog { out: config.out.clone(), id_type: start.id_type, key_values: identity.key_values() },
        guard: RejectionGuard {
            text_field: engine.queue.text_field.clone(),
            id_type: start.id_type,
            allow: config.allow_mass_rejection,
        },
    };
    Ok(Lead { start, committer: Some(committer), feed: plan.stream, stop: plan.stop, _out_marker: out_marker })
}

/// Runs every pass of a run on this process's workers: before each pass worker 0 asks the
/// planner (leading process only) and hands every worker the pass's start; all build the graph
/// and run it to completion; a start that says the run is over ends it. Returns the passes run.
/// A failure put in `failure` (by a worker, or by the compactor) stops every pass.
pub(crate) fn execute(engine: &Arc<Engine>, leading: Option<Leading>, failure: Failure) -> Result<usize> {
    let config = &engine.config;
    // Worker 0's source of passes: the planner's plans, prepared into leads.
    let next_lead = leading.map(|Leading { ledger, mut planner }| {
        let (engine, failure) = (engine.clone(), failure.clone());
        move || -> Result<Option<Lead>> {
            match planner()? {
                Some(plan) => lead_pass(&engine, &ledger, &failure, plan).map(Some),
                None => Ok(None),
            }
        }
    });
    let next_lead = Arc::new(Mutex::new(next_lead));
    let clock = engine.clock.clone();
    // Enough outstanding requests that every endpoint's limit can reach its most (a pinned one,
    // or an adaptive one's cap from the server's permits), plus one per endpoint so a finished
    // request's successor is ready. Requests beyond the limits wait in the pool, cheaply. One
    // worker per process embeds (see below), so it holds them all.
    let in_flight = (engine.pool.max_in_flight() + engine.pool.urls().len()).max(2);
    let embedder: Arc<dyn Embedder> = Arc::new(EndpointPool::clone(&engine.pool));
    // Why process 0 ended the run, when it ended it with an error.
    let ended_with: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let (fail, ended, shared) = (failure.clone(), ended_with.clone(), engine.clone());
    let (cluster, threads) = (config.cluster.is_cluster(), config.workers.max(1));
    let guards = timely::execute(config.cluster.timely_config(config.workers), move |worker| {
        let engine = &*shared;
        let config = &engine.config;
        let (index, peers) = (worker.index(), worker.peers());
        // One worker per process tells the others where the process's epoch clock is.
        let speaks = index % threads == 0;
        let mut next_lead = if index == 0 { next_lead.lock().take() } else { None };
        let failed = || fail.is_set();
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
                    ended.lock().get_or_insert(e);
                }
                return passes;
            }
            passes += 1;
            // Join: this process checks the start against its own settings and opens its writer.
            let writer = match join_pass(engine, &start, index) {
                Ok(writer) => writer,
                Err(e) => {
                    fail.report(e);
                    abandon(worker, &fail, cluster);
                    return passes;
                }
            };
            let ranges = match start.scan.as_deref().map(ScanPlan::from_bytes).transpose() {
                Ok(plan) => plan.map(|p| p.ranges_for(index, peers)).unwrap_or_default(),
                Err(e) => {
                    fail.report(e);
                    abandon(worker, &fail, cluster);
                    return passes;
                }
            };
            clock.advance_to(start.start_epoch);
            // Worker 0's sources watch the planner's stop (a signal, or a stream that lost its
            // history) and relay it; every other worker's sources hear it from the relay.
            let stop = lead.as_ref().map_or_else(StopSignal::default, |l| l.stop.clone());
            let mut relay = PassRelay::new(worker, stop.clone(), clock.clone());
            // Build: the committer and the change stream live on worker 0, so the stream's
            // positions reach the checkpoint through memory, not through the graph.
            let (committer, feed) = lead.as_mut().map_or((None, None), |l| (l.committer.take(), l.feed.take()));
            let mut pacing =
                SourcePacing::new(start.start_epoch, config.checkpoint_interval, EPOCH_DOCS, ProbeHandle::new());
            pacing.clock = clock.clone();
            pacing.stop = stop.clone();
            pacing.failure = fail.clone();
            let pass = PassGraph { ranges, writer, committer, feed, pacing, embedder: embedder.clone(), in_flight };
            let probe = pass.build(worker, engine, start.streaming, fail.clone());
            // Step: until the graph is done, or a failure stops the run.
            if !step_pass(worker, &probe, &mut relay, &fail, speaks, &stop, &clock) {
                abandon(worker, &fail, cluster);
                return passes;
            }
        }
    })
    .map_err(|e| anyhow!("starting the workers: {e}"))?;
    // Joining timely's transport panics when a peer process went away.
    let joined = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join())) {
        Ok(joined) => joined,
        Err(_) if cluster => return Err(peer_lost()),
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let mut passes = 0;
    for r in joined {
        match r {
            Err(e) if cluster && is_peer_loss(&e) => return Err(peer_lost()),
            r => passes = passes.max(r.map_err(|e| anyhow!("a worker failed: {e}"))?),
        }
    }
    if let Some(e) = failure.take().or_else(|| ended_with.lock().take()) {
        bail!(e);
    }
    Ok(passes)
}

/// Joins a pass on this process: checks the start against this process's settings and servers
/// (the dataset identity, the `--out` marker) and opens worker `index`'s writer for it. Errs with
/// the line that says what differs.
fn join_pass(engine: &Engine, start: &PassStart, index: usize) -> Result<EpochWriter, String> {
    let config = &engine.config;
    if let Some(json) = start.identity.as_deref() {
        same_identity(engine, json)?;
    }
    if let Some(name) = &start.out_marker {
        OutMarker::expect(&config.out, name)?;
    }
    let mut out =
        OutputConfig::new(config.out.clone(), config.tmp_dir.clone(), index, engine.pool.dim(), engine.pool.model_id());
    out.target_file_bytes = config.target_file_bytes;
    let mut identity = engine.identity();
    identity.id_type = Some(start.id_type);
    out.key_values = identity.key_values();
    out.staging_dir = config.staging_dir();
    out.id_type = start.id_type;
    out.stats = engine.output_stats.clone();
    EpochWriter::new(out).map_err(|e| e.to_string())
}

/// Steps `worker` until the pass's graph is done (`probe`): true; or until a failure stops the
/// run: false. Meanwhile the relay carries the pass's stop and the epoch clock between workers.
fn step_pass(
    worker: &mut Worker,
    probe: &ProbeHandle<u64>,
    relay: &mut PassRelay,
    fail: &Failure,
    speaks: bool,
    stop: &StopSignal,
    clock: &EpochClock,
) -> bool {
    let index = worker.index();
    while worker.step_or_park(Some(Duration::from_millis(20))) {
        if fail.is_set() {
            // The run stops with the failure; the checkpoint is as the last commit left it.
            return false;
        }
        relay.poll(index, speaks, stop, clock);
        if probe.done() {
            relay.close();
        }
    }
    true
}

/// `Ok` when this process's settings and servers make the vectors of the identity the leading
/// process recorded (`json`); else the line that says how they differ.
fn same_identity(engine: &Engine, json: &str) -> Result<(), String> {
    let recorded: crate::table::identity::DatasetIdentity =
        serde_json::from_str(json).map_err(|e| format!("process 0 sent an unreadable dataset identity: {e}"))?;
    let out = engine.config.out.display().to_string();
    engine
        .identity()
        .check(&recorded, &out)
        .map_err(|e| format!("process {} of the cluster: {e}", engine.config.cluster.process))
}

/// Ends this worker after a failure (in `fail`). Alone, it drops its dataflows and the run
/// returns the error. In a cluster it exits the process: workers that return hang up cleanly,
/// and the other processes would wait forever for their progress; an exit breaks the
/// connections, which stops those processes too (see [`peer_lost`]).
fn abandon(worker: &mut Worker, fail: &Failure, cluster: bool) {
    if cluster {
        let e = fail.first().unwrap_or_default();
        tracing::error!(error = %e, "this process of the cluster stops");
        crate::run::failure::to_stderr(&format!("tweet-embed: {e}"));
        std::process::exit(1);
    }
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
}
