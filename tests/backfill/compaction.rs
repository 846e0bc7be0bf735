//! Compaction: on GPUs slow enough that an epoch holds a few hundred rows, the files in `--out`
//! still reach `--target-file-bytes`, readers polling the dataset never fail or see an id twice,
//! and kill -9 at random instants (several during a compaction's switch) still ends exactly once
//! with nothing left staged.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dev_tei::SimConfig;
use test_support::expect::{check_run, check_run_in, DatasetPoller};
use test_support::proc::Proc;
use test_support::{Fixture, Seeded, Stack};
use tweet_embed_operators::run::Engine;
use tweet_embed_operators::table::checkpoint::CheckpointStore;
use tweet_embed_operators::table::output::{FileKind, PartName};

use super::crash::{backfill_cmd, persisted_dev_mongo, seed_through_driver};

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");
const TARGET: u64 = 4 << 20;

/// Two GPUs at 10k tokens/s each: about 1,000 tweets a second, a few hundred rows per worker
/// per 300 ms epoch.
fn slow_gpus() -> SimConfig {
    SimConfig { gpus: 2, tokens_per_second: 10_000.0, seed: 5, ..SimConfig::default() }
}

/// `(size, kind)` of our files in `out` and `out/_rejects`.
fn out_files(out: &Path) -> Vec<(u64, FileKind, String)> {
    let mut files = Vec::new();
    for kind in [FileKind::Rows, FileKind::Rejects] {
        let Ok(entries) = std::fs::read_dir(out.join(kind.subdir())) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if PartName::parse(&name).is_some() {
                files.push((e.metadata().expect("stat").len(), kind, name));
            }
        }
    }
    files
}

fn parquet_files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for d in [dir.to_path_buf(), dir.join("_rejects")] {
        if let Ok(entries) = std::fs::read_dir(&d) {
            found.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.contains(".parquet")),
            );
        }
    }
    found
}

/// What a staged file costs beyond its rows (footer, schema, key-value metadata, page indexes):
/// about 6 KB measured for files of 35 rows.
const PER_FILE_OVERHEAD: u64 = 10 * 1024;

#[test]
fn files_reach_the_target_at_slow_gpu_speed_while_readers_poll() {
    let Fixture { stack, seeded, dir, mut args } =
        Fixture::new(Stack::start_with(slow_gpus()), Seeded { n: 16_000, seed: 71 }, 2);
    args.target_file_bytes = TARGET;
    std::fs::create_dir_all(&args.out).expect("out");
    let poller = DatasetPoller::start(&args.out, dir.path());
    let summary = Engine::connect(args.clone()).and_then(Engine::backfill).expect("backfill");
    let polled = poller.finish();
    eprintln!("readers: {polled}");
    check_run(&stack, &seeded, &args.out);
    let files = out_files(&args.out);
    let rows: Vec<u64> = files.iter().filter(|f| f.1 == FileKind::Rows).map(|f| f.0).collect();
    let small = rows.iter().filter(|b| **b < TARGET).count();
    eprintln!(
        "rows files: {rows:?}; {} staged files, {} rows each on average",
        summary.files,
        summary.embedded / summary.files.max(1)
    );
    assert!(rows.len() >= 5, "{rows:?}");
    assert!(small <= 1, "more than the tail below target: {rows:?}");
    // Epoch files were many and small; the output holds few.
    assert!(summary.files > rows.len() as u64, "{} staged files for {} output files", summary.files, rows.len());
    assert!(
        parquet_files_under(&args.staging_dir()).is_empty(),
        "left staged: {:?}",
        parquet_files_under(&args.staging_dir())
    );
    // Each row is rewritten at most once: staged bytes plus compacted bytes ≤ 2 × the output (+2% for
    // the staged files' smaller row groups, and each staged file's own footer, schema and page
    // indexes: epochs of a few dozen rows at these GPU speeds and a 300 ms interval). A second
    // rewrite would be 3×.
    let out_bytes: u64 = files.iter().map(|f| f.0).sum();
    let written = summary.staged_bytes + summary.compaction.bytes_written;
    let overhead = summary.files * PER_FILE_OVERHEAD;
    eprintln!("bytes written {written} for {out_bytes} of output: {:.2}×", written as f64 / out_bytes as f64);
    assert!(written as f64 <= 2.04 * out_bytes as f64 + overhead as f64, "{written} written for {out_bytes}");
    assert!(summary.compaction.compactions as usize >= rows.len());
}

#[test]
fn kill_9_during_compactions_then_restart_is_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_mongo, uri) = persisted_dev_mongo(dir.path());
    let stack = Stack::start_with(slow_gpus());
    let seeded = Seeded { n: 15_000, seed: 73 };
    seed_through_driver(&stack, &uri, &seeded);
    let mut args = stack.args(dir.path(), 2);
    args.mongo.uri = uri.clone();
    args.target_file_bytes = 1 << 20;
    assert!(Command::new(BIN).args(["indexes", "--mongo-uri", &uri]).status().expect("indexes").success());
    std::fs::create_dir_all(&args.out).expect("out");
    let poller = DatasetPoller::start(&args.out, dir.path());
    let store = CheckpointStore::open(&args.state_dir).expect("store");
    let compacting = || store.load().ok().flatten().is_some_and(|cp| cp.compacting().is_some());
    let mut rng = fastrand::Rng::with_seed(101);
    let (mut killed, mut during) = (0, 0);
    for round in 0..14 {
        // Every other round waits for a compaction's switch (widened by the hook) and kills it
        // there; the others at a random instant.
        let aim = round % 2 == 0;
        let mut cmd = backfill_cmd(&args);
        cmd.env("TWEET_EMBED_COMPACTION_PAUSE", "400ms");
        let mut child = Proc(cmd.spawn().expect("spawn backfill"));
        let started = Instant::now();
        let wait = Duration::from_millis(rng.u64(300..2_500));
        let mut exited = false;
        loop {
            if child.0.try_wait().expect("try_wait").is_some() {
                exited = true;
                break;
            }
            if aim && compacting() {
                break;
            }
            if (!aim && started.elapsed() >= wait) || started.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !exited {
            child.0.kill().expect("SIGKILL");
            let status = child.0.wait().expect("wait");
            assert_eq!(status.signal(), Some(9));
            // The checkpoint it left says whether the kill landed inside a switch.
            let in_switch = compacting();
            killed += 1;
            if in_switch {
                during += 1;
            }
        }
    }
    eprintln!("{killed} kills, {during} during a compaction's switch");
    assert!(killed >= 10, "only {killed} runs were killed mid-way");
    assert!(during >= 3, "only {during} kills landed during a compaction");
    let out = backfill_cmd(&args).stdout(Stdio::piped()).output().expect("final backfill");
    assert!(out.status.success(), "final run failed: {}", String::from_utf8_lossy(&out.stderr));
    let polled = poller.finish();
    eprintln!("readers: {polled}");
    let cp = store.load().expect("load").expect("checkpoint");
    assert_eq!(cp.committed(), cp.marked());
    assert!(cp.staged().is_empty() && cp.compacting().is_none(), "{cp:?}");
    assert!(
        parquet_files_under(&args.staging_dir()).is_empty(),
        "left staged: {:?}",
        parquet_files_under(&args.staging_dir())
    );
    let partials: Vec<String> =
        parquet_files_under(&args.out).into_iter().filter(|n| n.ends_with(".partial")).collect();
    assert!(partials.is_empty(), "partial files left in --out: {partials:?}");
    check_run_in(&stack, stack.coll_at(&uri), &seeded, &args.out);
}
