//! A change event over MongoDB's 16 MB limit (BSONObjectTooLarge, 10334, on the stream's
//! `getMore`; issue 18, item 4). Before, `run` exited 1, and every restart resumed at the same
//! token and died the same way: 0 of 10 new tweets embedded.
//!
//! dev-mongo enforces mongod's limit on change events after the stream's own stages; the test
//! lowers it to 2,000 bytes so that small documents stand in for 16 MB ones. A tweet whose other
//! fields are large passes thanks to the stream's projection; one whose text alone is over the
//! limit is skipped with an ERROR naming it, stays in the work queue, and the next start's scan
//! embeds it.

use super::crash::run_cmd;
use super::workload::remaining;
use dev_tei::FaultConfig;
use mongodb::bson::{doc, Bson};
use std::time::Duration;
use test_support::expect::read_rows;
use test_support::proc::{terminate, Logged};
use test_support::{wait, Fixture, Seeded, Stack};
use tweet_embed_operators::mongo::document_id::DocId;

#[test]
fn an_event_over_the_size_limit_is_skipped_by_the_stream_and_embedded_by_the_next_scan() {
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 300, seed: 137 }, 2);
    let coll = stack.coll();
    let mut run = Logged::spawn(run_cmd(&args));
    wait::until_while_running("the backfill drained", Duration::from_secs(300), &mut run, || {
        stack.rt.block_on(remaining(&coll)) == 0
    });
    stack.mongo.set_max_event_bytes(2_000);
    let big_text = (0..400).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
    assert!(big_text.len() > 2_000);
    // ObjectIds, as the seeded tweets': the output's id type.
    let oid = |_: &str| Bson::ObjectId(mongodb::bson::oid::ObjectId::new());
    let (big, elsewhere) = (oid("big-text"), oid("big-elsewhere"));
    let before: Vec<Bson> = (0..3).map(|_| oid("before")).collect();
    let after: Vec<Bson> = (0..10).map(|_| oid("after")).collect();
    // One insert_many: the events before the big one share its getMore batch, which the server
    // fails as a whole; they must still be read, and only the big one skipped.
    let new: Vec<mongodb::bson::Document> = before
        .iter()
        .map(|id| doc! {"_id": id, "text": "a tweet in the big one's batch", "lang": "en"})
        .chain(std::iter::once(doc! {"_id": big.clone(), "text": big_text, "lang": "en"}))
        .chain(std::iter::once(doc! {
            "_id": elsewhere.clone(),
            "text": "a short tweet with a large user object",
            "lang": "en",
            "user": {"description": "x".repeat(5_000)},
        }))
        .chain(
            after
                .iter()
                .enumerate()
                .map(|(i, id)| doc! {"_id": id, "text": format!("a tweet after the big one {i}"), "lang": "en"}),
        )
        .collect();
    // A delete of an embedded tweet right behind them: a skipped delete would keep its row.
    let deleted = test_support::expect::read_rows(&args.out).vectors.into_keys().next().expect("an embedded tweet");
    let deleted_id = Bson::ObjectId(mongodb::bson::oid::ObjectId::parse_str(&deleted).expect("an ObjectId"));
    stack.rt.block_on(async {
        coll.insert_many(new).await.expect("insert");
        coll.delete_one(doc! {"_id": deleted_id}).await.expect("delete");
    });
    // Everything but the tweet whose text alone is over the limit is embedded by the stream.
    wait::until_while_running(
        "the tweets around the big one were embedded",
        Duration::from_secs(300),
        &mut run,
        || stack.rt.block_on(remaining(&coll)) == 1,
    );
    let left = stack
        .rt
        .block_on(async { coll.find_one(doc! {"retweeted": null, "gemma_embedded_768": null}).await })
        .expect("find");
    assert_eq!(left.and_then(|d| d.get("_id").cloned()).as_ref(), Some(&big));
    let line = run.wait_for_line(
        &["skipped a change event over MongoDB's 16 MB limit", &DocId::of(&big).into_string()],
        Duration::from_secs(10),
    );
    assert!(line.contains("ERROR") && line.contains("cluster_time"), "{line}");
    eprintln!("{line}");
    let skipped = run.log().lines().filter(|l| l.contains("skipped a change event")).count();
    assert_eq!(skipped, 1, "only the big event is skipped:\n{}", run.log());
    let recorded_delete = || {
        tweet_embed_operators::table::output::read_deletion_dir(&args.out)
            .unwrap_or_default()
            .iter()
            .any(|d| d.id == deleted)
    };
    test_support::wait::until("the delete behind the big event is recorded", Duration::from_secs(60), recorded_delete);
    terminate(&run.proc.0);
    let (status, log) = run.finish(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");
    // The next start's scan embeds it; the stream, still limited, goes on.
    let mut run = Logged::spawn(run_cmd(&args));
    wait::until_while_running("the big tweet was embedded by the scan", Duration::from_secs(300), &mut run, || {
        stack.rt.block_on(remaining(&coll)) == 0
    });
    terminate(&run.proc.0);
    let (status, log) = run.finish(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");
    let rows = read_rows(&args.out);
    // (Not `check_run`: it reads any ObjectId as a seeded tweet's.)
    for id in [&big, &elsewhere].into_iter().chain(&before).chain(&after) {
        assert_eq!(rows.counts.get(&DocId::of(id).into_string()), Some(&1), "{id}");
    }
    assert!(rows.counts.values().all(|n| *n == 1), "a row twice");
    assert!(!rows.counts.contains_key(&deleted), "the deleted tweet's row is gone by the deletion rule");
    assert_eq!(rows.counts.len(), seeded.eligible() + 15 - 1);
}
