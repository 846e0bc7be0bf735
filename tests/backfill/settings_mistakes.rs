//! Settings mistakes that used to mark a whole collection, or lose it, without a word (issue 18,
//! items 7 and 8): a wrong `--text-field` stops before marking and the fixed rerun is accepted;
//! an id type that does not fit the documents stops before marking and the next start chooses
//! again; `run` on an empty collection chooses the id type from its first document.

use std::process::{Command, Stdio};
use std::time::Duration;

use dev_tei::FaultConfig;
use mongodb::bson::{doc, Bson, Document};
use test_support::expect::read_rows;
use test_support::proc::{pipeline_cmd, terminate, Logged};
use test_support::{create_indexes, insert_docs, Fixture, Stack};
use tweet_embed_operators::table::checkpoint::CheckpointStore;
use tweet_embed_operators::table::output::IdType;

use super::crash::backfill_cmd;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");
const MARK: &str = "gemma_embedded_768";

/// `n` tweets with Int64 `_id`s from `from`, their text in `field`.
fn tweets(from: i64, n: i64, field: &str) -> Vec<Document> {
    (from..from + n)
        .map(|i| {
            let mut d = doc! {"_id": 1_500_000_000_000_000_000i64 + i, "lang": "en", "classified": true};
            d.insert(field, format!("tweet {i}, its text under {field}"));
            d
        })
        .collect()
}

fn count(stack: &Stack, filter: Document) -> u64 {
    let coll = stack.coll();
    stack.rt.block_on(async { coll.count_documents(filter).await }).expect("count")
}

/// Runs `cmd` with WARN logs; its exit code and stderr.
fn output(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.args(["--log", "warn"]).stderr(Stdio::piped()).output().expect("run the binary");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_wrong_text_field_stops_before_marking_and_the_fixed_rerun_embeds_everything() {
    let Fixture { stack, dir: _dir, args, .. } = Fixture::unseeded(Stack::start(2, FaultConfig::default()), 2);
    insert_docs(&stack, &tweets(0, 3_000, "full_text"));
    let (code, stderr) = output(&mut backfill_cmd(&args));
    assert_eq!(code, Some(1), "{stderr}");
    let line = test_support::proc::Logged::error_line(&stderr);
    assert!(line.contains("were rejected for the same reason (no text field)"), "{stderr}");
    assert!(line.contains("Check --text-field (now text)") && line.contains("full_text"), "{line}");
    eprintln!("{line}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(count(&stack, doc! {MARK: {"$exists": true}}), 0, "nothing marked");

    let (code, stderr) = output(backfill_cmd(&args).args(["--text-field", "full_text"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(count(&stack, doc! {MARK: true}), 3_000);
    assert_eq!(read_rows(&args.out).vectors.len(), 3_000);
}

#[test]
fn rejections_marked_on_purpose_and_requeued_leave_the_identity_free_to_change() {
    let Fixture { stack, dir: _dir, args, .. } = Fixture::unseeded(Stack::start(2, FaultConfig::default()), 2);
    insert_docs(&stack, &tweets(0, 500, "full_text"));
    let (code, stderr) = output(backfill_cmd(&args).arg("--allow-mass-rejection"));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(count(&stack, doc! {MARK: false}), 500, "marked rejected, as asked");
    let requeue = Command::new(BIN)
        .args(["requeue", "--mongo-uri", &stack.mongo.uri(), "--reason", "no text field"])
        .output()
        .expect("requeue");
    assert!(requeue.status.success(), "{}", String::from_utf8_lossy(&requeue.stderr));
    // The output holds rejections only: another text field is no other dataset yet.
    let (code, stderr) = output(backfill_cmd(&args).args(["--text-field", "full_text"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("the output holds no vector yet"), "{stderr}");
    assert_eq!(count(&stack, doc! {MARK: true}), 500);
    assert_eq!(read_rows(&args.out).vectors.len(), 500);
}

#[test]
fn an_id_type_the_documents_do_not_fit_stops_before_marking_and_the_next_start_chooses_again() {
    let Fixture { stack, dir: _dir, args, .. } = Fixture::unseeded(Stack::start(2, FaultConfig::default()), 2);
    insert_docs(&stack, &tweets(0, 300, "text"));
    let (code, stderr) = output(backfill_cmd(&args).args(["--id-type", "objectid"]));
    assert_eq!(code, Some(1), "{stderr}");
    let line = test_support::proc::Logged::error_line(&stderr);
    assert!(line.contains("have an _id that does not fit the output's id column (objectid"), "{line}");
    assert!(line.contains("--id-type"), "{line}");
    eprintln!("{line}");
    assert_eq!(count(&stack, doc! {MARK: {"$exists": true}}), 0, "nothing marked");
    // Nothing is written yet: the next start (auto) chooses from the documents.
    let (code, stderr) = output(&mut backfill_cmd(&args));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(count(&stack, doc! {MARK: true}), 300);
    let cp = CheckpointStore::open(&args.state_dir).expect("store").load().expect("load").expect("checkpoint");
    assert_eq!(cp.id_type(), Some(IdType::Int64));
}

#[test]
fn run_on_an_empty_collection_chooses_the_id_type_from_its_first_document() {
    let Fixture { stack, dir: _dir, args, .. } = Fixture::unseeded(Stack::start(2, FaultConfig::default()), 2);
    stack.rt.block_on(create_indexes(&stack.mongo)).expect("indexes");
    let mut run = Logged::spawn(pipeline_cmd(BIN, "run", &args));
    run.wait_for_line(&["the collection is empty: waiting for its first document"], Duration::from_secs(120));
    let coll = stack.coll();
    stack.rt.block_on(async { coll.insert_many(tweets(0, 200, "text")).await }).expect("insert");
    let embedded = || count(&stack, doc! {MARK: true}) == 200;
    test_support::wait::until_while_running(
        "the 200 tweets are embedded",
        Duration::from_secs(300),
        &mut run,
        embedded,
    );
    terminate(&run.proc.0);
    let (status, log) = run.finish(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");
    let cp = CheckpointStore::open(&args.state_dir).expect("store").load().expect("load").expect("checkpoint");
    assert_eq!(cp.id_type(), Some(IdType::Int64), "{log}");
    let rows = read_rows(&args.out);
    assert_eq!((rows.vectors.len(), rows.rejects.len()), (200, 0), "no strays");
    assert!(rows.vectors.contains_key(
        &tweet_embed_operators::mongo::document_id::DocId::of(&Bson::Int64(1_500_000_000_000_000_000)).into_string()
    ));
}
