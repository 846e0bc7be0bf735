//! Change streams through the driver: events and updateLookup, a `$match` like the pipeline's,
//! blocking getMore, resume tokens (also after dropped connections), startAtOperationTime,
//! post-batch resume tokens on idle collections, and ChangeStreamHistoryLost.

use super::{code_of, Fixture};
use futures_util::StreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use std::time::{Duration, Instant};

type Stream = ChangeStream<ChangeStreamEvent<Document>>;

async fn next(stream: &mut Stream) -> ChangeStreamEvent<Document> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("event within 10 s")
        .expect("stream open")
        .expect("event")
}

fn id_of(e: &ChangeStreamEvent<Document>) -> Bson {
    e.document_key.as_ref().and_then(|k| k.get("_id")).cloned().expect("documentKey")
}

/// The pipeline's filter: inserts, updates and replaces of documents still in the work queue.
fn work_queue_match() -> Document {
    doc! {"$match": {
        "operationType": {"$in": ["insert", "update", "replace"]},
        "fullDocument.retweeted": null,
        "fullDocument.gemma_embedded_768": null,
    }}
}

#[tokio::test]
async fn events_lookup_and_match() {
    let f = Fixture::new().await;
    let c = f.coll("tweets");
    let mut all = c.watch().full_document(FullDocumentType::UpdateLookup).await.unwrap();
    let mut eligible =
        c.watch().pipeline(vec![work_queue_match()]).full_document(FullDocumentType::UpdateLookup).await.unwrap();
    c.insert_one(doc! {"_id": 1, "text": "a"}).await.unwrap();
    c.insert_one(doc! {"_id": 2, "text": "rt", "retweeted": true}).await.unwrap();
    c.update_one(doc! {"_id": 2}, doc! {"$unset": {"retweeted": ""}}).await.unwrap();
    c.update_one(doc! {"_id": 1}, doc! {"$set": {"gemma_embedded_768": true}}).await.unwrap();
    c.replace_one(doc! {"_id": 2}, doc! {"text": "replaced"}).await.unwrap();
    c.delete_one(doc! {"_id": 2}).await.unwrap();

    let kinds: Vec<(OperationType, Bson)> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            let e = next(&mut all).await;
            v.push((e.operation_type.clone(), id_of(&e)));
        }
        v
    };
    use OperationType::*;
    assert_eq!(
        kinds,
        vec![
            (Insert, Bson::Int32(1)),
            (Insert, Bson::Int32(2)),
            (Update, Bson::Int32(2)),
            (Update, Bson::Int32(1)),
            (Replace, Bson::Int32(2)),
            (Delete, Bson::Int32(2)),
        ]
    );
    // The marker's own update (_id 1 marked) and the retweet never reach the eligible stream;
    // the un-retweeted document does, with its current state looked up.
    let e = next(&mut eligible).await;
    assert_eq!((e.operation_type.clone(), id_of(&e)), (Insert, Bson::Int32(1)));
    assert_eq!(e.full_document, Some(doc! {"_id": 1, "text": "a"}));
    let e = next(&mut eligible).await;
    assert_eq!((e.operation_type.clone(), id_of(&e)), (Update, Bson::Int32(2)));
    let desc = e.update_description.expect("updateDescription");
    assert_eq!(desc.removed_fields, vec!["retweeted".to_string()]);
    let e = next(&mut eligible).await;
    assert_eq!((e.operation_type.clone(), id_of(&e)), (Replace, Bson::Int32(2)));
    assert_eq!(e.full_document, Some(doc! {"_id": 2, "text": "replaced"}));
    assert!(eligible.next_if_any().await.unwrap().is_none());
}

#[tokio::test]
async fn blocking_get_more_and_idle_tokens_advance() {
    let f = Fixture::new().await;
    let c = f.coll("quiet");
    let mut s = c.watch().max_await_time(Duration::from_millis(300)).await.unwrap();
    // The first call only hands over the (empty) first batch; the second is a getMore.
    assert!(s.next_if_any().await.unwrap().is_none());
    let start = Instant::now();
    assert!(s.next_if_any().await.unwrap().is_none());
    // The server blocked for maxTimeMS instead of answering at once.
    assert!(start.elapsed() >= Duration::from_millis(250), "getMore returned after {:?}", start.elapsed());
    let t1 = s.resume_token().expect("post-batch token");
    // Writes elsewhere move the quiet collection's token forward without events.
    f.coll("busy").insert_one(doc! {"x": 1}).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(s.next_if_any().await.unwrap().is_none());
    let t2 = s.resume_token().expect("post-batch token");
    assert_ne!(t1, t2);
    // A polled quiet stream stays valid while the busy collection's writes leave the history.
    f.server.set_history(1);
    for i in 0..5 {
        f.coll("busy").insert_one(doc! {"i": i}).await.unwrap();
        assert!(s.next_if_any().await.unwrap().is_none());
    }
    let t3 = s.resume_token().expect("token");
    drop(s);
    let mut resumed = c.watch().resume_after(t3).await.unwrap();
    c.insert_one(doc! {"_id": "after"}).await.unwrap();
    assert_eq!(id_of(&next(&mut resumed).await), Bson::String("after".into()));
}

