//! kill -9 of `tweet-embed run` at random instants while a writer inserts and updates: each
//! restart resumes the stream from the checkpoint's token and rescans the work queue, and the
//! end result is every eligible document exactly once, all marked.

use super::workload::{check, remaining, Workload};
use dev_tei::FaultConfig;
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::proc::terminate;
use test_support::{Fixture, Seeded, Stack};
use tweet_embed_operators::table::checkpoint::CheckpointStore;

/// `tweet-embed run` with `args`' flags, logging at info.
pub fn run_cmd(args: &tweet_embed_operators::run::RunConfig) -> Command {
    let mut c = test_support::proc::pipeline_cmd(env!("CARGO_BIN_EXE_tweet-embed"), "run", args);
    c.args(["--log", "info"]);
    c
}

#[test]
fn kill_9_during_inserts_and_updates_then_restart_is_exactly_once() {
    let w = Workload { seeded: 20_000, inserted: 5_000, updates: 500, seed: 53 };
    let Fixture { stack, dir: _dir, args, .. } =
        Fixture::new(Stack::start(4, FaultConfig::default()), Seeded { n: w.seeded, seed: w.seed }, 2);
    let coll = stack.coll();
    let writer = {
        let coll = coll.clone();
        stack.rt.spawn(async move { w.write(&coll, Duration::from_millis(120)).await })
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let mut killed = 0;
    for _ in 0..11 {
        let mut child = run_cmd(&args).spawn().expect("spawn run");
        std::thread::sleep(Duration::from_millis(rng.u64(300..2_500)));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            killed += 1;
        }
        let _ = child.wait();
    }
    assert!(killed >= 10, "only {killed} runs were killed mid-way");
    stack.rt.block_on(writer).expect("writer");
    // The last run drains the queue and stops on SIGTERM.
    let mut child = run_cmd(&args).spawn().expect("spawn final run");
    let deadline = Instant::now() + Duration::from_secs(600);
    while stack.rt.block_on(remaining(&coll)) > 0 {
        assert!(Instant::now() < deadline, "the work queue did not drain");
        assert!(child.try_wait().expect("try_wait").is_none(), "the final run exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&child);
    let status = child.wait().expect("wait");
    assert!(status.success(), "run after SIGTERM: {status:?}");
    let cp = CheckpointStore::open(&args.state_dir).unwrap().load().unwrap().expect("checkpoint");
    assert_eq!(cp.committed(), cp.marked());
    stack.rt.block_on(check(&args.out, &coll, &w, None));
}
