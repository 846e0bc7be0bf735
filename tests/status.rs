//! `tweet-embed status` against dev-mongo through the real driver: its figures equal the counts
//! the test takes itself by reading every document, it counts through the two indexes (the
//! server's scan counters prove no document was read), it refuses to count without them, its
//! rate, ETA and cost follow from samples placed in time, the binary's `--json` agrees, and after
//! a finished backfill it prints no rate over a moment ("over the last 0s").

use dev_mongo::{DevMongo, DevMongoConfig};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use std::path::Path;
use std::process::Command;
use test_support::synth::{kind_of, tweet, Kind};
use tweet_embed::config::MongoArgs;
use tweet_embed::status::StatusArgs;
use tweet_embed_operators::run::status::history::{History, Sample, FILE_NAME};
use tweet_embed_operators::run::status::{count, Counts, Monitor};
use tweet_embed_operators::table::checkpoint::{Checkpoint, CheckpointStore, CommitHistory, SourcePositions};

const MARK: &str = "gemma_embedded_768";
const SEED: u64 = 3;
const TWEETS: u64 = 20_000;

struct Stack {
    mongo: DevMongo,
    coll: mongodb::Collection<Document>,
}

/// dev-mongo with synthetic tweets, some of them then marked `true` and some `false` through the
/// driver as the pipeline's marker would, with or without the indexes.
async fn stack(indexes: bool) -> Stack {
    let mongo = DevMongo::start(DevMongoConfig::default()).expect("dev-mongo");
    if indexes {
        test_support::seed_work_queue(&mongo, TWEETS, SEED).await.expect("seed");
    } else {
        test_support::insert_tweets(&mongo, TWEETS, SEED).expect("seed");
    }
    let client = mongodb::Client::with_uri_str(mongo.uri()).await.expect("client");
    let coll = client.database("twitter_data").collection::<Document>("tweets");
    // Embedded: every 3rd good tweet; rejected: the bad ones with an even index, as the marker does.
    let ids = |keep: &dyn Fn(u64) -> bool| -> Vec<Bson> {
        (0..TWEETS).filter(|i| keep(*i)).map(|i| tweet(i, SEED).get("_id").cloned().expect("_id")).collect()
    };
    let good = ids(&|i| kind_of(i, SEED) == Kind::Good && i % 3 == 0);
    let bad = ids(&|i| kind_of(i, SEED) == Kind::Bad && i % 2 == 0);
    coll.update_many(doc! {"_id": {"$in": good}}, doc! {"$set": {MARK: true}}).await.expect("mark true");
    coll.update_many(
        doc! {"_id": {"$in": bad}},
        doc! {"$set": {MARK: false, "gemma_embedded_768_error": "empty text"}},
    )
    .await
    .expect("mark false");
    Stack { mongo, coll }
}

fn target(mongo: &DevMongo) -> MongoArgs {
    MongoArgs::tweets_at(mongo.uri())
}

/// The true counts, from every document read through the driver (what status must never do).
async fn true_counts(coll: &mongodb::Collection<Document>) -> Counts {
    let docs: Vec<Document> = coll.find(doc! {}).await.expect("find").try_collect().await.expect("read all");
    assert_eq!(docs.len() as u64, TWEETS);
    let missing_or_null = |d: &Document, f: &str| matches!(d.get(f), None | Some(Bson::Null));
    let mark = |d: &Document, v: bool| d.get(MARK) == Some(&Bson::Boolean(v));
    Counts {
        embedded: docs.iter().filter(|d| mark(d, true)).count() as u64,
        rejected: docs.iter().filter(|d| mark(d, false)).count() as u64,
        remaining: docs.iter().filter(|d| missing_or_null(d, "retweeted") && missing_or_null(d, MARK)).count() as u64,
    }
}

/// `serverStatus.metrics.queryExecutor`: (keys examined, documents examined).
async fn scanned(coll: &mongodb::Collection<Document>) -> (i64, i64) {
    let s = coll.client().database("admin").run_command(doc! {"serverStatus": 1}).await.expect("serverStatus");
    let q = s.get_document("metrics").and_then(|m| m.get_document("queryExecutor")).expect("queryExecutor");
    (q.get_i64("scanned").expect("scanned"), q.get_i64("scannedObjects").expect("scannedObjects"))
}

