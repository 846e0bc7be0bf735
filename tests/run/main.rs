//! Continuous mode (`tweet-embed run`) against the dev stack: the backfill scan and the change
//! stream together while a writer inserts and updates, through dropped connections, after a lost
//! history, and through kill -9 — always every eligible document exactly once, all marked.

mod clock_step;
mod crash;
mod deletions;
mod drain;
mod invalid_utf8;
mod invalidate;
mod large_event;
#[allow(dead_code)]
mod workload;

use dev_tei::FaultConfig;
use std::time::{Duration, Instant};
use test_support::{seed, Stack};
use tweet_embed_operators::dataflow::epoch_clock::StopSignal;
use tweet_embed_operators::run::{Continuous, Engine, RunConfig, Summary};
use tweet_embed_operators::table::checkpoint::CheckpointStore;
use workload::{check, remaining, rows_by_source, Workload};

/// A continuous run's settings and options.
#[derive(Clone)]
struct RunArgs {
    pipeline: RunConfig,
    no_backfill: bool,
    no_stream: bool,
}

fn run_args(stack: &Stack, dir: &std::path::Path) -> RunArgs {
    RunArgs { pipeline: stack.args(dir, 2), no_backfill: false, no_stream: false }
}

/// Runs `tweet-embed run` in a thread while `during` works, then until the work queue is empty,
/// then stops it as SIGTERM would.
fn run_while(stack: &Stack, args: &RunArgs, during: impl FnOnce()) -> Summary {
    // Warnings (retries, reopened streams) go to the test's output, shown when it fails.
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    let stop = StopSignal::default();
    let handle = {
        let (args, stop) = (args.clone(), stop.clone());
        let options = Continuous { scan_at_start: !args.no_backfill, stream: !args.no_stream };
        std::thread::spawn(move || Engine::connect(args.pipeline).and_then(|e| e.continuous(options, stop)))
    };
    during();
    let coll = stack.coll();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = stack.rt.block_on(remaining(&coll));
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            let stuck: Vec<String> = stack.rt.block_on(async {
                let filter = mongodb::bson::doc! {"retweeted": null, "gemma_embedded_768": null};
                let mut c = coll.find(filter).limit(10).await.expect("find");
                let mut v = Vec::new();
                while c.advance().await.expect("advance") {
                    v.push(format!("{:?}", c.deserialize_current().expect("doc").get("_id")));
                }
                v
            });
            panic!("the work queue did not drain: {left} left, e.g. {stuck:?}");
        }
        assert!(
            !handle.is_finished(),
            "run exited early: {:?}",
            handle.join().map(|r| r.map_err(|e| format!("{e:#}")))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.stop();
    handle.join().expect("run thread").expect("run")
}

#[test]
fn stream_and_backfill_together_embed_every_document_once() {
    let stack = Stack::start(4, FaultConfig::default());
    stack.tei.as_ref().expect("tei").record_texts();
    let w = Workload { seeded: 20_000, inserted: 5_000, updates: 500, seed: 41 };
    seed(&stack.mongo, w.seeded, w.seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let args = run_args(&stack, dir.path());
    let coll = stack.coll();
    let summary = run_while(&stack, &args, || {
        stack.rt.block_on(w.write(&coll, Duration::from_millis(20)));
    });
    let seen = stack.tei.as_ref().expect("tei").texts_seen();
    stack.rt.block_on(check(&args.pipeline.out, &coll, &w, Some(seen)));
    assert!(summary.embedded > 0);
    // Both sources did work: the updates to documents the scan had passed came by the stream.
    let by = rows_by_source(&args.pipeline.out);
    assert!(by.get("backfill").copied().unwrap_or(0) > 10_000, "{by:?}");
    assert!(by.get("change_stream").copied().unwrap_or(0) > 0, "{by:?}");
    eprintln!("rows by source: {by:?}");
    let cp = CheckpointStore::open(&args.pipeline.state_dir).unwrap().load().unwrap().expect("checkpoint");
    assert_eq!(cp.committed(), cp.marked());
    assert!(cp.sources().resume_token.is_some(), "the stream's position is in the checkpoint");
}

#[test]
fn dropped_connections_mid_scan_and_mid_stream_do_not_stop_the_run() {
    let stack = Stack::start(2, FaultConfig::default());
    let w = Workload { seeded: 8_000, inserted: 1_500, updates: 100, seed: 43 };
    seed(&stack.mongo, w.seeded, w.seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let args = run_args(&stack, dir.path());
    let coll = stack.coll();
    run_while(&stack, &args, || {
        let writer = {
            let coll = coll.clone();
            stack.rt.spawn(async move { w.write(&coll, Duration::from_millis(30)).await })
        };
        // Mid-scan (the backfill is still reading 8k documents), then repeatedly mid-stream.
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(250));
            stack.mongo.drop_connections();
        }
        stack.rt.block_on(writer).expect("writer");
    });
    stack.rt.block_on(check(&args.pipeline.out, &coll, &w, None));
}