#[tokio::test]
async fn resume_after_start_at_and_history_lost() {
    let f = Fixture::new().await;
    let c = f.coll("r");
    let mut s = c.watch().await.unwrap();
    for i in 0..5 {
        c.insert_one(doc! {"_id": i}).await.unwrap();
    }
    let first = next(&mut s).await;
    let second = next(&mut s).await;
    let token = s.resume_token().unwrap();
    drop(s);
    let mut resumed = c.watch().resume_after(token.clone()).await.unwrap();
    let got: Vec<Bson> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(id_of(&next(&mut resumed).await));
        }
        v
    };
    assert_eq!(got, vec![Bson::Int32(2), Bson::Int32(3), Bson::Int32(4)]);
    let at = second.cluster_time.expect("clusterTime");
    let mut from = c.watch().start_at_operation_time(at).await.unwrap();
    assert_eq!(id_of(&next(&mut from).await), Bson::Int32(1));
    let mut after_first = c.watch().start_after(first.id.clone()).await.unwrap();
    assert_eq!(id_of(&next(&mut after_first).await), Bson::Int32(1));

    // History shorter than the gap: the old token is refused with 286, not silently skipped.
    f.server.set_history(2);
    let err = c.watch().resume_after(token).await.unwrap_err();
    assert_eq!(code_of(&err), Some(286));
    let err = c.watch().start_at_operation_time(at).await.unwrap_err();
    assert_eq!(code_of(&err), Some(286));
    // An open stream that falls behind the history gets 286 from its next getMore.
    let mut behind = c.watch().await.unwrap();
    f.server.with_store(|s| s.oplog.truncate_all());
    c.insert_one(doc! {"_id": 100}).await.unwrap();
    f.server.truncate_history();
    let err = match tokio::time::timeout(Duration::from_secs(10), behind.next()).await.expect("answer") {
        Some(Err(e)) => e,
        Some(Ok(e)) => panic!("event {e:?} after history loss"),
        None => panic!("stream closed"),
    };
    assert_eq!(code_of(&err), Some(286));
}

#[tokio::test]
async fn stream_survives_dropped_connections() {
    let f = Fixture::new().await;
    let c = f.coll("drops");
    let mut s = c.watch().full_document(FullDocumentType::UpdateLookup).await.unwrap();
    c.insert_one(doc! {"_id": 0}).await.unwrap();
    assert_eq!(id_of(&next(&mut s).await), Bson::Int32(0));
    for round in 1..=3 {
        f.server.drop_connections();
        c.insert_one(doc! {"_id": round}).await.unwrap();
        // The driver resumes from its cached token: the next event is exactly the new one.
        assert_eq!(id_of(&next(&mut s).await), Bson::Int32(round));
    }
    // Mid-scan too: a cursor's getMore after a drop fails, a new find continues from the last _id.
    c.insert_many((10..2010).map(|i| doc! {"_id": i})).await.unwrap();
    let mut cur = c.find(doc! {"_id": {"$gte": 10}}).batch_size(100).await.unwrap();
    let mut last = 0;
    for _ in 0..100 {
        last = cur.next().await.unwrap().unwrap().get_i32("_id").unwrap();
    }
    f.server.drop_connections();
    let mut seen = 100;
    let mut failed = false;
    while let Some(r) = cur.next().await {
        match r {
            Ok(d) => {
                last = d.get_i32("_id").unwrap();
                seen += 1
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "getMore after the connection dropped should fail");
    let rest = c.count_documents(doc! {"_id": {"$gt": last}}).await.unwrap();
    assert_eq!(seen as u64 + rest, 2000);
    let db = f.client.database("twitter_data");
    let mut dbs = db.watch().await.unwrap();
    f.coll("other").insert_one(doc! {"_id": "x"}).await.unwrap();
    let e = next(&mut dbs).await;
    assert_eq!(e.ns.and_then(|n| n.coll), Some("other".into()));
}
