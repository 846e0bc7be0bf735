//! Deletes while `run` follows the stream: rows of deleted tweets leave the files in `--out`
//! within `--delete-within`, a tweet inserted and deleted within one epoch never appears in any
//! file, and `reconcile` finds the deletions a lost history hid.

use super::{run_args, run_while};
use dev_tei::FaultConfig;
use mongodb::bson::{doc, Bson, Document};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use test_support::expect::{check_run_after_deletes, read_rows, read_visible};
use test_support::{seed, wait, Stack};
use tweet_embed_operators::mongo::document_id::DocId;
use tweet_embed_operators::table::checkpoint::CheckpointStore;
use tweet_embed_operators::table::output::read_deletion_dir;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

/// Ids of up to `n` documents marked embedded (some seeded ones were marked before any run).
fn embedded_ids(stack: &Stack, n: i64) -> Vec<Bson> {
    let coll = stack.coll();
    stack.rt.block_on(async {
        let mut c = coll.find(doc! {"gemma_embedded_768": true}).limit(n).await.expect("find");
        let mut ids = Vec::new();
        while c.advance().await.expect("advance") {
            ids.push(c.deserialize_current().expect("doc").get("_id").cloned().expect("_id"));
        }
        ids
    })
}

/// Every id in any Parquet file under `dirs` (and their `_rejects/`), read as a poller would:
/// a file that vanishes mid-read (a staged file just compacted) is skipped.
fn ids_in(dirs: &[PathBuf]) -> HashSet<String> {
    let mut ids = HashSet::new();
    for d in dirs.iter().flat_map(|d| [d.clone(), d.join("_rejects")]) {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("parquet") {
                continue;
            }
            // The engine's form of every id, whatever the column's type.
            if let Ok(found) = test_support::expect::file_ids(&p) {
                ids.extend(found);
            }
        }
    }
    ids
}

