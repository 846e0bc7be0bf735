//! Files in `--out` at real GPU speed (`cargo bench --bench compaction`): a backfill in-process
//! with the defaults (512 MiB target, 5 s checkpoint interval, 2 workers) against 4 simulated
//! GPUs calibrated like the old table (19,600 tok/s and 5 ms per batch each, dim 768), time-scaled
//! by `BENCH_TIME_SCALE` (default 2: GPUs twice as fast and the checkpoint interval halved, so an
//! epoch holds what it would at real speed while the run takes half the time). Reports:
//! - the files of the per-epoch layout (what `--out` held before compaction: the staged files,
//!   seen by polling the checkpoint) and the files in `--out` now, with their size distribution;
//! - bytes written per byte of output (staged + compacted);
//! - the compactor's thread CPU per document.
//!
//! The simulated time is the calibrated GPUs' time for the tokens served:
//! tokens / (4 × 19,600 tok/s). `BENCH_DOCS` sets the collection (default 1,750,000 synthetic
//! tweets, over 10 simulated minutes). Every number is simulated; the machine's disk is real.

use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::DevTei;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::bench::env_or;
use test_support::gpu::Gpu;
use tweet_embed_operators::run::{Engine, MongoTarget, RunConfig};
use tweet_embed_operators::table::checkpoint::CheckpointStore;
use tweet_embed_operators::table::output::PartName;

const TOKENS_PER_SECOND: f64 = 19_600.0;

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// `count | min | p50 | p90 | max | total` in MiB.
fn distribution(sizes: &mut [u64]) -> String {
    sizes.sort_unstable();
    let at = |q: f64| sizes.get(((sizes.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
    format!(
        "{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}",
        sizes.len(),
        mib(at(0.0)),
        mib(at(0.5)),
        mib(at(0.9)),
        mib(at(1.0)),
        mib(sizes.iter().sum())
    )
}

fn main() {
    let docs: u64 = env_or("BENCH_DOCS", 1_750_000);
    let scale: f64 = env_or("BENCH_TIME_SCALE", 2.0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sim = Gpu { base: Duration::from_secs_f64(0.005 / scale), tokens_per_second: TOKENS_PER_SECOND * scale }.sim(4);
    let tei = rt.block_on(DevTei::start(sim)).expect("dev-tei");
    let mongo = DevMongo::start(DevMongoConfig::default()).expect("dev-mongo");
    let seeded = test_support::insert_tweets(&mongo, docs, 3).expect("seed");
    rt.block_on(test_support::create_indexes(&mongo)).expect("indexes");
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()))
            .expect("tempdir");
    let mut config = RunConfig::new(MongoTarget::tweets_at(mongo.uri()), tei.urls(), dir.path());
    config.checkpoint_interval = Duration::from_secs_f64(5.0 / scale);
    let (out, state) = (config.out.clone(), config.state_dir.clone());
    // The per-epoch files, as the checkpoint lists them while they wait for compaction.
    let staged: Arc<parking_lot::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let (staged, polling) = (staged.clone(), polling.clone());
        std::thread::spawn(move || {
            let store = CheckpointStore::open(&state).expect("state");
            while polling.load(Ordering::Relaxed) {
                if let Ok(Some(cp)) = store.load() {
                    let mut seen = staged.lock();
                    for f in
                        cp.staged().iter().filter(|f| f.kind == tweet_embed_operators::table::output::FileKind::Rows)
                    {
                        seen.insert(f.path.to_string_lossy().into_owned(), f.bytes);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    let summary = Engine::connect(config).and_then(Engine::backfill).expect("backfill");
    let wall = started.elapsed().as_secs_f64();
    polling.store(false, Ordering::Relaxed);
    poller.join().expect("poller");
    let tokens: u64 = tei.stats().iter().map(|s| s.tokens).sum();
    let simulated_s = tokens as f64 / (4.0 * TOKENS_PER_SECOND);
    let mut after: Vec<u64> = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .filter(|e| PartName::parse(&e.file_name().to_string_lossy()).is_some())
        .map(|e| e.metadata().expect("stat").len())
        .collect();
    let out_bytes: u64 = after.iter().sum();
    let mut before: Vec<u64> = staged.lock().values().copied().collect();
    let c = summary.compaction;
    let done = summary.embedded + summary.rejected;
    println!(
        "\nbackfill of {docs} tweets ({} eligible), 4 GPUs × 19,600 tok/s, time scale {scale}: {:.0} s simulated, {:.0} s wall",
        seeded.eligible(),
        simulated_s,
        wall
    );
    println!("| rows files | count | min MiB | p50 MiB | p90 MiB | max MiB | total MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!("| per epoch (before: what --out held) | {} |", distribution(&mut before));
    println!("| in --out now (512 MiB target) | {} |", distribution(&mut after));
    println!(
        "bytes written per byte of output: {:.2} ({:.0} MiB staged + {:.0} MiB compacted for {:.0} MiB in --out)",
        (summary.staged_bytes + c.bytes_written) as f64 / out_bytes.max(1) as f64,
        mib(summary.staged_bytes),
        mib(c.bytes_written),
        mib(out_bytes)
    );
    println!(
        "compaction: {} files merged into {}, {:.2} s of compactor CPU, {:.2} µs per document",
        c.files_merged,
        c.compactions,
        c.cpu_ns as f64 / 1e9,
        c.cpu_ns as f64 / 1e3 / done.max(1) as f64
    );
    println!("pipeline: {done} documents in {wall:.0} s wall ({:.0} docs/s)", done as f64 / wall);
}
