//! The backfill end to end against the dev stack: dev-mongo through the real driver, simulated
//! TEI GPUs through real HTTP, real Parquet files read back. Every eligible document must come
//! out exactly once with its own text's vector and be marked; rejects carry reasons; nothing
//! else is marked.

mod compaction;
mod crash;
mod disk_full;
mod election;
mod epochs;
mod id_types;
mod invalid_utf8;
mod lock;
mod mark_fields;
mod settings_mistakes;
mod tei_faults;
mod vanished;

use dev_tei::FaultConfig;
use test_support::expect::{check_run, pyarrow_check};
use test_support::{seed, Stack};
use tweet_embed_operators::run::Engine;

#[test]
fn backfill_20k_with_faulty_gpus_is_exactly_once() {
    let stack = Stack::start(4, FaultConfig { error_rate: 0.05, ..FaultConfig::default() });
    let seeded = seed(&stack.mongo, 20_000, 11);
    // A text no request can carry (over TEI's 2,000,000-byte payload limit): the server side
    // refuses it, so it must become a rejection with a reason, not a lost or stuck document.
    stack.mongo.with_store(|s| {
        let huge = "x".repeat(2_100_000);
        s.insert(
            "twitter_data",
            "tweets",
            mongodb::bson::doc! {"_id": "huge", "lang": "en", "classified": true, "text": huge},
        )
        .expect("insert");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let args = stack.args(dir.path(), 2);
    let summary = Engine::connect(args.clone()).and_then(Engine::backfill).expect("backfill");
    check_run(&stack, &seeded, &args.out);
    assert_eq!(summary.embedded as usize + summary.rejected as usize, seeded.eligible() + 1);
    pyarrow_check(&args.out, summary.embedded, summary.rejected);
    let coll = stack.coll();
    let huge = stack
        .rt
        .block_on(async { coll.find_one(mongodb::bson::doc! {"_id": "huge"}).await })
        .expect("find")
        .expect("doc");
    assert_eq!(huge.get_bool("gemma_embedded_768").ok(), Some(false));
    let reason = huge.get_str("gemma_embedded_768_error").expect("reason");
    assert!(reason.contains("too large"), "{reason}");
    // Identical texts were embedded once: the GPUs saw fewer inputs than documents embedded.
    let inputs: u64 = stack.gpu_inputs();
    assert!(inputs < summary.embedded + 200, "GPUs saw {inputs} inputs for {} rows", summary.embedded);
    // A second run finds an empty work queue and changes nothing.
    let again = Engine::connect(args.clone()).and_then(Engine::backfill).expect("second backfill");
    assert_eq!(again.embedded + again.rejected, 0);
    check_run(&stack, &seeded, &args.out);
}

#[test]
fn backfill_refuses_to_start_without_the_work_queue_index() {
    let stack = Stack::start(1, FaultConfig::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let args = stack.args(dir.path(), 1);
    let err = Engine::connect(args.clone()).and_then(Engine::backfill).expect_err("no index");
    let msg = format!("{err:#}");
    assert!(msg.contains("embedding_work_queue") && msg.contains("tweet-embed indexes"), "{msg}");
}
