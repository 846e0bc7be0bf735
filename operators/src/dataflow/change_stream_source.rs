//! `ChangeStreamSource`: continuous mode's source. A tokio task follows the change stream and
//! sends each eligible document with the stream position after it over a bounded channel; the
//! operator emits documents at the shared epoch, and when it closes an epoch it records the
//! position reached in [`StreamPositions`], which the committer saves with that epoch. An idle
//! stream still closes epochs when its post-batch resume token moves, so the checkpoint's token
//! stays inside the server's history however quiet the collection is.
//!
//! It runs on one worker (the committer's); the others get an empty stream. It never marks and
//! never skips: a dropped connection reopens the stream after the last position sent, and a lost
//! history is reported ([`StreamOutcome::HistoryLost`]) for the run to rescan the work queue.

use crate::dataflow::record::{Candidate, Change, Deleted, Origin};
use crate::dataflow::source_pacing::{send_blocking as send, OpenEpoch, SourcePacing};
use crate::mongo::candidate::from_raw;
use crate::mongo::change_stream::{
    is_event_too_large, is_history_lost, read_event, ChangeFeed, EventStream, StreamPosition, StreamPositions,
    StreamStart,
};
use crate::mongo::document_id::DocId;
use crate::mongo::error::{describe, Attempts};
use crate::run::failure::Failure;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};
use timely::scheduling::SyncActivator;

/// How the stream ended, for the run to act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamOutcome {
    /// Still running, or stopped on request.
    #[default]
    Running,
    /// The server no longer has the history to resume from: the run must rescan the work queue.
    HistoryLost,
    /// The server ended the stream (an `invalidate` event: the collection was dropped or
    /// renamed, or its database dropped). Everything before it is emitted and its position
    /// recorded, so a restart opens after it.
    Invalidated,
}

/// What the source needs: the feed, the stream already opened on it (opened before the backfill
/// scan starts, so nothing falls between the two), and where to report how it ended.
pub struct StreamFeed {
    /// The stream's definition, for reopening after a dropped connection.
    pub feed: ChangeFeed,
    /// The open stream.
    pub stream: EventStream,
    /// It returns one event per batch, to find an event too large to return
    /// ([`ChangeFeed::past_too_large`]).
    pub one_at_a_time: bool,
    /// Positions per epoch, for the committer.
    pub positions: StreamPositions,
    /// Set when the stream cannot go on.
    pub outcome: Arc<Mutex<StreamOutcome>>,
}

/// An event the operator emits.
enum Ev {
    /// A document to embed; `true` for an `insert` (no earlier version can have a row).
    Upsert(Candidate, bool),
    /// A deleted document's id and the delete's cluster time (ms).
    Delete(String, Option<i64>),
}

enum Msg {
    Event(Option<Ev>, StreamPosition),
    Position(StreamPosition),
    HistoryLost,
    Invalidated,
}

/// Extension trait: the change-stream source on a scope.
pub trait ChangeStreamSource<'scope> {
    /// Follows `feed` (on this worker; `None` elsewhere) and emits every eligible document once,
    /// and every delete. Within one epoch a delete comes after every upsert of its document: a
    /// document upserted again after its delete starts a new epoch, so a deletion at epoch `e`
    /// removes exactly the rows of epochs ≤ `e` (the rule of `crate::table::output::deletions`).
    ///
    /// ```no_run
    /// # // Needs a MongoDB replica set; see tests/run/main.rs for a runnable use.
    /// use timely::dataflow::ProbeHandle;
    /// use tweet_embed_operators::dataflow::change_stream_source::ChangeStreamSource;
    /// use tweet_embed_operators::dataflow::source_pacing::SourcePacing;
    /// # fn build<'s>(scope: timely::dataflow::Scope<'s, u64>, feed: tweet_embed_operators::dataflow::change_stream_source::StreamFeed, rt: tokio::runtime::Handle) {
    /// let pacing = SourcePacing::new(1, std::time::Duration::from_secs(1), 10_000, ProbeHandle::new());
    /// let events = scope.change_stream_source(Some(feed), rt, pacing);
    /// # }
    /// ```
    fn change_stream_source(
        self,
        feed: Option<StreamFeed>,
        runtime: tokio::runtime::Handle,
        pacing: SourcePacing,
    ) -> StreamVec<'scope, u64, Change>;
}

