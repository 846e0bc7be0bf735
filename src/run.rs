//! `tweet-embed run`: continuous mode. The change stream is opened (its start point recorded)
//! before the work-queue scan begins, both feed one graph, and the run goes on until SIGINT or
//! SIGTERM: then the sources stop, the epochs in flight are committed and marked, and it exits 0.
//! A second signal exits at once; the checkpoint protocol keeps that safe.
//!
//! It owns the run's life cycle: where the stream starts (the checkpoint's token, or now),
//! when the work queue is scanned (at start unless `--no-backfill`, and whenever the stream's
//! history was lost), and signals. The graph and the protocol are the pipeline's.

use crate::config::PipelineArgs;
use crate::pass::{execute_run, Leading, PassPlan, Planner};
use crate::pipeline::{connect, load_or_new, recover, BackfillSummary, Run};
use anyhow::{Context, Result};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tweet_embed_operators::change_stream::{
    is_history_lost, token_from_json, ChangeFeed, StreamPositions, StreamStart,
};
use tweet_embed_operators::change_stream_source::{StreamFeed, StreamOutcome};
use tweet_embed_operators::commit::CommitTotals;
use tweet_embed_operators::epoch_clock::StopSignal;
use tweet_embed_operators::output::CheckpointStore;

/// Flags of `tweet-embed run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Everything `backfill` takes.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Do not scan the work queue at start (new documents only, from the change stream).
    #[arg(long)]
    pub no_backfill: bool,
    /// Do not follow the change stream: scan the work queue again every checkpoint interval.
    #[arg(long, conflicts_with = "no_backfill")]
    pub no_stream: bool,
}

/// Runs until `stop` is signalled (the CLI wires SIGINT/SIGTERM to it), then drains and returns.
pub fn run(args: &RunArgs, stop: StopSignal) -> Result<BackfillSummary> {
    let started = Instant::now();
    let p = &args.pipeline;
    p.validate()?;
    if !p.cluster.leads() {
        // Stops come from process 0, through the dataflow.
        let passes = crate::pass::follow(p)?;
        return Ok(BackfillSummary { passes, elapsed: started.elapsed(), ..BackfillSummary::default() });
    }
    let run = Arc::new(connect(p)?);
    let store = CheckpointStore::open(&p.state_dir)?;
    let mut summary = BackfillSummary::default();
    recover(p, &run, &store, &mut summary)?;
    let totals = Arc::new(CommitTotals::default());
    let _metrics = crate::pipeline::serve_metrics(p, &run, &totals)?;
    let planner = run_planner(args.clone(), run.clone(), store.clone(), stop);
    summary.passes = execute_run(p, &run, &totals, Some(Leading { store, planner }))?;
    summary.take_totals(&totals, started);
    Ok(summary)
}

/// The run's passes, until `stop`: one that follows the stream (and scans the work queue at the
/// start unless `--no-backfill`, and again whenever the stream's history was lost), or with
/// `--no-stream` a scan every checkpoint interval.
fn run_planner(args: RunArgs, run: Arc<Run>, store: CheckpointStore, stop: StopSignal) -> Planner {
    let mut scan = !args.no_backfill;
    let mut lost_once = false;
    let mut passes = 0usize;
    let mut last_outcome: Option<Arc<Mutex<StreamOutcome>>> = None;
    Box::new(move || {
        let p = &args.pipeline;
        if let Some(outcome) = last_outcome.take() {
            if *outcome.lock() == StreamOutcome::HistoryLost {
                log_history_lost(&mut lost_once);
                // Reopen at now and rescan: the scan finds everything unmarked by construction.
                clear_token(p, &store)?;
                scan = true;
            }
        }
        if args.no_stream && passes > 0 {
            sleep_unless_stopped(&stop, p.checkpoint_interval);
        }
        if stop.is_stopped() {
            return Ok(None);
        }
        passes += 1;
        if args.no_stream {
            return Ok(Some(PassPlan { scan: Some(passes > 1), stream: None, stop: stop.clone() }));
        }
        let (feed, history_lost) = open_stream(p, &run, &store)?;
        if history_lost {
            log_history_lost(&mut lost_once);
            scan = true;
        }
        last_outcome = Some(feed.outcome.clone());
        // A stop of this pass alone (history lost) must not stop the run: the pass gets a child
        // of the run's signal.
        let plan = PassPlan { scan: scan.then_some(passes > 1), stream: Some(feed), stop: stop.child() };
        scan = false;
        Ok(Some(plan))
    })
}

/// Opens the stream at the checkpoint's token, or now; says whether the token's history is gone
/// (the stream is then opened at now instead).
fn open_stream(p: &PipelineArgs, run: &Run, store: &CheckpointStore) -> Result<(StreamFeed, bool)> {
    let cp = load_or_new(p, store)?;
    let start = match cp.sources.resume_token.as_deref() {
        Some(json) => StreamStart::After(
            token_from_json(json).map_err(|e| anyhow::anyhow!("the checkpoint's resume token is unreadable: {e}"))?,
        ),
        None => StreamStart::Now,
    };
    let feed = ChangeFeed { queue: run.queue.clone(), max_await: p.checkpoint_interval.min(Duration::from_secs(1)) };
    let (stream, lost) = run
        .runtime
        .block_on(async {
            match feed.open(&start).await {
                Ok(s) => Ok((s, false)),
                Err(e) if is_history_lost(&e) => feed.open(&StreamStart::Now).await.map(|s| (s, true)),
                Err(e) => Err(e),
            }
        })
        .context("opening the change stream (continuous mode needs a replica set; `--no-stream` polls instead)")?;
    let feed = StreamFeed {
        feed,
        stream,
        positions: StreamPositions::default(),
        outcome: Arc::new(Mutex::new(StreamOutcome::Running)),
    };
    Ok((feed, lost))
}

fn log_history_lost(once: &mut bool) {
    if !*once {
        tracing::warn!(
            "the change stream's resume point is no longer in the server's history (the run was down longer than \
             the oplog window): reopening at now and scanning the work queue, which holds everything not yet embedded"
        );
    }
    *once = true;
}

/// Forgets the checkpoint's token after its history was lost, so the next pass opens at now.
fn clear_token(p: &PipelineArgs, store: &CheckpointStore) -> Result<()> {
    let mut cp = load_or_new(p, store)?;
    cp.sources.resume_token = None;
    cp.sources.cluster_time = None;
    store.save(&cp).context("saving the checkpoint")
}

fn sleep_unless_stopped(stop: &StopSignal, d: Duration) {
    let until = Instant::now() + d;
    while !stop.is_stopped() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stop signal tripped by the first SIGINT or SIGTERM; the second exits the process at once.
/// A follower of a cluster (`leads` false) only says where to send the signal: the cluster stops
/// from process 0.
pub fn stop_on_signals(leads: bool) -> Result<StopSignal> {
    let stop = StopSignal::default();
    let s = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for signals");
                    return;
                }
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
                else {
                    tracing::error!("cannot listen for SIGTERM/SIGINT");
                    return;
                };
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                if leads {
                    tracing::info!("stopping: finishing the epochs in flight (signal again to exit at once)");
                    s.stop();
                } else {
                    tracing::warn!(
                        "this process follows process 0: signal process 0 to stop the cluster gracefully; signal this \
                         one again to exit at once (the whole cluster then stops, and resumes from the checkpoint)"
                    );
                }
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                tracing::warn!("exiting at once; the next start recovers from the checkpoint");
                std::process::exit(130);
            });
        })
        .context("starting the signal listener")?;
    Ok(stop)
}
