//! The change stream of continuous mode: which events it watches, where it starts, how its
//! position is written into the checkpoint, and which errors mean the server's history is gone.
//!
//! The stream watches inserts, updates and replaces with `fullDocument: updateLookup` and a
//! `$match` mirroring the work-queue filter on the full document, so the marker's own updates
//! (which set the mark) never come back as work; and every delete, whose `documentKey` becomes a
//! deletion in the dataset. It owns no task and no operator: the source
//! operator (`change_stream_source`) drives it, the committer records its [`StreamPosition`]s.
//!
//! Events are projected to the fields the pipeline reads (the work queue scan's projection), so a
//! large document rarely makes an event over mongod's 16 MB limit (BSONObjectTooLarge, 10334,
//! on the `getMore`, which no resume can pass). The failure fails a whole batch, so the stream
//! first reopens at the last position with one event per batch ([`ChangeFeed::past_too_large`]):
//! the events before the large one are read as usual, and when the failure comes again the large
//! event is the next one. That one is skipped ([`ChangeFeed::skip_too_large`]), with an ERROR naming
//! the document and the event's cluster time, and the document stays unmarked in the work queue
//! for the next scan; then the stream reopens as usual. `$changeStreamSplitLargeEvent`
//! (MongoDB 7.0) is not used: it splits an event by top-level field, and after the projection the
//! only large field left is `fullDocument`, which it cannot split (a field alone over the limit
//! fails with code 7182803; MongoDB docs, "Large Change Stream Events").

use crate::mongo::work_queue::WorkQueue;
use mongodb::bson::{doc, Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// BSONObjectTooLarge: a change event over 16 MB (mongod's `BSONObjMaxInternalSize`).
pub const EVENT_TOO_LARGE_CODES: [i32; 1] = [10334];

/// Server codes that mean the stream cannot resume from where it was: ChangeStreamHistoryLost
/// (286), ChangeStreamFatalError (280) and InvalidResumeToken (260).
pub const HISTORY_LOST_CODES: [i32; 3] = [286, 280, 260];

/// The open stream as the driver gives it: events as the server sent them, read by
/// [`read_event`], since a typed event refuses a whole event for one string that is not UTF-8
/// in its `fullDocument` or `updateDescription` (and reopening after the last position would
/// read the same event again for ever).
pub type EventStream = ChangeStream<RawDocumentBuf>;

/// The parts of a raw change event the pipeline uses.
#[derive(Debug)]
pub struct Event {
    /// The event's resume token (`_id`).
    pub id: ResumeToken,
    /// Its `clusterTime`.
    pub cluster_time: Option<Timestamp>,
    /// Its `fullDocument`, raw, for `candidate::from_raw`.
    pub full_document: Option<RawDocumentBuf>,
    /// An `invalidate` event: the watched collection was dropped or renamed (or its database
    /// dropped), and the server has closed the stream.
    pub invalidate: bool,
    /// Its `operationType`: `insert`, `update`, `replace`, `delete`, …
    pub operation: String,
    /// Its `documentKey`, raw (a delete has no `fullDocument`).
    pub document_key: Option<RawDocumentBuf>,
}

/// Reads the parts of a raw event, never its strings (the driver has already required `_id`).
pub fn read_event(raw: &RawDocument) -> Result<Event, String> {
    let (mut id, mut cluster_time, mut full_document, mut invalidate) = (None, None, None, false);
    let (mut operation, mut document_key) = (String::new(), None);
    for el in raw.iter_elements().flatten() {
        match (el.key(), el.value()) {
            ("_id", Ok(v)) => {
                let b = Bson::try_from(v.to_raw_bson()).map_err(|e| format!("resume token: {e}"))?;
                id = Some(mongodb::bson::from_bson(b).map_err(|e| format!("resume token: {e}"))?);
            }
            ("clusterTime", Ok(RawBsonRef::Timestamp(t))) => cluster_time = Some(t),
            ("fullDocument", Ok(RawBsonRef::Document(d))) => full_document = Some(d.to_owned()),
            ("operationType", Ok(RawBsonRef::String(op))) => {
                invalidate = op == "invalidate";
                operation = op.to_string();
            }
            ("documentKey", Ok(RawBsonRef::Document(d))) => document_key = Some(d.to_owned()),
            _ => {}
        }
    }
    let id = id.ok_or("a change event without a readable _id (resume token)")?;
    Ok(Event { id, cluster_time, full_document, invalidate, operation, document_key })
}

/// Where to open the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamStart {
    /// Now: the first run, or after the history was lost.
    Now,
    /// Just after this token (from the checkpoint).
    After(ResumeToken),
}

