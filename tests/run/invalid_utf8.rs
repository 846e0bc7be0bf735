//! Continuous mode and strings that are not valid UTF-8: tweets stored with them arrive while
//! the change stream is followed; the one whose text is not UTF-8 is rejected and marked
//! `false`, the one whose `lang` is not is embedded, the stream goes on to the tweets after
//! them, and the run ends normally.

use super::{run_args, run_while, workload::remaining, workload::rows_by_source};
use dev_tei::FaultConfig;
use mongodb::bson::doc;
use std::time::{Duration, Instant};
use test_support::expect::check_run;
use test_support::invalid_utf8::{check_bad_tweets, insert_bad_tweets};
use test_support::synth::raw_tweet;
use test_support::{seed, Stack};

#[test]
fn tweets_not_utf8_on_the_stream_cost_only_themselves() {
    let stack = Stack::start(2, FaultConfig::default());
    let seeded = seed(&stack.mongo, 1_000, 19);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = run_args(&stack, dir.path());
    // String `_id`s join a collection of ObjectIds: mixed ids, extended JSON.
    args.pipeline.id_type = Some(tweet_embed_operators::table::output::IdType::ExtJson);
    let coll = stack.coll();
    let summary = run_while(&stack, &args, || {
        // The scan first drains the queue; after that only the stream brings work.
        let deadline = Instant::now() + Duration::from_secs(300);
        while stack.rt.block_on(remaining(&coll)) > 0 {
            assert!(Instant::now() < deadline, "the backfill did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
        insert_bad_tweets(&stack);
        // A good tweet after them: the stream did not stall on the bad ones.
        let raw = coll.clone_with_type::<mongodb::bson::RawDocumentBuf>();
        stack
            .rt
            .block_on(async { raw.insert_one(raw_tweet("after", b"en", b"a tweet after the bad ones")).await })
            .expect("insert");
    });
    assert_eq!(summary.embedded as usize + summary.rejected as usize, seeded.eligible() + 3);
    check_run(&stack, &seeded, &args.pipeline.out);
    check_bad_tweets(&stack, &args.pipeline.out);
    let after = stack.rt.block_on(async { coll.find_one(doc! {"_id": "after"}).await }).expect("find").expect("stored");
    assert_eq!(after.get_bool("gemma_embedded_768").ok(), Some(true));
    let by = rows_by_source(&args.pipeline.out);
    assert_eq!(by.get("change_stream").copied(), Some(2), "bad-lang and after came by the stream: {by:?}");
}
