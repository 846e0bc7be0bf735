//! kill -9 of the pipeline at random instants, and once between "files durable and committed"
//! and "marks written": each restart must end in the same exactly-once result. The pipeline runs
//! in its own process; dev-mongo runs in another with `--data`, so only the pipeline dies.

use dev_tei::FaultConfig;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::expect::check_run_in;
use test_support::proc::{free_port, Proc};
use test_support::{Seeded, Stack};
use tweet_embed_operators::table::checkpoint::CheckpointStore;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

/// `tweet-embed backfill` with `args`.
pub fn backfill_cmd(args: &tweet_embed_operators::run::RunConfig) -> Command {
    test_support::proc::pipeline_cmd(BIN, "backfill", args)
}

/// dev-mongo in its own process, persisted to `dir/mongo.bson`, so a test's kills of the pipeline
/// never touch it; returns the process and its URI.
pub fn persisted_dev_mongo(dir: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    let data = dir.join("mongo.bson");
    let mongo = Proc(
        Command::new(BIN)
            .args(["dev-mongo", "--port", &port.to_string(), "--save-every", "1"])
            .arg("--data")
            .arg(&data)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn dev-mongo"),
    );
    (mongo, format!("mongodb://127.0.0.1:{port}/?directConnection=true"))
}

/// Waits for the dev-mongo at `uri` and inserts `seeded`'s tweets through the driver.
pub fn seed_through_driver(stack: &Stack, uri: &str, seeded: &Seeded) {
    stack.rt.block_on(async {
        let client = mongodb::Client::with_uri_str(uri).await.expect("client");
        let coll = client.database("twitter_data").collection::<mongodb::bson::Document>("tweets");
        let deadline = Instant::now() + Duration::from_secs(20);
        while coll.estimated_document_count().await.is_err() {
            assert!(Instant::now() < deadline, "dev-mongo did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for chunk in (0..seeded.n).collect::<Vec<_>>().chunks(5_000) {
            coll.insert_many(chunk.iter().map(|i| test_support::synth::tweet(*i, seeded.seed))).await.expect("seed");
        }
    });
}

#[test]
fn kill_9_at_random_instants_then_restart_is_exactly_once() {
    // dev-mongo in its own process, persisted, so the pipeline's kills never touch it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (_mongo, uri) = persisted_dev_mongo(dir.path());
    let stack = Stack::start(4, FaultConfig { error_rate: 0.05, ..FaultConfig::default() });
    let seeded = Seeded { n: 20_000, seed: 23 };
    seed_through_driver(&stack, &uri, &seeded);
    let mut args = stack.args(dir.path(), 2);
    args.mongo.uri = uri.clone();
    let st = Command::new(BIN).args(["indexes", "--mongo-uri", &uri]).status().expect("indexes");
    assert!(st.success());

    let mut rng = fastrand::Rng::with_seed(99);
    let mut killed = 0;
    for round in 0..12 {
        let mut cmd = backfill_cmd(&args);
        if round == 5 {
            // Dies right after a checkpoint records its second commit, before that epoch is marked.
            cmd.env("TWEET_EMBED_CRASH_AFTER_COMMIT", "2");
            let status = cmd.status().expect("run to the crash hook");
            assert_eq!(status.signal(), Some(6), "the crash hook should abort the run: {status:?}");
            let cp = CheckpointStore::open(&args.state_dir).unwrap().load().unwrap().expect("checkpoint");
            assert!(
                cp.committed() > cp.marked(),
                "crashed between commit and marks: {} vs {}",
                cp.committed(),
                cp.marked()
            );
            continue;
        }
        let mut child = Proc(cmd.spawn().expect("spawn backfill"));
        let wait = Duration::from_millis(rng.u64(300..2_500));
        let started = Instant::now();
        let mut exited = false;
        while started.elapsed() < wait {
            if child.0.try_wait().expect("try_wait").is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            child.0.kill().expect("SIGKILL");
            killed += 1;
        }
        let _ = child.0.wait();
    }
    assert!(killed >= 10, "only {killed} runs were killed mid-way");
    // Last run to completion.
    let out = backfill_cmd(&args).stdout(Stdio::piped()).output().expect("final backfill");
    assert!(out.status.success(), "final run failed: {}", String::from_utf8_lossy(&out.stderr));
    let cp = CheckpointStore::open(&args.state_dir).unwrap().load().unwrap().expect("checkpoint");
    assert_eq!(cp.committed(), cp.marked());
    // Read back through the dev-mongo process.
    check_run_in(&stack, stack.coll_at(&uri), &seeded, &args.out);
}