fn args_for(mongo: &DevMongo, state_dir: Option<&Path>) -> StatusArgs {
    let mut a = StatusArgs::with_defaults(target(mongo));
    a.state_dir = state_dir.map(Path::to_path_buf);
    a
}

#[tokio::test]
async fn figures_equal_the_true_counts_and_come_from_the_indexes_alone() {
    let s = stack(true).await;
    let truth = true_counts(&s.coll).await;
    // The seed has every kind, so each figure is tested against something non-trivial.
    assert!(truth.embedded > 5_000 && truth.rejected > 50 && truth.remaining > 5_000, "{truth:?}");

    let state = tempfile::tempdir().expect("tempdir");
    let store = CheckpointStore::open(state.path()).expect("checkpoint store");
    store
        .save(&Checkpoint::new(42, 41, Vec::new(), SourcePositions::default()), &CommitHistory::default())
        .expect("checkpoint");

    let before = scanned(&s.coll).await;
    let status = tweet_embed::status::measure(&args_for(&s.mongo, Some(state.path()))).await.expect("status");
    let after = scanned(&s.coll).await;
    assert_eq!(after.1 - before.1, 0, "status read documents: a collection scan, not a count of index keys");
    let counted = (truth.embedded + truth.rejected + truth.remaining) as i64;
    assert!(after.0 - before.0 <= counted + 8, "keys examined {} for {counted} counted", after.0 - before.0);

    assert_eq!((status.embedded, status.rejected, status.remaining), (truth.embedded, truth.rejected, truth.remaining));
    assert_eq!(status.processed, truth.embedded + truth.rejected);
    assert_eq!(status.total, status.processed + truth.remaining);
    // Outside the queue: the unmarked retweets, from the collection's metadata less the counts.
    let retweets = s.coll.count_documents(doc! {"retweeted": {"$ne": null}, MARK: null}).await.expect("count");
    assert!(retweets > 0);
    assert_eq!(status.outside_queue, Some(retweets));
    let percent = 100.0 * status.processed as f64 / status.total as f64;
    assert!((status.percent_done - percent).abs() < 1e-9);
    assert_eq!((status.checkpoint_committed, status.checkpoint_marked), (Some(42), Some(41)));
    // One sample: no rate yet, and so no ETA or cost.
    assert_eq!((status.rate_docs_per_s, status.eta_s, status.cost_so_far), (None, None, None));
    let text = tweet_embed::status::text(&status);
    assert!(text.contains("rate        measuring"), "{text}");

    // --json: the stable field names, with the same figures.
    let v: serde_json::Value = serde_json::from_str(&tweet_embed::status::json(&status).expect("json")).expect("parse");
    assert_eq!(v["embedded"], truth.embedded);
    assert_eq!(v["rejected"], truth.rejected);
    assert_eq!(v["processed"], truth.embedded + truth.rejected);
    assert_eq!(v["remaining"], truth.remaining);
    assert_eq!(v["checkpoint_committed"], 42);
    assert!(v["rate_docs_per_s"].is_null() && v["eta_s"].is_null() && v["cost_to_go"].is_null(), "{v}");
    assert_eq!(v["db"], "twitter_data");
    assert_eq!(v["mark_field"], MARK);

    // Marking more moves the figures the same way it moves the truth.
    s.coll.update_many(doc! {MARK: null, "retweeted": null, "lang": "ja"}, doc! {"$set": {MARK: true}}).await.unwrap();
    let truth = true_counts(&s.coll).await;
    let again = count(&s.coll, MARK).await.expect("count");
    assert_eq!(again, truth);
}

