//! The wall clock steps back one hour under a running `run` (an NTP correction, a VM restore):
//! rows staged before the step still reach `--out` within `--max-file-age`, and deletions recorded
//! before it still leave `--out` within `--delete-within` (issue 18, item 5). Without a monotonic
//! clock both waited an hour: their ages were wall-clock differences, negative after the step.
//!
//! The step is real: the `tweet-embed` process runs under libfaketime (Debian's `faketime`, which
//! `.ci/run` installs), whose offset file the test rewrites mid-run; `CLOCK_MONOTONIC` stays true.

use super::crash::run_cmd;
use super::workload::remaining;
use dev_tei::FaultConfig;
use mongodb::bson::{doc, Bson};
use std::path::PathBuf;
use std::time::Duration;
use test_support::expect::{check_run_after_deletes, read_visible};
use test_support::proc::{terminate, Logged};
use test_support::wait::until_while_running;
use test_support::{Fixture, Seeded, Stack};
use tweet_embed_operators::mongo::document_id::DocId;
use tweet_embed_operators::table::output::read_deletion_dir;

/// libfaketime's preload library: `TWEET_EMBED_LIBFAKETIME`, or where Debian and a source build
/// put it.
fn libfaketime() -> PathBuf {
    let candidates = std::env::var_os("TWEET_EMBED_LIBFAKETIME").map(PathBuf::from).into_iter().chain(
        [
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/faketime/libfaketime.so.1",
            "/usr/local/lib/faketime/libfaketime.so.1",
        ]
        .map(PathBuf::from),
    );
    let found = candidates.into_iter().find(|p| p.exists());
    found.expect("libfaketime is missing: install Debian's `faketime` (.ci/run does) or set TWEET_EMBED_LIBFAKETIME")
}

#[test]
fn after_the_wall_clock_steps_back_an_hour_rows_appear_and_deletions_apply_within_their_bounds() {
    let Fixture { stack, seeded, dir, mut args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 600, seed: 131 }, 2);
    args.max_file_age = Duration::from_secs(10);
    args.delete_within = Duration::from_secs(20);
    let out = args.out.clone();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let mut cmd = run_cmd(&args);
    cmd.env("LD_PRELOAD", libfaketime())
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_CACHE_DURATION", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut run = Logged::spawn(cmd);
    let coll = stack.coll();
    // The backfill is embedded and visible.
    let all_visible =
        || stack.rt.block_on(remaining(&coll)) == 0 && read_visible(&out).counts.len() == seeded.eligible();
    until_while_running("the backfill is visible in --out", Duration::from_secs(300), &mut run, all_visible);
    // New tweets and deletions, committed (marked; recorded in _deletions/) but not yet visible
    // nor applied: their deadlines are 10 s and 20 s away when the clock steps.
    let visible = read_visible(&out);
    let mut gone: Vec<String> = visible.vectors.keys().take(20).cloned().collect();
    gone.sort();
    let gone_ids: Vec<Bson> = gone
        .iter()
        .map(|hex| Bson::ObjectId(mongodb::bson::oid::ObjectId::parse_str(hex).expect("an ObjectId")))
        .collect();
    let new: Vec<mongodb::bson::Document> = test_support::synth::tweets(600, 650, 131).collect();
    // The new ones to embed or reject (retweets and pre-marked ones never appear).
    let eligible = |d: &&mongodb::bson::Document| d.get("retweeted").is_none() && d.get("gemma_embedded_768").is_none();
    let new_ids: Vec<String> =
        new.iter().filter(eligible).map(|d| DocId::of(d.get("_id").expect("_id")).into_string()).collect();
    assert!(new_ids.len() > 30);
    stack.rt.block_on(async {
        coll.insert_many(new).await.expect("insert");
        coll.delete_many(doc! {"_id": {"$in": gone_ids}}).await.expect("delete");
    });
    until_while_running(
        "the new tweets are marked and the deletions recorded",
        Duration::from_secs(120),
        &mut run,
        || {
            let recorded: Vec<String> = read_deletion_dir(&out).unwrap_or_default().into_iter().map(|d| d.id).collect();
            stack.rt.block_on(remaining(&coll)) == 0 && gone.iter().all(|id| recorded.contains(id))
        },
    );
    let before = read_visible(&out);
    assert!(
        new_ids.iter().all(|id| !before.counts.contains_key(id)) && gone.iter().all(|id| before.counts.contains_key(id)),
        "the new rows were visible or the deletions applied before the clock stepped (a machine too slow for this test)"
    );
    std::fs::write(&offset, "-1h\n").expect("step the clock back");
    // Within their bounds (10 s, 20 s), with room for a loaded machine; an hour without the fix.
    let shown =
        until_while_running("the new rows reach --out after the step", Duration::from_secs(60), &mut run, || {
            let v = read_visible(&out);
            new_ids.iter().all(|id| v.counts.contains_key(id))
        });
    let applied =
        until_while_running("the deleted rows leave --out after the step", Duration::from_secs(60), &mut run, || {
            let v = read_visible(&out);
            gone.iter().all(|id| !v.counts.contains_key(id))
        });
    eprintln!("after the step: new rows visible in {shown:?}, deletions applied {applied:?} later");
    // And the clock stepping forward an hour storms nothing: the run goes on and stops cleanly.
    std::fs::write(&offset, "+0\n").expect("step the clock forward");
    std::thread::sleep(Duration::from_secs(2));
    terminate(&run.proc.0);
    let (status, log) = run.finish(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");
    check_run_after_deletes(&stack, coll, &Seeded { n: 650, seed: 131 }, &out, 20);
}