/// A point in the stream: everything up to it has been emitted.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamPosition {
    /// The resume token.
    pub token: ResumeToken,
    /// The cluster time of the token, when known (`(seconds, increment)`).
    pub cluster_time: Option<(u32, u32)>,
}

impl StreamPosition {
    /// A position at `token`, its cluster time from `event_time` or else decoded from the token.
    pub fn new(token: ResumeToken, event_time: Option<Timestamp>) -> StreamPosition {
        let cluster_time = event_time.map(|t| (t.time, t.increment)).or_else(|| token_cluster_time(&token));
        StreamPosition { token, cluster_time }
    }
}

/// Positions of the stream at the end of each epoch, written by the source when it closes an
/// epoch and taken by the committer when it commits one.
#[derive(Clone, Debug, Default)]
pub struct StreamPositions(Arc<Mutex<BTreeMap<u64, StreamPosition>>>);

impl StreamPositions {
    /// Records that everything up to `pos` was emitted at epochs ≤ `epoch`.
    pub fn record(&self, epoch: u64, pos: StreamPosition) {
        self.0.lock().insert(epoch, pos);
    }

    /// The latest position recorded for an epoch ≤ `epoch`, with that epoch, forgetting those
    /// up to it.
    pub fn take_upto(&self, epoch: u64) -> Option<(u64, StreamPosition)> {
        let mut map = self.0.lock();
        let later = match epoch.checked_add(1) {
            Some(next) => map.split_off(&next),
            None => BTreeMap::new(),
        };
        let upto = std::mem::replace(&mut *map, later);
        upto.into_iter().next_back()
    }

    /// The epochs with a recorded position.
    pub fn epochs(&self) -> Vec<u64> {
        self.0.lock().keys().copied().collect()
    }
}

/// The stream's definition over a work queue.
#[derive(Clone, Debug)]
pub struct ChangeFeed {
    /// The work queue whose filter the stream mirrors.
    pub queue: WorkQueue,
    /// How long a `getMore` waits for events; also how often an idle stream reports its
    /// post-batch resume token.
    pub max_await: Duration,
}

impl ChangeFeed {
    /// The aggregation pipeline: eligible documents after inserts, updates and replaces, and
    /// every delete, projected to the fields the pipeline reads.
    pub fn pipeline(&self) -> Vec<Document> {
        let mut keep = doc! {"_id": 1, "operationType": 1, "clusterTime": 1, "documentKey": 1};
        for field in ["_id", self.queue.text_field.as_str(), "lang", "created_at"] {
            keep.insert(format!("fullDocument.{field}"), 1);
        }
        vec![self.matching(), doc! {"$project": keep}]
    }

    /// The pipeline that reads past an event too large to return: the same events, without
    /// their documents.
    fn slim_pipeline(&self) -> Vec<Document> {
        vec![self.matching(), doc! {"$project": {"_id": 1, "operationType": 1, "clusterTime": 1, "documentKey": 1}}]
    }

    fn matching(&self) -> Document {
        let mut m = doc! {
            "operationType": {"$in": ["insert", "update", "replace"]},
            "fullDocument._id": {"$exists": true},
        };
        for (k, v) in self.queue.filter(None) {
            m.insert(format!("fullDocument.{k}"), v);
        }
        doc! {"$match": {"$or": [m, {"operationType": "delete"}]}}
    }

