//! tweet-embed as a timely cluster: two `tweet-embed` processes on loopback, each with its own
//! worker threads, its own TEI endpoints and its own state directory, writing one output
//! directory (shared storage). Process 0 leads; every message between them crosses timely's TCP
//! transport, serialized. The outcome must be the single process's: every eligible document
//! exactly once, all marked — for a backfill, for a continuous run stopped by a signal to process
//! 0, and after either process is killed mid-run and both are restarted.

#[allow(dead_code)]
use dev_tei::FaultConfig;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::expect::check_run;
use test_support::proc::{free_port, terminate, Proc};
use test_support::synth::Kind;
use test_support::{Fixture, Seeded, Stack};
use tweet_embed_operators::run::RunConfig;
use tweet_embed_operators::table::checkpoint::{Checkpoint, CheckpointStore, CommitHistory, SourcePositions};

/// The dev stack with 4 simulated GPUs and `docs` seeded tweets, and a directory for a cluster.
struct Setup {
    stack: Stack,
    seeded: Seeded,
    dir: tempfile::TempDir,
    args: RunConfig,
}

impl Setup {
    fn new(docs: u64, seed_with: u64) -> Setup {
        let Fixture { stack, seeded, dir, mut args } =
            Fixture::new(Stack::start(4, FaultConfig::default()), Seeded { n: docs, seed: seed_with }, 2);
        // Compaction under way while the cluster runs: small files, and a short age in `run`.
        args.target_file_bytes = 2 << 20;
        args.max_file_age = Duration::from_secs(1);
        Setup { stack, seeded, dir, args }
    }

    /// Two processes' commands: process `i` gets GPUs `2i` and `2i + 1` and its own state
    /// directory; both write `args.out`.
    fn cmds(&self, command: &str) -> Vec<Command> {
        self.cmds_with(command, |_| {})
    }

    /// As [`Setup::cmds`], with process 1's flags changed by `follower`.
    fn cmds_with(&self, command: &str, follower: impl Fn(&mut RunConfig)) -> Vec<Command> {
        let dir = self.dir.path();
        let hostfile = dir.join("hosts");
        if !hostfile.exists() {
            std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()))
                .expect("hostfile");
        }
        let gpus = self.stack.tei.as_ref().expect("tei").urls();
        (0..2)
            .map(|i| {
                let mut a = self.args.clone();
                a.state_dir = dir.join(format!("state-{i}"));
                a.tmp_dir = dir.join(format!("tmp-{i}"));
                a.tei.urls = gpus[2 * i..2 * i + 2].to_vec();
                if i == 1 {
                    follower(&mut a);
                }
                let mut c = test_support::proc::pipeline_cmd(env!("CARGO_BIN_EXE_tweet-embed"), command, &a);
                c.args(["--processes", "2", "--process", &i.to_string()]).arg("--hostfile").arg(&hostfile);
                // A loaded machine's drain may take long; the follower's own SIGTERM arms this
                // bound too. WARN and up only: nobody reads the pipe until the process exits.
                c.args(["--drain-timeout", "600s"]).env("TWEET_EMBED_LOG", "warn");
                c.stderr(Stdio::piped());
                c
            })
            .collect()
    }

    fn spawn(&self, command: &str) -> Vec<Proc> {
        spawn_all(self.cmds(command))
    }
}

fn spawn_all(cmds: Vec<Command>) -> Vec<Proc> {
    cmds.into_iter().map(|mut c| Proc(c.spawn().expect("spawn"))).collect()
}

/// The workers (global indexes) that wrote output files.
fn writers(out: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(out)
        .expect("out")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.ends_with(".parquet").then(|| name.split('-').find(|p| p.starts_with('w')).map(String::from))?
        })
        .collect()
}

