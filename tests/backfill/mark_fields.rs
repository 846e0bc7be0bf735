//! One collection embedded into two outputs with two mark fields (another width, the path the
//! identity refusal recommends), and a work-queue index made by another job: its filter, not only
//! its name, is checked (issue 18, items 9 and 10).

use dev_tei::FaultConfig;
use mongodb::bson::{doc, Document};
use test_support::expect::read_rows;
use test_support::{seed, Stack};
use tweet_embed_operators::mongo::work_queue::{create_indexes, find_index};
use tweet_embed_operators::run::Engine;

#[test]
fn two_mark_fields_two_widths_two_outputs_both_complete() {
    let stack = Stack::start(2, FaultConfig::default());
    let seeded = seed(&stack.mongo, 300, 21);
    let coll = stack.coll();
    // The default mark field's indexes keep the seed's names; another field's get their own.
    let names = stack.rt.block_on(create_indexes(&coll, "gemma_embedded_256")).expect("indexes for a second field");
    assert_eq!(names, ["embedding_work_queue_gemma_embedded_256", "processed_monitor_idx_gemma_embedded_256"]);
    for name in ["embedding_work_queue", "processed_monitor_idx"] {
        assert!(stack.rt.block_on(find_index(&coll, name)).expect("list").is_some(), "{name} kept");
    }
    let count = |filter: Document| stack.rt.block_on(async { coll.count_documents(filter).await }).expect("count");
    // The seed's "old script" marked a few for 768 already: the 256 output takes them too.
    let premarked = count(doc! {"gemma_embedded_768": true});
    assert!(premarked > 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let full = stack.args(&dir.path().join("768"), 2);
    let first = Engine::connect(full.clone()).and_then(Engine::backfill).expect("768 backfill");
    let mut narrow = stack.args(&dir.path().join("256"), 2);
    narrow.mark_field = "gemma_embedded_256".into();
    narrow.tei.options.dimensions = Some(256);
    let second = Engine::connect(narrow.clone()).and_then(Engine::backfill).expect("256 backfill");
    assert_eq!(first.embedded + first.rejected, seeded.eligible() as u64);
    assert_eq!((second.embedded, second.rejected), (first.embedded + premarked, first.rejected));
    let (wide, thin) = (read_rows(&full.out), read_rows(&narrow.out));
    assert_eq!(wide.vectors.len() as u64, first.embedded);
    assert_eq!(thin.vectors.len() as u64, second.embedded);
    assert!(wide.vectors.values().all(|v| v.len() == 768) && thin.vectors.values().all(|v| v.len() == 256));
    // Every eligible document carries both marks.
    let both = count(doc! {"gemma_embedded_768": {"$exists": true}, "gemma_embedded_256": {"$exists": true}});
    assert_eq!(both, seeded.eligible() as u64 + premarked);
}

#[test]
fn a_work_queue_index_with_another_filter_is_named_with_its_filter_and_the_fix() {
    let stack = Stack::start(1, FaultConfig::default());
    test_support::insert_tweets(&stack.mongo, 50, 4).expect("insert");
    let coll = stack.coll();
    // An older English-only job left an index of the same name with a narrower filter: a hint to
    // it would read only the English part of the queue (SERVER-26413).
    let english_only = mongodb::IndexModel::builder()
        .keys(doc! {"lang": 1, "classified": 1, "_id": 1})
        .options(
            mongodb::options::IndexOptions::builder()
                .name("embedding_work_queue".to_string())
                .partial_filter_expression(doc! {"retweeted": null, "gemma_embedded_768": null, "lang": "en"})
                .build(),
        )
        .build();
    stack.rt.block_on(async { coll.create_index(english_only).await }).expect("the old job's index");
    let dir = tempfile::tempdir().expect("tempdir");
    let args = stack.args(dir.path(), 1);
    let err = format!("{:#}", Engine::connect(args).and_then(Engine::backfill).expect_err("refused"));
    for part in ["`embedding_work_queue`", r#""lang": "en""#, "this run needs it", "dropIndex", "tweet-embed indexes"] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
    // `indexes` says the same instead of MongoDB's IndexKeySpecsConflict, and creates nothing.
    let refused = stack.rt.block_on(create_indexes(&coll, "gemma_embedded_768")).expect_err("conflict");
    let line = refused.expect("a conflict, not a MongoDB failure");
    assert!(line.contains(r#""lang": "en""#) && line.contains("dropIndex"), "{line}");
    assert!(stack.rt.block_on(find_index(&coll, "processed_monitor_idx")).expect("list").is_none());
}