#[test]
fn deleted_tweets_leave_the_output_and_an_insert_deleted_in_its_epoch_never_appears() {
    let stack = Stack::start(2, FaultConfig::default());
    let seeded = seed(&stack.mongo, 2_000, 61);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = run_args(&stack, dir.path());
    // String `_id`s join a collection of ObjectIds: mixed ids, extended JSON.
    args.pipeline.id_type = Some(tweet_embed_operators::table::output::IdType::ExtJson);
    // Long enough epochs that an insert and its delete, sent back to back, share one.
    args.pipeline.checkpoint_interval = Duration::from_secs(1);
    args.pipeline.max_file_age = Duration::from_millis(500);
    args.pipeline.delete_within = Duration::from_secs(2);
    let out = args.pipeline.out.clone();
    let staging = args.pipeline.staging_dir();
    // A reader polling both the output and the staging directory collects every id it ever saw.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let (seen, polling, dirs) = (seen.clone(), polling.clone(), vec![out.clone(), staging.clone()]);
        std::thread::spawn(move || {
            while polling.load(Ordering::Relaxed) {
                let ids = ids_in(&dirs);
                seen.lock().expect("seen").extend(ids);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let coll = stack.coll();
    let (mut deleted, mut flashes): (Vec<Bson>, Vec<String>) = (Vec::new(), Vec::new());
    run_while(&stack, &args, || {
        wait::until("the backfill drained", Duration::from_secs(300), || {
            stack.rt.block_on(super::remaining(&coll)) == 0
        });
        deleted = embedded_ids(&stack, 100);
        assert_eq!(deleted.len(), 100);
        stack.rt.block_on(async {
            coll.delete_many(doc! {"_id": {"$in": deleted.clone()}}).await.expect("delete embedded");
            for i in 0..50 {
                let id = format!("flash-{i}");
                let d = doc! {"_id": &id, "text": format!("a tweet deleted at once {i}"), "lang": "en"};
                coll.insert_one(d).await.expect("insert");
                coll.delete_one(doc! {"_id": &id}).await.expect("delete");
                flashes.push(DocId::of(&Bson::String(id)).into_string());
            }
            let kept: Vec<Document> = (0..200)
                .map(|i| doc! {"_id": format!("kept-{i}"), "text": format!("a tweet that stays {i}"), "lang": "en"})
                .collect();
            coll.insert_many(kept).await.expect("insert kept");
            // Updates from the same client: 50 of them edited at once (each still written once).
            for i in 0..50 {
                let text = format!("a tweet that stays, edited {i}");
                coll.update_one(doc! {"_id": format!("kept-{i}")}, doc! {"$set": {"text": text}})
                    .await
                    .expect("update");
            }
        });
        wait::until("the new tweets were embedded", Duration::from_secs(300), || {
            stack.rt.block_on(super::remaining(&coll)) == 0
        });
        // Within --delete-within of the last delete (give or take a loaded machine's delays): no
        // file in --out holds a deleted row, and every recorded deletion is applied.
        let gone: Vec<String> = deleted.iter().map(|id| DocId::of(id).into_string()).collect();
        let store = CheckpointStore::open(&args.pipeline.state_dir).expect("store");
        wait::until("the deleted rows left --out", Duration::from_secs(300), || {
            let visible = read_visible(&out);
            let recorded: HashSet<String> =
                read_deletion_dir(&out).unwrap_or_default().into_iter().map(|d| d.id).collect();
            let applied = store.load().ok().flatten().is_some_and(|c| c.deletions_recorded() == c.deletions_done());
            applied
                && gone.iter().all(|id| recorded.contains(id))
                && gone.iter().all(|id| !visible.counts.contains_key(id))
                && flashes.iter().all(|id| !visible.counts.contains_key(id))
        });
    });
    polling.store(false, Ordering::Relaxed);
    poller.join().expect("poller");
    // The deletions of embedded tweets are recorded; those of tweets inserted in the same epoch
    // need no record, and their rows never reached any file, staged or not.
    let recorded: HashSet<String> = read_deletion_dir(&out).expect("_deletions").into_iter().map(|d| d.id).collect();
    for id in deleted.iter().map(|id| DocId::of(id).into_string()) {
        assert!(recorded.contains(&id), "deletion of embedded {id} not recorded");
    }
    let same_epoch: Vec<&String> = flashes.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(same_epoch.len() >= 40, "most flash tweets should share an epoch with their insert: {same_epoch:?}");
    let seen = seen.lock().expect("seen");
    let appeared: Vec<&&String> = same_epoch.iter().filter(|id| seen.contains(**id)).collect();
    assert!(appeared.is_empty(), "inserted and deleted within one epoch, yet written: {appeared:?}");
    // `status` shows the output's state from the checkpoint: everything compacted, nothing pending.
    let o = std::process::Command::new(BIN)
        .args(["status", "--json", "--mongo-uri", &args.pipeline.mongo.uri, "--state-dir"])
        .arg(&args.pipeline.state_dir)
        .output()
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status json");
    assert!(status["compacted_files"].as_u64().is_some_and(|n| n > 0), "{status}");
    assert_eq!(status["deletions_pending"].as_u64(), Some(0), "{status}");
    assert!(status["staged_files"].as_u64().is_some(), "{status}");
    // Every other document exactly once; the kept ones too.
    check_run_after_deletes(&stack, stack.coll(), &seeded, &out, 100);
    let rows = read_rows(&out);
    for i in 0..200 {
        let id = DocId::of(&Bson::String(format!("kept-{i}"))).into_string();
        assert_eq!(rows.counts.get(&id), Some(&1), "{id}");
    }
}

#[test]
fn reconcile_finds_the_deletions_a_lost_history_hid() {
    let stack = Stack::start(2, FaultConfig::default());
    let seeded = seed(&stack.mongo, 1_500, 67);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = run_args(&stack, dir.path());
    args.pipeline.max_file_age = Duration::from_millis(200);
    let out = args.pipeline.out.clone();
    let store = CheckpointStore::open(&args.pipeline.state_dir).expect("store");
    let compacted =
        || store.load().ok().flatten().is_some_and(|cp| cp.staged().is_empty() && cp.compacting().is_none());
    run_while(&stack, &args, || {
        wait::until("the backfill drained", Duration::from_secs(300), || {
            stack.rt.block_on(super::remaining(&stack.coll())) == 0
        });
        wait::until("everything was compacted", Duration::from_secs(300), compacted);
    });
    // While nothing follows the stream, 40 embedded tweets go, and the server forgets that history.
    let mut rows: Vec<String> = read_visible(&out).vectors.into_keys().collect();
    rows.sort();
    let gone: Vec<Bson> = rows
        .iter()
        .take(40)
        .map(|hex| Bson::ObjectId(mongodb::bson::oid::ObjectId::parse_str(hex).expect("an ObjectId")))
        .collect();
    let coll = stack.coll();
    stack.rt.block_on(async { coll.delete_many(doc! {"_id": {"$in": gone.clone()}}).await }).expect("delete");
    stack.mongo.truncate_history();
    run_while(&stack, &args, || {});
    let gone: Vec<String> = gone.iter().map(|id| DocId::of(id).into_string()).collect();
    let visible = read_visible(&out);
    let unseen: Vec<&String> = gone.iter().filter(|id| !visible.counts.contains_key(*id)).collect();
    let recorded = read_deletion_dir(&out).expect("_deletions");
    assert!(unseen.is_empty(), "the stream cannot have seen these deletions: {unseen:?}, recorded {recorded:?}");
    let reconcile = || {
        std::process::Command::new(BIN)
            .args(["reconcile", "--mongo-uri", &args.pipeline.mongo.uri, "--out"])
            .arg(&out)
            .arg("--state-dir")
            .arg(&args.pipeline.state_dir)
            .output()
            .expect("reconcile")
    };
    // The wrong collection is refused, never taken for a collection whose tweets all went: a
    // typo (no such collection), and an indexed but empty one (every id missing).
    let deletions_before = read_deletion_dir(&out).expect("_deletions").len();
    let wrong = |collection: &str| {
        std::process::Command::new(BIN)
            .args(["reconcile", "--mongo-uri", &args.pipeline.mongo.uri, "--collection", collection, "--out"])
            .arg(&out)
            .arg("--state-dir")
            .arg(&args.pipeline.state_dir)
            .output()
            .expect("reconcile")
    };
    let o = wrong("tweetz");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("has no `embedding_work_queue` index"), "{err}");
    // `indexes` on a collection that does not exist refuses, naming the ones that do, unless
    // asked to create it.
    let indexes = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args(["indexes", "--mongo-uri", &args.pipeline.mongo.uri, "--collection", "empty"])
            .args(extra)
            .output()
            .expect("indexes")
    };
    let o = indexes(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("tweet-embed: no collection twitter_data.empty (its collections: "), "{err}");
    assert!(err.contains("tweets") && err.contains("--create-missing"), "{err}");
    assert!(indexes(&["--create-missing"]).status.success());
    let o = wrong("empty");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("(100%) are not in twitter_data.empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(read_deletion_dir(&out).expect("_deletions").len(), deletions_before, "nothing recorded");
    let o = reconcile();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "reconcile failed: {stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains(": 40 no longer there; recorded in _deletions/"), "{stdout}");
    let visible = read_visible(&out);
    let left: Vec<&String> = gone.iter().filter(|id| visible.counts.contains_key(*id)).collect();
    assert!(left.is_empty(), "reconciled deletions still in --out: {left:?}");
    // A second pass finds nothing more.
    let again = reconcile();
    assert!(String::from_utf8_lossy(&again.stdout).contains(": 0 no longer there"));
    check_run_after_deletes(&stack, stack.coll(), &seeded, &out, 40);
}
