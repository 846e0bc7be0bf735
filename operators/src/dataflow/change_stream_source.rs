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
//!
//! The operator is `crate::dataflow::async_source` over `StreamState`, which decides what each
//! message means (positions, the open epoch's inserts and deletes); `follow` is the task.

use crate::dataflow::async_source::{async_source, OpenView, SourceSender, SourceState, Step};
use crate::dataflow::record::{Candidate, Change, Deleted, Origin};
use crate::dataflow::source_pacing::SourcePacing;
use crate::mongo::candidate::from_raw;
use crate::mongo::change_stream::{
    is_event_too_large, is_history_lost, read_event, ChangeFeed, EventStream, StreamPosition, StreamPositions,
    StreamStart,
};
use crate::mongo::document_id::DocId;
use crate::mongo::error::{describe, Attempts};
use crate::run::failure::Failure;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;
use timely::dataflow::{Scope, StreamVec};

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
#[derive(Debug, PartialEq)]
pub(crate) enum Ev {
    /// A document to embed; `true` for an `insert` (no earlier version can have a row).
    Upsert(Candidate, bool),
    /// A deleted document's id and the delete's cluster time (ms).
    Delete(String, Option<i64>),
}

/// What the following task sends.
#[derive(Debug, PartialEq)]
pub(crate) enum Msg {
    /// An event (`None`: one with nothing to emit), and the stream position after it.
    Event(Option<Ev>, StreamPosition),
    /// The stream moved on without an event to emit (a post-batch resume token, a skipped
    /// event too large to return).
    Position(StreamPosition),
    /// The history to resume from is gone.
    HistoryLost,
    /// The server ended the stream.
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
        // Workers without the stream hold nothing.
        let start = feed.map(|StreamFeed { feed, stream, one_at_a_time, positions, outcome }| {
            let failure = pacing.failure.clone();
            let text_field = feed.queue.text_field.clone();
            let stream = Following { stream, one_at_a_time, since_narrowed: 0 };
            let task = move |tx| follow(feed, stream, tx, text_field, failure);
            (StreamState::new(positions, outcome), task)
        });
        async_source(self, "ChangeStreamSource", runtime, pacing, start)
    }
}

/// What the stream's messages mean to the operator, and what it keeps between them: the position
/// reached and the one last recorded into [`StreamPositions`], and the open epoch's inserted and
/// deleted ids.
pub(crate) struct StreamState {
    positions: StreamPositions,
    outcome: Arc<Mutex<StreamOutcome>>,
    /// The position after the last message taken.
    latest: Option<StreamPosition>,
    /// The position last recorded for an epoch.
    recorded: Option<StreamPosition>,
    /// Ids inserted in the open epoch: a delete of one needs no record.
    inserted: HashSet<String>,
    /// Ids deleted in the open epoch: an upsert of one goes to the next epoch.
    deleted: HashSet<String>,
}

impl StreamState {
    pub(crate) fn new(positions: StreamPositions, outcome: Arc<Mutex<StreamOutcome>>) -> StreamState {
        StreamState {
            positions,
            outcome,
            latest: None,
            recorded: None,
            inserted: HashSet::new(),
            deleted: HashSet::new(),
        }
    }

    /// Records the latest position as the position at the end of `epoch`, unless it was recorded
    /// already.
    fn record(&mut self, epoch: u64) {
        if let Some(p) = self.latest.as_ref().filter(|p| self.recorded.as_ref() != Some(*p)) {
            self.positions.record(epoch, p.clone());
            self.recorded = Some(p.clone());
        }
    }

    /// The stream ended: everything before is emitted (and its position recorded when the
    /// source stops); the run decides what follows (a rescan, or an end with the reason).
    fn ended(&mut self, how: StreamOutcome) -> Step<Change, Msg> {
        *self.outcome.lock() = how;
        Step::Stop
    }
}

impl SourceState for StreamState {
    type Msg = Msg;
    type Out = Change;
    const ENDS_WITH_TASK: bool = false;