impl<'scope> ChangeStreamSource<'scope> for Scope<'scope, u64> {
    fn change_stream_source(
        self,
        feed: Option<StreamFeed>,
        runtime: tokio::runtime::Handle,
        pacing: SourcePacing,
    ) -> StreamVec<'scope, u64, Change> {
        let scope = self;
        source(scope, "ChangeStreamSource", move |cap, info| {
            let wake = scope.worker().sync_activator_for(info.address.to_vec());
            let me = scope.activator_for(info.address.clone());
            // Workers without the stream hold nothing.
            let (mut rx, positions, outcome) = match feed {
                Some(StreamFeed { feed, stream, one_at_a_time, positions, outcome }) => {
                    let (tx, rx) = crossbeam_channel::bounded::<Msg>(8_192);
                    let text_field = feed.queue.text_field.clone();
                    let stream = Following { stream, one_at_a_time, since_narrowed: 0 };
                    runtime.spawn(follow(feed, stream, tx, wake, text_field, pacing.failure.clone()));
                    (Some(rx), positions, outcome)
                }
                None => (None, StreamPositions::default(), Arc::default()),
            };
            let mut cap = rx.is_some().then_some(cap);
            if let Some(c) = cap.as_mut() {
                c.downgrade(&pacing.clock.advance_to(pacing.start_epoch));
            }
            let mut open = OpenEpoch::new();
            let mut latest: Option<StreamPosition> = None;
            let mut recorded: Option<StreamPosition> = None;
            // The open epoch's inserted and deleted ids, and an event held for the next epoch.
            let (mut inserted, mut deleted) = (HashSet::<String>::new(), HashSet::<String>::new());
            let mut held: Option<Msg> = None;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                if pacing.stop.is_stopped() {
                    record(&positions, &mut recorded, *c.time(), &latest);
                    cap = None;
                    rx = None;
                    return;
                }
                let Some(rx) = rx.as_ref() else { return };
                let before = *c.time();
                if open.follow(&pacing, c) {
                    record(&positions, &mut recorded, before, &latest);
                }
                // An idle stream still closes epochs while its position moves, so the position
                // reaches the checkpoint.
                let moved = latest.is_some() && latest != recorded;
                if open.due(&pacing) && (open.docs() > 0 || moved) || open.full(&pacing) {
                    record(&positions, &mut recorded, *c.time(), &latest);
                    open.close(&pacing, c);
                }
                if *c.time() != before {
                    inserted.clear();
                    deleted.clear();
                }
                if open.held_back(&pacing, *c.time()) {
                    me.activate_after(Duration::from_millis(5));
                    return;
                }
                let mut lost = None;
                let mut reopen = false;
                {
                    let mut session = output.session(c);
                    for _ in 0..4_096 {
                        let next = match held.take() {
                            Some(msg) => Ok(msg),
                            None => rx.try_recv(),
                        };
                        match next {
                            Ok(Msg::Event(Some(Ev::Upsert(cand, insert)), pos)) if deleted.contains(&cand.doc.id) => {
                                // Upserted again after its delete in this epoch: the delete must not
                                // cover the new version, so the new version goes in the next epoch.
                                held = Some(Msg::Event(Some(Ev::Upsert(cand, insert)), pos));
                                reopen = true;
                                break;
                            }
                            Ok(Msg::Event(ev, pos)) => {
                                match ev {
                                    Some(Ev::Upsert(cand, insert)) => {
                                        if insert {
                                            inserted.insert(cand.doc.id.clone());
                                        }
                                        session.give(Change::Upsert(cand));
                                        open.add();
                                    }
                                    Some(Ev::Delete(id, cluster_time_ms)) => {
                                        let recorded = !inserted.contains(&id);
                                        deleted.insert(id.clone());
                                        session.give(Change::Delete(Deleted { id, cluster_time_ms, recorded }));
                                        open.add();
                                    }
                                    None => {}
                                }
                                latest = Some(pos);
                                if open.full(&pacing) || open.docs_ahead() >= pacing.max_docs_ahead {
                                    break;
                                }
                            }
                            Ok(Msg::Position(pos)) => latest = Some(pos),
                            Ok(Msg::HistoryLost) => {
                                lost = Some(StreamOutcome::HistoryLost);
                                break;
                            }
                            Ok(Msg::Invalidated) => {
                                lost = Some(StreamOutcome::Invalidated);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                if reopen {
                    record(&positions, &mut recorded, *c.time(), &latest);
                    open.close(&pacing, c);
                    inserted.clear();
                    deleted.clear();
                    me.activate();
                    return;
                }
                if let Some(ended) = lost {
                    // Everything before the loss is emitted (and its position recorded); the run
                    // decides what follows (a rescan, or an end with the reason).
                    *outcome.lock() = ended;
                    pacing.stop.stop();
                    me.activate();
                    return;
                }
                me.activate_after(open.next_wake(&pacing, !rx.is_empty()));
            }
        })
    }
}

/// Records `latest` as the position at the end of `epoch`, unless it was recorded already.
fn record(
    positions: &StreamPositions,
    recorded: &mut Option<StreamPosition>,
    epoch: u64,
    latest: &Option<StreamPosition>,
) {
    if let Some(p) = latest.as_ref().filter(|p| recorded.as_ref() != Some(*p)) {
        positions.record(epoch, p.clone());
        *recorded = Some(p.clone());
    }
}

/// The stream being followed, and whether it is narrowed to one event per batch.
struct Following {
    stream: EventStream,
    one_at_a_time: bool,
    /// Events read since it was narrowed.
    since_narrowed: u32,
}

/// Events read one at a time with no large one among them, after which the stream reopens as
/// usual (the large event's document may have shrunk since: `updateLookup` reads it anew).
const NARROWED_FOR: u32 = 1_000;

/// Follows the stream until the operator drops its receiver or the history is lost. A failed
/// `getMore` the driver could not resume itself reopens the stream after the last position sent,
/// with backoff, for as long as the error heals (an election, a dropped connection); an error that
/// cannot heal stops the run through `failure`. An event over 16 MB is skipped
/// ([`ChangeFeed::skip_too_large`]) and its position sent, so the next epoch's checkpoint is past it.
async fn follow(
    feed: ChangeFeed,
    mut following: Following,
    tx: Sender<Msg>,
    wake: SyncActivator,
    text_field: String,
    failure: Failure,
) {
    // The start point: recorded with the first epoch, and where a reopen starts before any event.
    let mut last_sent = following.stream.resume_token().map(|t| StreamPosition::new(t, None));
    if let Some(p) = last_sent.clone() {
        if tokio::task::block_in_place(|| send(&tx, Msg::Position(p), &wake)).is_err() {
            return;
        }
    }
    let mut attempts = Attempts::new(&feed.queue.retry, "following the change stream");
    let give_up = |e: &mongodb::error::Error| {
        failure.report(format!("following the change stream: {}", describe(e)));
        let _ = wake.activate();
    };
    loop {
        let msg = match following.stream.next_if_any().await {
            Ok(Some(raw)) => {
                attempts.succeeded();
                if following.one_at_a_time {
                    following.since_narrowed += 1;
                }
                let event = match read_event(&raw) {
                    Ok(e) => e,
                    Err(e) => {
                        // The driver has checked `_id` already, so this cannot happen; never
                        // stall on one event should it.
                        tracing::warn!(error = %e, "skipping an unreadable change event");
                        continue;
                    }
                };
                let pos = StreamPosition::new(event.id.clone(), event.cluster_time);
                if event.invalidate {
                    tracing::error!("the change stream was invalidated: the watched collection was dropped or renamed, or its database dropped");
                    let _ = tokio::task::block_in_place(|| send(&tx, Msg::Event(None, pos), &wake));
                    let _ = tokio::task::block_in_place(|| send(&tx, Msg::Invalidated, &wake));
                    let _ = wake.activate();
                    return;
                }
                let ev = if event.operation == "delete" {
                    let id = event.document_key.as_deref().map(|raw| DocId::read(raw).into_string());
                    let time = event.cluster_time.map(|t| i64::from(t.time) * 1000);
                    id.map(|id| Ev::Delete(id, time))
                } else {
                    let insert = event.operation == "insert";
                    event.full_document.map(|d| Ev::Upsert(from_raw(&d, &text_field, Origin::ChangeStream).1, insert))
                };
                last_sent = Some(pos.clone());
                Msg::Event(ev, pos)
            }
            Ok(None) if !following.stream.is_alive() => {
                // The server closed the stream without an event we saw (an `invalidate` a
                // pipeline filtered): polling a dead stream would spin for ever.
                tracing::error!("the server closed the change stream: the watched collection was dropped or renamed, or its database dropped");
                Msg::Invalidated
            }
            Ok(None) => {
                attempts.succeeded();
                match following.stream.resume_token() {
                    Some(token) if last_sent.as_ref().map(|p| &p.token) != Some(&token) => {
                        let pos = StreamPosition::new(token, None);
                        last_sent = Some(pos.clone());
                        Msg::Position(pos)
                    }
                    _ => continue,
                }
            }
            Err(e) if is_history_lost(&e) => Msg::HistoryLost,
            Err(e) => {
                let start = last_sent.as_ref().map_or(StreamStart::Now, |p| StreamStart::After(p.token.clone()));
                let mut failed = e;
                if is_event_too_large(&failed) {
                    match feed.past_too_large(&start, following.one_at_a_time, &failed).await {
                        Ok(past) => {
                            if let Some(skipped) = past.skipped {
                                last_sent = Some(skipped.position.clone());
                                if tokio::task::block_in_place(|| send(&tx, Msg::Position(skipped.position), &wake))
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            following =
                                Following { stream: past.stream, one_at_a_time: past.one_at_a_time, since_narrowed: 0 };
                            continue;
                        }
                        Err(e) => failed = e,
                    }
                }
                loop {
                    match attempts.failed(failed) {
                        Ok(wait) => tokio::time::sleep(wait).await,
                        Err(e) => return give_up(&e),
                    }
                    match feed.open_past_large(&start).await {
                        Ok(past) => {
                            if let Some(skipped) = past.skipped {
                                last_sent = Some(skipped.position.clone());
                                let msg = Msg::Position(skipped.position);
                                if tokio::task::block_in_place(|| send(&tx, msg, &wake)).is_err() {
                                    return;
                                }
                            }
                            following =
                                Following { stream: past.stream, one_at_a_time: past.one_at_a_time, since_narrowed: 0 };
                            break;
                        }
                        Err(e) if is_history_lost(&e) => {
                            let _ = tokio::task::block_in_place(|| send(&tx, Msg::HistoryLost, &wake));
                            let _ = wake.activate();
                            return;
                        }
                        Err(e) => failed = e,
                    }
                }
                continue;
            }
        };
        let lost = matches!(msg, Msg::HistoryLost | Msg::Invalidated);
        if tokio::task::block_in_place(|| send(&tx, msg, &wake)).is_err() {
            return;
        }
        let _ = wake.activate();
        if lost {
            return;
        }
        if following.one_at_a_time && following.since_narrowed >= NARROWED_FOR {
            // Past the large event without meeting it again: back to full batches (a failed
            // open keeps the narrowed stream, and tries again after as many events).
            following.since_narrowed = 0;
            if let Some(p) = &last_sent {
                if let Ok(stream) = feed.open(&StreamStart::After(p.token.clone())).await {
                    following = Following { stream, one_at_a_time: false, since_narrowed: 0 };
                }
            }
        }
    }
}