fn stderr_of(p: &mut Proc) -> String {
    let mut s = String::new();
    if let Some(mut e) = p.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

/// Waits for every process to exit 0, at most `limit` each.
fn all_succeed(procs: &mut [Proc], limit: Duration, who: &str) {
    for (i, p) in procs.iter_mut().enumerate() {
        let status = p.wait_for(limit);
        assert!(status.success(), "{who} {i} failed ({status:?}):\n{}", stderr_of(p));
    }
}

/// Waits for every process to fail, at most 60 s each, with one line that says `why` and no
/// panic trace.
fn all_fail_saying(procs: &mut [Proc], why: &str) {
    for (i, p) in procs.iter_mut().enumerate() {
        let status = p.wait_for(Duration::from_secs(60));
        assert!(!status.success(), "process {i} succeeded");
        let err = stderr_of(p);
        assert!(err.contains(why), "process {i}: {err}");
        assert!(!err.contains("panicked"), "process {i}: {err}");
    }
}

#[test]
fn two_processes_backfill_every_document_once() {
    let setup = Setup::new(12_000, 61);
    all_succeed(&mut setup.spawn("backfill"), Duration::from_secs(300), "process");
    let Setup { stack, seeded, dir, args } = &setup;
    check_run(stack, seeded, &args.out);
    // Both processes staged their epochs in the shared `<out>/_staging`, and the leader's one
    // compactor merged them into target-size files (all but the tail), nothing left staged.
    let w = writers(&args.out);
    assert_eq!(w.into_iter().collect::<Vec<_>>(), ["w000"], "one compactor writes --out");
    let sizes: Vec<u64> = std::fs::read_dir(&args.out)
        .expect("out")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .map(|e| e.metadata().expect("stat").len())
        .collect();
    assert!(sizes.len() >= 5, "{sizes:?}");
    assert!(sizes.iter().filter(|b| **b < args.target_file_bytes).count() <= 1, "{sizes:?}");
    let staged =
        std::fs::read_dir(args.out.join("_staging")).expect("staging").flatten().filter(|e| e.path().is_file()).count();
    assert_eq!(staged, 0);
    // Every process fed its own GPUs.
    let per_gpu: Vec<u64> = stack.tei.as_ref().expect("tei").stats().iter().map(|s| s.inputs).collect();
    assert!(per_gpu.iter().all(|n| *n > 0), "inputs per GPU: {per_gpu:?}");
    // Only the leader keeps a checkpoint.
    assert!(dir.path().join("state-0").join("checkpoint.json").exists());
    assert!(!dir.path().join("state-1").join("checkpoint.json").exists());
}

#[test]
fn two_processes_run_stream_and_stop_on_a_signal_to_process_0() {
    let base = 6_000;
    let setup = Setup::new(base, 67);
    let mut procs = setup.spawn("run");
    let (stack, args) = (&setup.stack, &setup.args);
    // New tweets while the backfill runs and after: the stream on process 0 reads them.
    let coll = stack.coll();
    let inserted = 1_500;
    stack.rt.block_on(async {
        for chunk in (base..base + inserted).collect::<Vec<_>>().chunks(100) {
            coll.insert_many(chunk.iter().map(|i| test_support::synth::tweet(*i, 67))).await.expect("insert");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let filter = mongodb::bson::doc! {"retweeted": null, "gemma_embedded_768": null};
        let left = stack.rt.block_on(async { coll.count_documents(filter).await });
        if left.expect("count") == 0 {
            break;
        }
        for p in procs.iter_mut() {
            assert!(p.0.try_wait().expect("try_wait").is_none(), "a process exited early:\n{}", stderr_of(p));
        }
        assert!(Instant::now() < deadline, "the work queue did not drain");
        std::thread::sleep(Duration::from_millis(100));
    }
    // One SIGTERM to the follower only says where to send it: the cluster goes on.
    terminate(&procs[1].0);
    std::thread::sleep(Duration::from_secs(1));
    for p in procs.iter_mut() {
        assert!(p.0.try_wait().expect("try_wait").is_none(), "a SIGTERM to process 1 stopped:\n{}", stderr_of(p));
    }
    // SIGTERM to the leader: it stops every worker, drains, commits, and releases process 1.
    terminate(&procs[0].0);
    all_succeed(&mut procs, Duration::from_secs(60), "process");
    let follower = stderr_of(&mut procs[1]);
    assert!(follower.contains("signal process 0 to stop the cluster"), "{follower}");
    check_run(stack, &Seeded { n: base + inserted, seed: 67 }, &args.out);
}

/// The leader's last committed epoch, 0 before its first commit.
fn committed(dir: &Path) -> u64 {
    let store = CheckpointStore::open(dir.join("state-0")).expect("store");
    store.load().ok().flatten().map_or(0, |cp| cp.committed())
}

/// Waits until the leader commits past `epoch`, while it runs.
fn await_commit_past(dir: &Path, epoch: u64, leader: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(dir) <= epoch {
        assert!(Instant::now() < deadline, "no commit past {epoch} in time");
        assert!(leader.0.try_wait().expect("try_wait").is_none(), "finished before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_process_fails_the_cluster_and_a_restart_finishes_it_exactly_once() {
    let setup = Setup::new(40_000, 71);
    let dir = setup.dir.path();
    // Round 1 kills the follower, round 2 the leader, each once the leader has committed.
    for (round, victim) in [(1, 1), (2, 0)] {
        let mut procs = setup.spawn("backfill");
        let before = committed(dir);
        await_commit_past(dir, before, &mut procs[0]);
        procs[victim].0.kill().expect("SIGKILL");
        let _ = procs[victim].0.wait();
        // The survivor loses its peer and fails: it must not hang or report success.
        let survivor = &mut procs[1 - victim];
        let status = survivor.wait_for(Duration::from_secs(60));
        assert!(!status.success(), "round {round}: process {} succeeded alone", 1 - victim);
        // One clear error, not a panic trace per thread.
        let err = stderr_of(survivor);
        assert!(err.contains("lost the connection to another process of the cluster"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    all_succeed(&mut setup.spawn("backfill"), Duration::from_secs(300), "restarted process");
    check_run(&setup.stack, &setup.seeded, &setup.args.out);
}

#[test]
fn a_follower_with_its_own_out_directory_is_refused_before_anything_is_committed() {
    let setup = Setup::new(2_000, 73);
    // Process 1 writes elsewhere: recovery on process 0 could never see its files.
    let elsewhere = setup.dir.path().join("elsewhere");
    let mut procs = spawn_all(setup.cmds_with("backfill", |a| a.out = elsewhere.clone()));
    let follower = procs[1].wait_for(Duration::from_secs(120));
    assert!(!follower.success());
    let err = stderr_of(&mut procs[1]);
    assert!(err.contains("is not the directory process 0 writes to"), "{err}");
    assert!(!procs[0].wait_for(Duration::from_secs(60)).success(), "the leader went on alone");
    assert_nothing_marked(&setup);
}

#[test]
fn an_error_on_process_0_between_passes_ends_every_process_with_it() {
    let setup = Setup::new(1_000, 79);
    // A checkpoint whose resume token cannot be read: process 0 fails as it opens the stream,
    // after both processes joined.
    let sources = SourcePositions { resume_token: Some("not a token".into()), ..SourcePositions::default() };
    let store = CheckpointStore::open(setup.dir.path().join("state-0")).expect("store");
    store.save(&Checkpoint::new(0, 0, Vec::new(), sources), &CommitHistory::default()).expect("save");
    all_fail_saying(&mut setup.spawn("run"), "resume token is unreadable");
}

#[test]
fn processes_with_different_workers_fail_with_a_hint_not_a_panic() {
    let setup = Setup::new(1_000, 83);
    // Process 0 runs 2 workers, process 1 one.
    let mut procs = spawn_all(setup.cmds_with("backfill", |a| a.workers = 1));
    all_fail_saying(&mut procs, "every process needs the same --workers");
}

#[test]
fn a_follower_whose_servers_make_other_vectors_is_refused_before_anything_is_committed() {
    let setup = Setup::new(2_000, 89);
    // Process 1 asks its GPUs for 256 dimensions: its rows could not share the dataset.
    let mut procs = spawn_all(setup.cmds_with("backfill", |a| a.tei.options.dimensions = Some(256)));
    assert!(!procs[1].wait_for(Duration::from_secs(120)).success());
    let err = stderr_of(&mut procs[1]);
    assert!(err.contains("process 1 of the cluster") && err.contains("dimension 768 → 256"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!procs[0].wait_for(Duration::from_secs(60)).success(), "the leader went on alone");
    assert_nothing_marked(&setup);
}

/// Only the documents the seed marked are marked: no pass committed.
fn assert_nothing_marked(setup: &Setup) {
    let (stack, seeded) = (&setup.stack, &setup.seeded);
    let coll = stack.coll();
    let marked = stack
        .rt
        .block_on(async { coll.count_documents(mongodb::bson::doc! {"gemma_embedded_768": {"$exists": true}}).await });
    let by_seed = (0..seeded.n).filter(|i| test_support::synth::kind_of(*i, seeded.seed) == Kind::Marked).count();
    assert_eq!(marked.expect("count"), by_seed as u64, "a pass committed without its follower");
}