    fn take(&mut self, msg: Msg) -> Step<Change, Msg> {
        match msg {
            Msg::Event(Some(Ev::Upsert(cand, insert)), pos) if self.deleted.contains(&cand.doc.id) => {
                // Upserted again after its delete in this epoch: the delete must not cover the
                // new version, so the new version goes in the next epoch.
                Step::NextEpoch(Msg::Event(Some(Ev::Upsert(cand, insert)), pos))
            }
            Msg::Event(ev, pos) => {
                let step = match ev {
                    Some(Ev::Upsert(cand, insert)) => {
                        if insert {
                            self.inserted.insert(cand.doc.id.clone());
                        }
                        Step::Emit(Change::Upsert(cand))
                    }
                    Some(Ev::Delete(id, cluster_time_ms)) => {
                        let recorded = !self.inserted.contains(&id);
                        self.deleted.insert(id.clone());
                        Step::Emit(Change::Delete(Deleted { id, cluster_time_ms, recorded }))
                    }
                    None => Step::Quiet,
                };
                self.latest = Some(pos);
                step
            }
            Msg::Position(pos) => {
                self.latest = Some(pos);
                Step::Quiet
            }
            Msg::HistoryLost => self.ended(StreamOutcome::HistoryLost),
            Msg::Invalidated => self.ended(StreamOutcome::Invalidated),
        }
    }

    /// An idle stream still closes epochs while its position moves, so the position reaches the
    /// checkpoint.
    fn closes(&self, open: OpenView) -> bool {
        let moved = self.latest.is_some() && self.latest != self.recorded;
        open.due && (open.docs > 0 || moved) || open.full
    }

    fn epoch_ended(&mut self, epoch: u64) {
        self.record(epoch);
        self.inserted.clear();
        self.deleted.clear();
    }

