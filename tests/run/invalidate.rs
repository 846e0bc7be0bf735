//! Dropping or renaming the watched collection, or dropping its database, while `run` follows
//! it: MongoDB ends the stream with an `invalidate` event. The run used to poll the dead stream for ever (a core busy,
//! nothing logged, new tweets never embedded); it now ends with one line saying what happened and
//! what to do, having committed everything before the drop. After the collection is recreated
//! with its indexes, the same command starts again and embeds the new collection's tweets.

use super::{run_args, workload::remaining};
use dev_tei::FaultConfig;
use mongodb::bson::doc;
use std::time::{Duration, Instant};
use test_support::{create_indexes, seed, Fixture, Seeded, Stack};
use tweet_embed_operators::dataflow::epoch_clock::StopSignal;
use tweet_embed_operators::run::{Continuous, Engine, RunConfig, Summary};
use tweet_embed_operators::table::checkpoint::CheckpointStore;

/// `run` in a thread: its stop signal and its end.
fn follow(config: &RunConfig) -> (StopSignal, std::thread::JoinHandle<anyhow::Result<Summary>>) {
    let (config, stop) = (config.clone(), StopSignal::default());
    let signal = stop.clone();
    (
        signal,
        std::thread::spawn(move || Engine::connect(config).and_then(|e| e.continuous(Continuous::default(), stop))),
    )
}

/// How the collection goes away.
enum Gone {
    Dropped,
    Renamed,
    DatabaseDropped,
}

fn drop_then_restart(gone: Gone) {
    let stack = Stack::start(2, FaultConfig::default());
    seed(&stack.mongo, 500, 29);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = run_args(&stack, dir.path());
    // The recreated collection's `_id`s are numbers, the first one's ObjectIds: one dataset of
    // mixed ids, so ids are extended JSON (with the ObjectId type the numbers would be strays).
    args.pipeline.id_type = Some(tweet_embed_operators::table::output::IdType::ExtJson);
    let coll = stack.coll();
    let (_stop, run) = follow(&args.pipeline);
    let deadline = Instant::now() + Duration::from_secs(300);
    while stack.rt.block_on(remaining(&coll)) > 0 {
        assert!(Instant::now() < deadline, "the backfill did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    stack
        .rt
        .block_on(async {
            match gone {
                Gone::Dropped => coll.drop().await,
                Gone::DatabaseDropped => coll.client().database("twitter_data").drop().await,
                Gone::Renamed => {
                    let rename = doc! {"renameCollection": "twitter_data.tweets", "to": "twitter_data.tweets_old"};
                    coll.client().database("admin").run_command(rename).await.map(|_| ())
                }
            }
        })
        .expect("the collection goes away");
    // The run ends by itself, with the reason; a stuck run fails the test at the deadline.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.is_finished() {
        assert!(Instant::now() < deadline, "run did not end after the collection was dropped");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = run.join().expect("run thread").expect_err("a dropped collection ends the run");
    let line = format!("{err:#}");
    assert!(line.contains("twitter_data.tweets was invalidated"), "{line}");
    assert!(line.contains("recreate the collection, run `tweet-embed indexes`"), "{line}");
    let cp = CheckpointStore::open(&args.pipeline.state_dir).unwrap().load().unwrap().expect("checkpoint");
    assert!(cp.sources().resume_token.is_some(), "the stream's position is committed");
    assert_eq!(cp.marked(), cp.committed(), "everything before the drop is committed and marked");

    // Recreated, with its indexes and new tweets: the same run starts again and embeds them.
    stack.mongo.with_store(|s| {
        for i in 0..50i64 {
            let d = doc! {"_id": i, "lang": "en", "classified": true, "text": format!("after the drop {i}")};
            s.insert("twitter_data", "tweets", d).expect("insert");
        }
    });
    stack.rt.block_on(create_indexes(&stack.mongo)).expect("indexes");
    let (stop, again) = follow(&args.pipeline);
    let deadline = Instant::now() + Duration::from_secs(300);
    while stack.rt.block_on(remaining(&coll)) > 0 {
        assert!(Instant::now() < deadline, "the new collection was not embedded");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.stop();
    let summary = again.join().expect("run thread").expect("the restarted run ends cleanly");
    assert_eq!(summary.embedded, 50);
    let marked = stack.rt.block_on(async { coll.count_documents(doc! {"gemma_embedded_768": true}).await });
    assert_eq!(marked.expect("count"), 50);
}

#[test]
fn dropping_the_watched_collection_ends_the_run_with_the_reason_and_a_restart_embeds_the_new_one() {
    drop_then_restart(Gone::Dropped);
}

#[test]
fn renaming_it_does_the_same() {
    drop_then_restart(Gone::Renamed);
}

#[test]
fn dropping_its_database_does_the_same() {
    drop_then_restart(Gone::DatabaseDropped);
}

/// The binary as a user runs it: the drop ends the process by itself with exit 1 and the line.
#[test]
fn the_binary_exits_1_with_the_line_when_the_collection_is_dropped() {
    let Fixture { stack, dir: _dir, args, .. } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 300, seed: 31 }, 2);
    let coll = stack.coll();
    let run = test_support::proc::Logged::spawn(super::crash::run_cmd(&args));
    let deadline = Instant::now() + Duration::from_secs(300);
    while stack.rt.block_on(remaining(&coll)) > 0 {
        assert!(Instant::now() < deadline, "the backfill did not finish: {}", run.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    stack.rt.block_on(async { coll.drop().await }).expect("drop");
    let (status, log) = run.finish(Duration::from_secs(120));
    assert_eq!(status.code(), Some(1), "{log}");
    let last = test_support::proc::Logged::error_line(&log);
    assert!(last.starts_with("tweet-embed: the change stream of twitter_data.tweets was invalidated"), "{log}");
}