#[tokio::test]
async fn a_missing_or_different_index_is_a_clear_error_not_a_scan() {
    let s = stack(false).await;
    let err = tweet_embed::status::measure(&args_for(&s.mongo, None)).await.expect_err("no indexes");
    let msg = format!("{err:#}");
    assert!(msg.contains("embedding_work_queue") && msg.contains("processed_monitor_idx"), "{msg}");
    assert!(msg.contains("tweet-embed indexes"), "{msg}");

    // Only the monitor index missing: named alone.
    s.coll.create_index(tweet_embed_operators::mongo::work_queue::work_queue_index(MARK)).await.unwrap();
    let msg = format!("{:#}", tweet_embed::status::measure(&args_for(&s.mongo, None)).await.expect_err("one missing"));
    assert!(msg.contains("no `processed_monitor_idx`") && !msg.contains("no `embedding_work_queue`"), "{msg}");

    // Another mark field has indexes of its own names: this one's cannot count it.
    s.coll.create_index(tweet_embed_operators::mongo::work_queue::monitor_index(MARK)).await.unwrap();
    let mut other = args_for(&s.mongo, None);
    other.mark_field = "other_embedded".into();
    let msg = format!("{:#}", tweet_embed::status::measure(&other).await.expect_err("other mark field"));
    assert!(msg.contains("no `embedding_work_queue_other_embedded`"), "{msg}");
    assert!(msg.contains("--mark-field other_embedded"), "{msg}");

    let mut nowhere = args_for(&s.mongo, None);
    nowhere.mongo.collection = "no_such_tweets".into();
    let msg = format!("{:#}", tweet_embed::status::measure(&nowhere).await.expect_err("no collection"));
    assert!(msg.contains("does not exist"), "{msg}");

    let missing_dir = args_for(&s.mongo, Some(Path::new("/nonexistent/tweet-embed-state")));
    let msg = format!("{:#}", tweet_embed::status::measure(&missing_dir).await.expect_err("no state dir"));
    assert!(msg.contains("--state-dir") && msg.contains("not a directory"), "{msg}");
}

#[tokio::test]
async fn rate_eta_and_cost_follow_from_two_samples() {
    let s = stack(true).await;
    let state = tempfile::tempdir().expect("tempdir");
    let mut args = args_for(&s.mongo, Some(state.path()));
    args.gpu_hour_cost = Some(0.5);
    args.gpus = Some(4);
    let now = count(&s.coll, MARK).await.expect("count");
    let processed = now.embedded + now.rejected;

    // Two samples a minute apart, 600 documents processed between them: 10 docs/s. They are
    // placed in time through the library rather than by sleeping.
    let t0 = tweet_embed_operators::clock::wall_ms() - 120_000;
    let mut monitor = Monitor::open(&args).await.expect("monitor");
    let earlier = Counts { embedded: now.embedded - 600, rejected: now.rejected, remaining: now.remaining + 600 };
    let first = monitor.record(earlier, t0).expect("first sample");
    assert_eq!(first.rate_docs_per_s, None);
    let second = monitor.record(now, t0 + 60_000).expect("second sample");
    assert_eq!(second.rate_docs_per_s, Some(10.0));
    assert_eq!((second.rate_span_s, second.rate_samples), (Some(60.0), Some(2)));
    let eta = now.remaining as f64 / 10.0;
    assert_eq!(second.eta_s, Some(eta));
    assert_eq!((second.gpu_hour_cost, second.gpus), (Some(0.5), Some(4)));
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
    assert!(close(second.cost_to_go, eta / 3600.0 * 4.0 * 0.5), "{:?}", second.cost_to_go);
    assert!(close(second.cost_so_far, processed as f64 / 10.0 / 3600.0 * 4.0 * 0.5), "{:?}", second.cost_so_far);
    let text = tweet_embed::status::text(&second);
    assert!(text.contains("10.0 docs/s") && text.contains("4 GPUs at 0.50/GPU-hour"), "{text}");

    // The history outlives the process: a later `measure` (at the real now, nothing processed
    // since) finds both samples in the file and gets a rate over all three.
    let history = History::open(state.path()).expect("history");
    assert_eq!(history.samples().len(), 2);
    let later = tweet_embed::status::measure(&args).await.expect("status");
    assert_eq!(later.rate_samples, Some(3));
    let r = later.rate_docs_per_s.expect("a rate");
    assert!(r > 0.0 && r < 10.0, "600 documents over more than a minute: {r}");
    assert_eq!(History::open(state.path()).expect("history").samples().len(), 3);

    // Nothing left: ETA zero and nothing to go, even before a rate exists.
    let done = Counts { embedded: processed + now.remaining, rejected: 0, remaining: 0 };
    let mut fresh = Monitor::open(&args_for(&s.mongo, None)).await.expect("monitor");
    let finished = fresh.record(done, t0).expect("sample");
    assert_eq!((finished.eta_s, finished.percent_done), (Some(0.0), 100.0));

    // A sample of another collection in the same history never enters this one's rate.
    let mut h = History::open(state.path()).expect("history");
    let other = Sample { at_ms: t0 + 61_000, ns: "twitter_data.other:x".into(), processed: 0, remaining: 0 };
    h.record(other).expect("record");
    let after = tweet_embed::status::measure(&args).await.expect("status");
    assert_eq!(after.rate_samples, Some(4));
    assert!(state.path().join(FILE_NAME).is_file());
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tweet-embed"));
    c.env_remove("MONGODB_URI").env("TWEET_EMBED_LOG", "warn");
    c
}