    /// Opens the stream at `start`.
    pub async fn open(&self, start: &StreamStart) -> Result<EventStream, mongodb::error::Error> {
        self.open_with(start, self.pipeline(), None).await
    }

    /// Opens the stream at `start`, or, if an event there is too large to return, a stream as
    /// [`ChangeFeed::past_too_large`] gives it.
    pub async fn open_past_large(&self, start: &StreamStart) -> Result<PastLarge, mongodb::error::Error> {
        match self.open(start).await {
            Err(e) if is_event_too_large(&e) => self.past_too_large(start, false, &e).await,
            other => other.map(|stream| PastLarge { stream, one_at_a_time: false, skipped: None }),
        }
    }

    /// After `failed` (BSONObjectTooLarge) reading after `start`: a stream that goes on. Unless
    /// `one_at_a_time` already, it reopens at `start` with one event per batch, so that the events
    /// before the large one are read, and the failure, if it comes again, is the next event's.
    /// Otherwise (or if that open fails the same way) the next event is the large one: skipped.
    pub async fn past_too_large(
        &self,
        start: &StreamStart,
        one_at_a_time: bool,
        failed: &mongodb::error::Error,
    ) -> Result<PastLarge, mongodb::error::Error> {
        if !one_at_a_time {
            match self.open_with(start, self.pipeline(), Some(1)).await {
                Ok(stream) => return Ok(PastLarge { stream, one_at_a_time: true, skipped: None }),
                Err(e) if is_event_too_large(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let (stream, skipped) = self.skip_too_large(start, failed).await?;
        Ok(PastLarge { stream, one_at_a_time: false, skipped: Some(skipped) })
    }

    /// After `failed` (BSONObjectTooLarge) on the first event after `start`: reads that event
    /// without its document, logs an ERROR naming it, and reopens the stream just after it.
    /// Errors: the server's, or `failed` again when the next event cannot be read even without its
    /// document.
    pub async fn skip_too_large(
        &self,
        start: &StreamStart,
        failed: &mongodb::error::Error,
    ) -> Result<(EventStream, SkippedEvent), mongodb::error::Error> {
        let mut slim = self.open_with(start, self.slim_pipeline(), Some(1)).await?;
        // The event is there already (the server failed to return it): a few empty polls at
        // most, while the cursor catches up; bounded so a vanished event cannot hold us.
        for _ in 0..10 {
            let Some(raw) = slim.next_if_any().await? else { continue };
            let event = read_event(&raw).map_err(mongodb::error::Error::custom)?;
            let id = event.document_key.as_deref().map(crate::mongo::document_id::DocId::read_bson);
            let skipped = SkippedEvent {
                position: StreamPosition::new(event.id.clone(), event.cluster_time),
                document_id: id.as_ref().map(|id| crate::mongo::document_id::DocId::of(id).into_string()),
                operation: event.operation,
            };
            tracing::error!(
                document = skipped.document_id.as_deref().unwrap_or("unknown"),
                cluster_time = %skipped.position.cluster_time.map_or("unknown".to_string(), |(t, i)| format!("Timestamp({t}, {i})")),
                operation = %skipped.operation,
                error = %crate::mongo::error::describe(failed),
                "skipped a change event over MongoDB's 16 MB limit (BSONObjectTooLarge); the document stays \
                 unmarked in the work queue, and the next scan (the next start of run, or backfill) embeds it"
            );
            let after = StreamStart::After(skipped.position.token.clone());
            return Ok((self.open(&after).await?, skipped));
        }
        Err(failed.clone())
    }

    async fn open_with(
        &self,
        start: &StreamStart,
        pipeline: Vec<Document>,
        batch_size: Option<u32>,
    ) -> Result<EventStream, mongodb::error::Error> {
        let coll = self.queue.coll.clone_with_type::<RawDocumentBuf>();
        let mut watch = coll
            .watch()
            .pipeline(pipeline)
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(self.max_await);
        if let Some(n) = batch_size {
            watch = watch.batch_size(n);
        }
        match start {
            StreamStart::Now => watch.await,
            // startAfter, not resumeAfter: it also opens after an `invalidate` event's token (the
            // collection was dropped or renamed), where resumeAfter is refused.
            StreamStart::After(token) => watch.start_after(token.clone()).await,
        }
        .map(|s| s.with_type::<RawDocumentBuf>())
    }
}

/// A stream opened past an event too large to return.
#[derive(Debug)]
pub struct PastLarge {
    /// The stream.
    pub stream: EventStream,
    /// It returns one event per batch (to find the large one); reopen it as usual once past.
    pub one_at_a_time: bool,
    /// The event skipped, if one was.
    pub skipped: Option<SkippedEvent>,
}

/// A change event read past because it was too large to return.
#[derive(Clone, Debug)]
pub struct SkippedEvent {
    /// Its position: the stream goes on just after it.
    pub position: StreamPosition,
    /// Its document's `_id` (the engine's form), when the event has a `documentKey`.
    pub document_id: Option<String>,
    /// Its `operationType`.
    pub operation: String,
}

/// Whether `e` is a change event over 16 MB (BSONObjectTooLarge).
pub fn is_event_too_large(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if EVENT_TOO_LARGE_CODES.contains(&c.code))
}

/// Whether `e` says the stream's resume point is no longer in the server's history.
pub fn is_history_lost(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if HISTORY_LOST_CODES.contains(&c.code))
}

/// A token as relaxed extended JSON, for the checkpoint.
pub fn token_to_json(token: &ResumeToken) -> Result<String, String> {
    let b = mongodb::bson::to_bson(token).map_err(|e| format!("resume token: {e}"))?;
    Ok(b.into_relaxed_extjson().to_string())
}

/// The inverse of [`token_to_json`].
pub fn token_from_json(s: &str) -> Result<ResumeToken, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("resume token is not JSON: {e}"))?;
    let b = Bson::try_from(v).map_err(|e| format!("resume token is not extended JSON: {e}"))?;
    mongodb::bson::from_bson(b).map_err(|e| format!("not a resume token: {e}"))
}