    fn stopping(&mut self, epoch: u64) {
        self.record(epoch);
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
    tx: SourceSender<Msg>,
    text_field: String,
    failure: Failure,
) {
    // The start point: recorded with the first epoch, and where a reopen starts before any event.
    let mut last_sent = following.stream.resume_token().map(|t| StreamPosition::new(t, None));
    if let Some(p) = last_sent.clone() {
        if tx.send(Msg::Position(p)).is_err() {
            return;
        }
    }
    let mut attempts = Attempts::new(&feed.queue.retry, "following the change stream");
    let give_up = |e: &mongodb::error::Error| {
        failure.report(format!("following the change stream: {}", describe(e)));
        tx.wake();
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
                    let _ = tx.send(Msg::Event(None, pos));
                    let _ = tx.send(Msg::Invalidated);
                    tx.wake();
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
                                if tx.send(Msg::Position(skipped.position)).is_err() {
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
                                if tx.send(msg).is_err() {
                                    return;
                                }
                            }
                            following =
                                Following { stream: past.stream, one_at_a_time: past.one_at_a_time, since_narrowed: 0 };
                            break;
                        }
                        Err(e) if is_history_lost(&e) => {
                            let _ = tx.send(Msg::HistoryLost);
                            tx.wake();
                            return;
                        }
                        Err(e) => failed = e,
                    }
                }
                continue;
            }
        };
        let lost = matches!(msg, Msg::HistoryLost | Msg::Invalidated);
        if tx.send(msg).is_err() {
            return;
        }
        tx.wake();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::record::DocMeta;
    use mongodb::bson::{doc, Bson};

    fn at(data: &str) -> StreamPosition {
        StreamPosition::new(mongodb::bson::from_bson(Bson::Document(doc! {"_data": data})).expect("token"), None)
    }

    fn upsert(id: &str, insert: bool, pos: &str) -> Msg {
        let doc = DocMeta { id: id.into(), lang: None, created_at_ms: None, origin: Origin::ChangeStream };
        Msg::Event(Some(Ev::Upsert(Candidate { doc, text: Ok("t".into()) }, insert)), at(pos))
    }

    fn delete(id: &str, pos: &str) -> Msg {
        Msg::Event(Some(Ev::Delete(id.into(), Some(7))), at(pos))
    }

    fn state() -> (StreamState, StreamPositions, Arc<Mutex<StreamOutcome>>) {
        let (positions, outcome) = (StreamPositions::default(), Arc::<Mutex<StreamOutcome>>::default());
        (StreamState::new(positions.clone(), outcome.clone()), positions, outcome)
    }

    fn deleted(step: Step<Change, Msg>) -> Deleted {
        match step {
            Step::Emit(Change::Delete(d)) => d,
            _ => panic!("not a delete"),
        }
    }

    #[test]
    fn a_delete_of_a_document_inserted_in_the_same_epoch_needs_no_record() {
        let (mut s, _, _) = state();
        assert!(matches!(s.take(upsert("a", true, "8201")), Step::Emit(Change::Upsert(_))));
        assert!(matches!(s.take(upsert("b", false, "8202")), Step::Emit(Change::Upsert(_))));
        let a = deleted(s.take(delete("a", "8203")));
        assert_eq!((a.id.as_str(), a.cluster_time_ms, a.recorded), ("a", Some(7), false));
        assert!(deleted(s.take(delete("b", "8204"))).recorded, "an update is no insert");
        s.epoch_ended(1);
        assert!(s.take(upsert("c", true, "8205")) != Step::Quiet);
        s.epoch_ended(2);
        assert!(deleted(s.take(delete("c", "8206"))).recorded, "inserted in an earlier epoch");
    }

    #[test]
    fn an_upsert_after_its_delete_waits_for_the_next_epoch() {
        let (mut s, _, _) = state();
        assert!(deleted(s.take(delete("a", "8201"))).recorded);
        let again = upsert("a", true, "8202");
        assert_eq!(s.take(upsert("a", true, "8202")), Step::NextEpoch(again));
        assert_eq!(s.latest, Some(at("8201")), "the held upsert has not moved the position");
        s.epoch_ended(1);
        assert!(matches!(s.take(upsert("a", true, "8202")), Step::Emit(Change::Upsert(_))));
    }

    #[test]
    fn each_epoch_records_the_position_reached_once() {
        let (mut s, positions, _) = state();
        s.epoch_ended(1);
        assert_eq!(positions.epochs(), Vec::<u64>::new(), "no position yet");
        assert_eq!(s.take(Msg::Position(at("8201"))), Step::Quiet);
        assert_eq!(s.take(Msg::Event(None, at("8202"))), Step::Quiet);
        s.epoch_ended(2);
        s.epoch_ended(3);
        assert_eq!(positions.epochs(), vec![2], "an unmoved position is recorded once");
        s.take(upsert("a", false, "8203"));
        s.stopping(4);
        assert_eq!(positions.take_upto(9), Some((4, at("8203"))));
    }

    #[test]
    fn an_idle_stream_closes_epochs_while_its_position_moves() {
        let (mut s, _, _) = state();
        let idle = OpenView { docs: 0, due: true, full: false };
        assert!(!s.closes(idle), "nothing to record");
        s.take(Msg::Position(at("8201")));
        assert!(s.closes(idle));
        assert!(!s.closes(OpenView { due: false, ..idle }), "not before the interval");
        s.epoch_ended(1);
        assert!(!s.closes(idle), "recorded");
        assert!(s.closes(OpenView { docs: 3, ..idle }));
        assert!(s.closes(OpenView { docs: 3, due: false, full: true }));
    }

    #[test]
    fn a_lost_or_invalidated_stream_stops_the_pass_with_its_outcome() {
        let (mut s, _, outcome) = state();
        // A task that gave up waits for the stop signal.
        const { assert!(!StreamState::ENDS_WITH_TASK) };
        assert_eq!(s.take(Msg::HistoryLost), Step::Stop);
        assert_eq!(*outcome.lock(), StreamOutcome::HistoryLost);
        assert_eq!(s.take(Msg::Invalidated), Step::Stop);
        assert_eq!(*outcome.lock(), StreamOutcome::Invalidated);
    }
}
