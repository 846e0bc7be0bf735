//! A tweet deleted from MongoDB while its embedding is in flight — read by the scan, not yet
//! marked — must not keep a row: no change stream sees the delete in a backfill, so the marker
//! finds it (its update matches nothing) and the committer records it as a deletion of the
//! epoch, which removes the row.

use dev_tei::FaultConfig;
use mongodb::bson::doc;
use std::time::{Duration, Instant};
use test_support::expect::read_visible;
use test_support::synth::{kind_of, tweet, Kind};
use test_support::{Fixture, Seeded, Stack};
use tweet_embed_operators::run::Engine;
use tweet_embed_operators::table::output::read_deletion_dir;

#[test]
fn a_tweet_deleted_while_its_embedding_is_in_flight_leaves_no_row() {
    // Every answer 10 s late: the first batches are computed, and wait, while the test deletes.
    let Fixture { stack, seeded, dir: _dir, args } = Fixture::new(
        Stack::start(2, FaultConfig { slow_rate: 1.0, slow: Duration::from_secs(10), ..FaultConfig::default() }),
        Seeded { n: 300, seed: 83 },
        2,
    );
    let out = args.out.clone();
    let tei = stack.tei.as_ref().expect("tei");
    tei.record_texts();
    let texts: std::collections::HashSet<String> = (0..seeded.n)
        .filter(|i| kind_of(*i, seeded.seed) == Kind::Good)
        .filter_map(|i| tweet(i, seeded.seed).get_str("text").ok().map(String::from))
        .collect();
    let run = std::thread::spawn(move || Engine::connect(args).and_then(Engine::backfill));
    // Until a batch of the collection's texts (not the start-up probe's) is computed and waits.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !tei.texts_seen().keys().any(|t| texts.contains(t)) {
        assert!(Instant::now() < deadline && !run.is_finished(), "no batch reached the GPUs");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every tweet not yet marked goes: those in flight were read already, none is marked
    // embedded yet (marking waits for the late answers; rejections need no GPU).
    let coll = stack.coll();
    let deleted = stack
        .rt
        .block_on(async {
            // (The seed's already-embedded tweets are marked `true` from the start.)
            let seeded_marked = (0..seeded.n).filter(|i| kind_of(*i, seeded.seed) == Kind::Marked).count();
            assert_eq!(coll.count_documents(doc! {"gemma_embedded_768": true}).await?, seeded_marked as u64);
            coll.delete_many(doc! {"gemma_embedded_768": null}).await
        })
        .expect("delete")
        .deleted_count;
    // (Rejections committed before the deletes are marked `false` and stay.)
    assert!(deleted > 0, "nothing deleted");
    for gpu in tei.gpus() {
        gpu.set_slow(0.0, Duration::ZERO);
    }
    let summary = run.join().expect("run thread").expect("backfill");
    // The in-flight documents were written and committed, then found gone at their marking…
    assert!(summary.embedded > 0, "the race was not exercised: {summary:?}");
    let recorded = read_deletion_dir(&out).expect("_deletions");
    assert!(recorded.len() as u64 >= summary.embedded, "{} recorded for {summary:?}", recorded.len());
    // …so none of them has a row in --out (their staged rows were dropped at compaction).
    let visible = read_visible(&out);
    assert!(visible.counts.is_empty(), "rows of deleted tweets in --out: {:?}", visible.counts.keys().take(5));
    let left = stack.rt.block_on(async { coll.count_documents(doc! {"gemma_embedded_768": null}).await });
    assert_eq!(left.expect("count"), 0);
}

#[test]
fn a_tweet_deleted_between_a_crash_and_its_re_marking_leaves_no_row() {
    use super::crash::{backfill_cmd, persisted_dev_mongo, seed_through_driver};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_mongo, uri) = persisted_dev_mongo(dir.path());
    let stack = Stack::start(2, FaultConfig::default());
    let seeded = test_support::Seeded { n: 3_000, seed: 89 };
    seed_through_driver(&stack, &uri, &seeded);
    let mut args = stack.args(dir.path(), 2);
    args.mongo.uri = uri.clone();
    let bin = env!("CARGO_BIN_EXE_tweet-embed");
    assert!(std::process::Command::new(bin)
        .args(["indexes", "--mongo-uri", &uri])
        .status()
        .expect("indexes")
        .success());
    // Dies right after its first commit is recorded, before that epoch is marked.
    let status = backfill_cmd(&args).env("TWEET_EMBED_CRASH_AFTER_COMMIT", "1").status().expect("run");
    assert_eq!(status.signal(), Some(6), "{status:?}");
    // Everything not marked goes, the committed epoch's documents included.
    let coll = stack.coll_at(&uri);
    stack.rt.block_on(async { coll.delete_many(doc! {"gemma_embedded_768": null}).await }).expect("delete");
    // The restart re-marks the committed epoch, finds its documents gone and records them.
    let out = backfill_cmd(&args).output().expect("restart");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recorded = read_deletion_dir(&args.out).expect("_deletions");
    assert!(!recorded.is_empty(), "the committed epoch's deleted documents were not recorded");
    let visible = read_visible(&args.out);
    assert!(visible.counts.is_empty(), "rows of deleted tweets in --out: {:?}", visible.counts.keys().take(5));
}
