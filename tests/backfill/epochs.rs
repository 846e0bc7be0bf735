//! Epochs close by `--checkpoint-interval`, not by a document count: a scan reads far faster than
//! GPUs embed, so an epoch closed by time alone held everything read in it. With 8,000 documents
//! and `--checkpoint-interval 2s` on GPUs that embed about 400 a second, the whole backfill was one
//! epoch: nothing committed (and progress at 0) until the end (issue 18, item 11).

use std::time::Duration;

use dev_tei::SimConfig;
use test_support::{seed, Stack};
use tweet_embed_operators::run::Engine;
use tweet_embed_operators::table::checkpoint::CheckpointStore;

#[test]
fn a_backfill_slower_than_its_scan_commits_about_every_checkpoint_interval() {
    // Two simulated GPUs at 6,000 tokens/s: about 400 tweets a second in all.
    let sim = SimConfig { gpus: 2, tokens_per_second: 6_000.0, base: Duration::from_millis(5), ..Default::default() };
    let stack = Stack::start_with(sim);
    let seeded = seed(&stack.mongo, 8_000, 139);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = stack.args(dir.path(), 2);
    args.checkpoint_interval = Duration::from_secs(2);
    let summary = Engine::connect(args.clone()).and_then(Engine::backfill).expect("backfill");
    let cp = CheckpointStore::open(&args.state_dir).expect("store").load().expect("load").expect("checkpoint");
    let secs = summary.elapsed.as_secs_f64();
    eprintln!("{} epochs in {secs:.1} s", cp.committed());
    // Every epoch holds documents (a backfill closes none empty): one per ~2 s of a run of ~20 s,
    // give or take a loaded machine; 1 before.
    assert!(secs > 8.0, "the GPUs were faster than this test assumes: {secs:.1} s");
    assert!(cp.committed() as f64 >= secs / 2.0 / 3.0, "{} epochs in {secs:.1} s", cp.committed());
    test_support::expect::check_run(&stack, &seeded, &args.out);
}