#[test]
fn lost_history_is_logged_and_rescanned_exactly_once() {
    // The first run follows the stream, then stops; documents arrive while it is down, and the
    // server forgets the history the checkpoint's token points into.
    let stack = Stack::start(2, FaultConfig::default());
    let w = Workload { seeded: 3_000, inserted: 1_000, updates: 50, seed: 47 };
    seed(&stack.mongo, w.seeded, w.seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let args = run_args(&stack, dir.path());
    let coll = stack.coll();
    // While it runs, only another collection is written: no event matches, yet the stream's
    // post-batch resume token moves on and reaches the checkpoint (the quiet-weekend case).
    let store = CheckpointStore::open(&args.pipeline.state_dir).unwrap();
    let token = || store.load().ok().flatten().and_then(|cp| cp.sources().resume_token.clone());
    run_while(&stack, &args, || {
        let deadline = Instant::now() + Duration::from_secs(600);
        let first = loop {
            if let Some(t) = token() {
                break t;
            }
            assert!(Instant::now() < deadline, "no token in the checkpoint");
            std::thread::sleep(Duration::from_millis(50));
        };
        let uri = stack.mongo.uri();
        let other = stack
            .rt
            .block_on(async { mongodb::Client::with_uri_str(uri).await })
            .expect("client")
            .database("twitter_data")
            .collection::<mongodb::bson::Document>("other");
        while token().as_ref() == Some(&first) {
            assert!(Instant::now() < deadline, "the token never advanced on an idle collection");
            stack.rt.block_on(async { other.insert_one(mongodb::bson::doc! {"x": 1}).await }).expect("insert");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(token().is_some());
    stack.rt.block_on(w.write(&coll, Duration::ZERO));
    stack.mongo.truncate_history();
    // The restart, as its own process so its log can be read.
    // (Its log is read as it runs: a pipe nobody reads would block it once full.)
    let run = test_support::proc::Logged::spawn(crash::run_cmd(&args.pipeline));
    let deadline = Instant::now() + Duration::from_secs(600);
    while stack.rt.block_on(remaining(&coll)) > 0 {
        assert!(Instant::now() < deadline, "the work queue did not drain after the restart: {}", run.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    test_support::proc::terminate(&run.proc.0);
    let (status, log) = run.finish(Duration::from_secs(300));
    assert!(status.success(), "run after SIGTERM: {status:?}\n{log}");
    assert_eq!(log.matches("no longer in the server's history").count(), 1, "{log}");
    stack.rt.block_on(check(&args.pipeline.out, &coll, &w, None));
}

#[test]
fn without_a_stream_the_run_polls_the_work_queue() {
    let stack = Stack::start(2, FaultConfig::default());
    let w = Workload { seeded: 2_000, inserted: 600, updates: 40, seed: 59 };
    seed(&stack.mongo, w.seeded, w.seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = run_args(&stack, dir.path());
    args.no_stream = true;
    let coll = stack.coll();
    // New and newly eligible documents after the first scan are found by the next poll.
    run_while(&stack, &args, || {
        let deadline = Instant::now() + Duration::from_secs(300);
        while stack.rt.block_on(remaining(&coll)) > 0 {
            assert!(Instant::now() < deadline, "the first scan did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
        stack.rt.block_on(w.write(&coll, Duration::from_millis(5)));
    });
    stack.rt.block_on(check(&args.pipeline.out, &coll, &w, None));
    let by = rows_by_source(&args.pipeline.out);
    assert_eq!(by.get("change_stream"), None, "no stream in polling mode: {by:?}");
}
