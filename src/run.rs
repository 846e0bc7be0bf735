//! `tweet-embed run`: continuous mode. The engine backfills, then follows the change stream
//! (`tweet_embed_operators::run::Continuous`) until SIGINT or SIGTERM: then the sources stop, the
//! epochs in flight are committed and marked, and it exits 0. A second signal exits at once, and
//! so does a drain that takes longer than `--drain-timeout` (exit 1, with a line saying what was
//! still in flight: a hung TEI endpoint or a MongoDB outage must not keep a stopping service
//! alive); the checkpoint protocol keeps both safe.
//!
//! This module owns the flags and the signals; the run's life cycle is the engine's.

use crate::config::PipelineArgs;
use anyhow::{Context, Result};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tweet_embed_operators::dataflow::epoch_clock::StopSignal;
use tweet_embed_operators::run::{Continuous, Monitor};

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

/// Runs until SIGINT or SIGTERM, then drains, prints the summary and returns.
pub fn run(args: &RunArgs) -> Result<()> {
    let config = args.pipeline.resolve()?;
    let running: Arc<OnceLock<Monitor>> = Arc::default();
    let stop = stop_on_signals(config.cluster.leads(), config.drain_timeout, running.clone())?;
    let options = Continuous { scan_at_start: !args.no_backfill, stream: !args.no_stream };
    let summary = crate::session::execute(config, args.pipeline.metrics_addr, |engine| {
        let _ = running.set(engine.monitor());
        engine.continuous(options, stop)
    })?;
    if args.pipeline.cluster.leads() {
        crate::session::print_summary("run", &summary, &args.pipeline.out);
    } else {
        crate::session::print_follower_summary("run", &summary, args.pipeline.cluster.process);
    }
    Ok(())
}

/// Signals within this time of the first are the same stop, delivered twice.
const SAME_STOP: Duration = Duration::from_millis(300);

/// A stop signal tripped by the first SIGINT or SIGTERM; the second exits the process at once,
/// and so does a drain still going after `drain_timeout` (exit 1, naming what `running` still
/// has in flight). A follower of a cluster (`leads` false) only says where to send the signal:
/// the cluster stops from process 0; it too exits after `drain_timeout`.
pub fn stop_on_signals(leads: bool, drain_timeout: Duration, running: Arc<OnceLock<Monitor>>) -> Result<StopSignal> {
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
                    tracing::info!(
                        "stopping: finishing the epochs in flight, for at most --drain-timeout {drain_timeout:?} (signal again to exit at once)"
                    );
                    s.stop();
                } else {
                    tracing::warn!(
                        "this process follows process 0: signal process 0 to stop the cluster gracefully; signal this \
                         one again to exit at once (the whole cluster then stops, and resumes from the checkpoint)"
                    );
                }
                // One stop can arrive twice at once (`timeout` signals the process and its group;
                // a terminal sends SIGINT to the whole foreground group): only a signal after a
                // short pause is the second one that exits at once.
                let echo = async {
                    loop {
                        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                    }
                };
                let _ = tokio::time::timeout(SAME_STOP, echo).await;
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = tokio::time::sleep(drain_timeout.saturating_sub(SAME_STOP)) => {
                        let what = running.get().map_or_else(|| "the run had not started yet".to_string(), Monitor::in_flight);
                        let line = format!(
                            "stopped after --drain-timeout {drain_timeout:?} with work still in flight: {what}; the \
                             next start resumes from the checkpoint (nothing committed is lost or repeated)"
                        );
                        tracing::error!("{line}");
                        tweet_embed_operators::run::failure::to_stderr(&format!("tweet-embed: {line}"));
                        std::process::exit(1);
                    }
                }
                tracing::warn!("exiting at once; the next start recovers from the checkpoint");
                std::process::exit(130);
            });
        })
        .context("starting the signal listener")?;
    Ok(stop)
}
