//! Continuous mode's passes. The change stream is opened (its start point recorded) before the
//! work-queue scan begins, both feed one graph, and the pass goes on until the stop signal: then
//! the sources stop and the epochs in flight are committed and marked.
//!
//! It owns where the stream starts (the checkpoint's token, or now), when the work queue is
//! scanned (at start unless told not to, and whenever the stream's history was lost), and the
//! polling variant without a stream. The graph is `passes`'s, the protocol `checkpoint`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parking_lot::Mutex;

use super::engine::Engine;
use super::passes::{PassPlan, Planner};
use crate::dataflow::change_stream_source::{StreamFeed, StreamOutcome};
use crate::dataflow::epoch_clock::StopSignal;
use crate::mongo::change_stream::{
    is_history_lost, token_from_json, ChangeFeed, PastLarge, StreamPositions, StreamStart,
};
use crate::mongo::error::{describe, retry};
use crate::table::checkpoint::Ledger;

/// What continuous mode reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuous {
    /// Scan the work queue at start (the backfill before following the stream).
    pub scan_at_start: bool,
    /// Follow the change stream; without it, scan the work queue again every checkpoint interval.
    pub stream: bool,
}

impl Default for Continuous {
    /// Backfill, then follow the stream.
    fn default() -> Self {
        Continuous { scan_at_start: true, stream: true }
    }
}

/// The run's passes, until `stop`: one that follows the stream (and scans the work queue at the
/// start unless told not to, and again whenever the stream's history was lost), or without a
/// stream a scan every checkpoint interval.
pub(crate) fn continuous_planner(
    options: Continuous,
    engine: Arc<Engine>,
    ledger: Ledger,
    stop: StopSignal,
) -> Planner {
    let mut scan = options.scan_at_start;
    let mut lost_once = false;
    let mut passes = 0usize;
    let mut last_outcome: Option<Arc<Mutex<StreamOutcome>>> = None;
    let interval = engine.config.checkpoint_interval;
    Box::new(move || {
        if let Some(outcome) = last_outcome.take() {
            if *outcome.lock() == StreamOutcome::Invalidated {
                // The work queue went with the collection (its index too), and what the checkpoint
                // and the output hold refers to the old one: a person decides what comes next.
                anyhow::bail!(
                    "the change stream of {}.{} was invalidated: the collection was dropped or renamed, or its \
                     database dropped. Nothing committed is lost, and the checkpoint resumes after that point: \
                     recreate the collection, run `tweet-embed indexes`, and start again (the work-queue scan then \
                     finds its documents)",
                    engine.config.mongo.db,
                    engine.config.mongo.collection
                );
            }
            if *outcome.lock() == StreamOutcome::HistoryLost {
                log_history_lost(&mut lost_once);
                // Reopen at now and rescan: the scan finds everything unmarked by construction.
                clear_token(&ledger)?;
                scan = true;
            }
        }
        if !options.stream && passes > 0 {
            sleep_unless_stopped(&stop, interval);
        }
        if stop.is_stopped() {
            return Ok(None);
        }
        passes += 1;
        if !options.stream {
            return Ok(Some(PassPlan { scan: Some(passes > 1), stream: None, stop: stop.clone() }));
        }
        let (feed, history_lost) = open_stream(&engine, &ledger)?;
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
fn open_stream(engine: &Engine, ledger: &Ledger) -> Result<(StreamFeed, bool)> {
    let cp = ledger.snapshot();
    let start = match cp.sources().resume_token.as_deref() {
        Some(json) => StreamStart::After(
            token_from_json(json).map_err(|e| anyhow::anyhow!("the checkpoint's resume token is unreadable: {e}"))?,
        ),
        None => StreamStart::Now,
    };
    let max_await = engine.config.checkpoint_interval.min(Duration::from_secs(1));
    let feed = ChangeFeed { queue: engine.queue.clone(), max_await };
    let (retrying, now) = (&engine.queue.retry, StreamStart::Now);
    let (stream, lost) = engine
        .runtime
        .block_on(async {
            // An election or a dropped connection is waited out; a lost history is answered.
            let (feed, start) = (&feed, &start);
            let opened = retry(retrying, "opening the change stream", || async move {
                // (An event over 16 MB at the token is skipped, with an ERROR naming it.)
                match feed.open_past_large(start).await {
                    Err(e) if is_history_lost(&e) => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
            match opened {
                Some(s) => Ok((s, false)),
                None => retry(retrying, "opening the change stream", || feed.open(&now))
                    .await
                    .map(|stream| (PastLarge { stream, one_at_a_time: false, skipped: None }, true)),
            }
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "opening the change stream (continuous mode needs a replica set; `--no-stream` polls instead): {}",
                describe(&e)
            )
        })?;
    let feed = StreamFeed {
        feed,
        stream: stream.stream,
        one_at_a_time: stream.one_at_a_time,
        positions: StreamPositions::default(),
        outcome: Arc::new(Mutex::new(StreamOutcome::Running)),
    };
    Ok((feed, lost))
}

fn log_history_lost(once: &mut bool) {
    if !*once {
        tracing::warn!(
            "the change stream's resume point is no longer in the server's history (the run was down longer than \
             the oplog window): reopening at now and scanning the work queue, which holds everything not yet embedded. \
             Tweets deleted in the gap cannot be seen: run `tweet-embed reconcile` to find them and remove their rows"
        );
    }
    *once = true;
}

/// Forgets the checkpoint's token after its history was lost, so the next pass opens at now.
fn clear_token(ledger: &Ledger) -> Result<()> {
    ledger.forget_stream_position().context("saving the checkpoint")
}

fn sleep_unless_stopped(stop: &StopSignal, d: Duration) {
    let until = Instant::now() + d;
    while !stop.is_stopped() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}