/// The cluster time inside a token: mongod's `_data` starts with `82` and the 8-byte timestamp.
pub fn token_cluster_time(token: &ResumeToken) -> Option<(u32, u32)> {
    let b = mongodb::bson::to_bson(token).ok()?;
    let data = b.as_document()?.get_str("_data").ok()?;
    let hex = data.get(2..18).filter(|_| data.starts_with("82"))?;
    let time = u32::from_str_radix(&hex[..8], 16).ok()?;
    let inc = u32::from_str_radix(&hex[8..], 16).ok()?;
    Some((time, inc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(data: &str) -> ResumeToken {
        mongodb::bson::from_bson(Bson::Document(doc! {"_data": data})).expect("token")
    }

    #[test]
    fn tokens_round_trip_and_carry_their_time() {
        let t = token("8265A1B2C3000000042B0229296E04");
        let json = token_to_json(&t).expect("json");
        assert_eq!(token_from_json(&json).expect("back"), t);
        assert_eq!(token_cluster_time(&t), Some((0x65A1_B2C3, 4)));
        assert_eq!(token_cluster_time(&token("zz")), None);
        assert!(token_from_json("{").is_err());
    }

    #[test]
    fn positions_are_taken_up_to_an_epoch() {
        let p = StreamPositions::default();
        let at = |s: &str| StreamPosition::new(token(s), None);
        p.record(3, at("8200000001"));
        p.record(5, at("8200000002"));
        p.record(8, at("8200000003"));
        assert_eq!(p.take_upto(6), Some((5, at("8200000002"))));
        assert_eq!(p.epochs(), vec![8]);
        assert_eq!(p.take_upto(7), None);
    }
}