#[tokio::test]
async fn the_binary_prints_json_and_watches() {
    let s = stack(true).await;
    let truth = true_counts(&s.coll).await;
    let state = tempfile::tempdir().expect("tempdir");
    let uri = s.mongo.uri();
    let out = bin()
        .args(["status", "--json", "--mongo-uri", &uri, "--collection", "tweets", "--gpu-hour-cost", "0.5", "--gpus"])
        .arg("4")
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("run tweet-embed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["embedded"], truth.embedded);
    assert_eq!(v["rejected"], truth.rejected);
    assert_eq!(v["remaining"], truth.remaining);
    assert_eq!(v["gpus"], 4);
    assert!(v["rate_docs_per_s"].is_null(), "{v}");

    // --watch, bounded: a JSON line per refresh; two samples 50 ms apart are no rate (a rate
    // needs 5 s of samples), so no ETA.
    let out = bin()
        .args(["status", "--json", "--mongo-uri", &uri, "--watch", "50ms", "--watch-count", "2"])
        .output()
        .expect("run tweet-embed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["rate_docs_per_s"].is_null());
    assert!(lines[1]["rate_docs_per_s"].is_null(), "{}", lines[1]);
    assert!(lines[1]["eta_s"].is_null());

    // Off a terminal, plain --watch writes a line per refresh.
    let out = bin().args(["status", "--mongo-uri", &uri, "--watch", "10ms", "--watch-count", "2"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains(&format!("remaining={}", truth.remaining)), "{text}");

    // A reader that goes away (`| head -1`): an unbounded --watch ends by itself, exit 0, no
    // panic trace (a closed pipe used to make the first line panic with exit 101).
    let mut watch = bin()
        .args(["status", "--mongo-uri", &uri, "--watch", "10ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tweet-embed");
    drop(watch.stdout.take());
    let mut stderr = watch.stderr.take().expect("stderr");
    let mut watch = test_support::proc::Proc(watch);
    let code = watch.wait_for(std::time::Duration::from_secs(60));
    let mut said = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut said).expect("stderr");
    assert_eq!(code.code(), Some(0), "{said}");
    assert!(!said.contains("panicked"), "{said}");

    // A missing index: one line naming the fix, exit 1; a password in the URI is never printed.
    let secret_uri = uri.replace("mongodb://", "mongodb://operator:s3cr3t-pw@");
    let out =
        bin().args(["status", "--mongo-uri", &secret_uri, "--collection", "no_such_tweets"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("s3cr3t-pw"), "{stderr}");
    assert!(stderr.starts_with("tweet-embed: "), "{stderr}");
}

#[tokio::test]
async fn a_running_pipelines_recent_commits_give_the_rate_at_the_first_look() {
    let s = stack(true).await;
    let state = tempfile::tempdir().expect("tempdir");
    let args = args_for(&s.mongo, Some(state.path()));
    // The committer's record: 1,200 documents marked over the last two minutes.
    let now = tweet_embed_operators::clock::wall_ms();
    let cp = Checkpoint::new(9, 9, Vec::new(), SourcePositions::default());
    let recent = CommitHistory::new(5_000, vec![(now - 120_000, 3_800), (now - 60_000, 4_400), (now - 1_000, 5_000)]);
    CheckpointStore::open(state.path()).expect("store").save(&cp, &recent).expect("save");
    let first = tweet_embed::status::measure(&args).await.expect("status");
    let r = first.rate_docs_per_s.expect("a rate at the first look");
    assert!((r - 1_200.0 / 119.0).abs() < 1e-6, "{r}");
    assert_eq!(first.rate_samples, Some(3));
    // A pipeline that stopped long ago says nothing about the rate now.
    let stale_history = CommitHistory::new(5_000, vec![(now - 7_200_000, 3_800), (now - 7_100_000, 5_000)]);
    CheckpointStore::open(state.path()).expect("store").save(&cp, &stale_history).expect("save");
    let mut stale = Monitor::open(&args_for(&s.mongo, Some(state.path()))).await.expect("monitor");
    let later = stale.record(count(&s.coll, MARK).await.expect("count"), now).expect("status");
    assert_ne!(later.rate_docs_per_s, Some(12.0), "a stale pipeline rate was used");
}

#[test]
fn raw_twitter_v1_json_is_named_not_reported_as_done() {
    // Raw Twitter API v1.1 JSON: `"retweeted": false` on every tweet (whether *you* retweeted
    // it). The work queue takes only `retweeted` null, so none is embedded: the run must say why,
    // and status must count them instead of reporting 100% done.
    let stack = test_support::Stack::start(1, dev_tei::FaultConfig::default());
    stack.mongo.with_store(|s| {
        for i in 0..1_000i64 {
            let d = doc! {"_id": i, "lang": "en", "classified": true, "retweeted": false, "text": format!("tweet {i}")};
            s.insert("twitter_data", "tweets", d).expect("insert");
        }
    });
    stack.rt.block_on(test_support::create_indexes(&stack.mongo)).expect("indexes");
    let dir = tempfile::tempdir().expect("tempdir");
    let args = stack.args(dir.path(), 1);
    let o = test_support::proc::pipeline_cmd(env!("CARGO_BIN_EXE_tweet-embed"), "backfill", &args)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("backfill");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warn = err.lines().find(|l| l.contains(" WARN ") && l.contains("`retweeted` is false")).unwrap_or_else(|| {
        panic!("no WARN naming the cause:\n{err}");
    });
    assert!(warn.contains("v1.1") && warn.contains("$unset"), "{warn}");
    let status = stack
        .rt
        .block_on(tweet_embed::status::measure(&StatusArgs::with_defaults(target(&stack.mongo))))
        .expect("status");
    assert_eq!((status.processed, status.remaining, status.outside_queue), (0, 0, Some(1_000)));
    let text = tweet_embed::status::text(&status);
    assert!(text.contains("outside") && text.contains("1,000") && text.contains("v1.1"), "{text}");
}

#[test]
fn status_after_a_finished_backfill_prints_no_rate_over_0s() {
    // A backfill of a few seconds makes several commits: they span a second or three, which
    // used to print as "… docs/s over the last 0s" (or 3s) after the run had finished.
    let stack = test_support::Stack::start(1, dev_tei::FaultConfig::default());
    test_support::seed(&stack.mongo, 12_000, 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let args = stack.args(dir.path(), 1);
    let backfill = test_support::proc::pipeline_cmd(env!("CARGO_BIN_EXE_tweet-embed"), "backfill", &args)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("backfill");
    assert!(backfill.status.success(), "{}", String::from_utf8_lossy(&backfill.stderr));

    let uri = stack.mongo.uri();
    let status = |json: bool| {
        let mut c = bin();
        c.args(["status", "--mongo-uri", &uri, "--collection", "tweets", "--state-dir"]).arg(&args.state_dir);
        if json {
            c.arg("--json");
        }
        c.output().expect("run tweet-embed status")
    };
    let out = status(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // Any rate is over at least 5 s: "over the last 0s" (or 3s) is no rate.
    for (i, _) in text.match_indices("over the last ") {
        let span = text[i + "over the last ".len()..].split([' ', ',']).next().unwrap_or_default();
        let seconds = span.strip_suffix('s').and_then(|n| n.parse::<u64>().ok());
        assert!(seconds.is_none_or(|n| n >= 5), "a rate over {span}:\n{text}");
    }
    let rate =
        text.lines().find(|l| l.trim_start().starts_with("rate")).unwrap_or_else(|| panic!("no rate line:\n{text}"));
    assert!(rate.contains("nothing remains in the work queue"), "{text}");
    assert!(text.contains("ETA         done"), "{text}");

    let out = status(true);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["remaining"], 0);
    let span = &v["rate_span_s"];
    assert!(span.is_null() || span.as_f64().is_some_and(|s| s >= 5.0), "a rate over a moment: {v}");
}
