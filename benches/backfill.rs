//! End-to-end backfill benchmark (`cargo bench --bench backfill`): the `tweet-embed backfill`
//! binary against in-process dev-mongo and 4 simulated GPUs in `--instant` mode (zero service
//! time, dim 768), so the pipeline itself is what is measured. The pipeline runs as a child
//! process, so its CPU time (from `wait4`) and peak RSS exclude the dev servers. Peak RSS is the
//! child's `VmHWM`, sampled every 50 ms: `ru_maxrss` would also count the parent's pages the
//! child shares between fork and exec, i.e. the dev servers' whole database.
//!
//! Rows: docs/s, pipeline CPU-µs per document, peak RSS, for 1 and 2 workers at 100k documents,
//! and at 1M documents (RSS must not grow with the collection). `BENCH_DOCS_LARGE` overrides
//! the large size, `BENCH_LARGE_WORKERS` its workers; `BENCH_RUNS` the repetitions (median
//! reported). `BENCH_BINS=old/tweet-embed,new/tweet-embed` runs those binaries instead, each
//! repetition of each row interleaved across them, for an A/B of two builds on one machine.

use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::{DevTei, SimConfig};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::bench::{env_or, median_by};
use test_support::fresh_work_queue;
use test_support::peak_rss::PeakRss;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

struct Measured {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: i64,
    docs: u64,
}

// wait4 below reaps the child (and reads its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_child(cmd: &mut Command) -> Measured {
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn backfill");
    let pid = child.id() as libc::pid_t;
    let peak = PeakRss::watch(child.id());
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let max_rss_kib = peak.finish();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "backfill failed: {status}");
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Measured { wall: started.elapsed(), cpu: tv(usage.ru_utime) + tv(usage.ru_stime), max_rss_kib, docs: 0 }
}

fn backfill(bin: &str, mongo: &DevMongo, tei: &DevTei, dir: &Path, workers: usize) -> Measured {
    let _ = std::fs::remove_dir_all(dir);
    let mut cmd = Command::new(bin);
    cmd.arg("backfill")
        .args(["--mongo-uri", &mongo.uri(), "--tei-urls", &tei.urls().join(",")])
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--workers", &workers.to_string(), "--checkpoint-interval", "1s", "--log", "warn"])
        .stdout(std::process::Stdio::null());
    run_child(&mut cmd)
}

fn main() {
    let runs: usize = env_or("BENCH_RUNS", 3);
    let large: u64 = env_or("BENCH_DOCS_LARGE", 1_000_000);
    let large_workers: usize = env_or("BENCH_LARGE_WORKERS", 2);
    let bins: Vec<String> = std::env::var("BENCH_BINS")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| vec![BIN.to_string()]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let tei =
        rt.block_on(DevTei::start(SimConfig { gpus: 4, instant: true, ..SimConfig::default() })).expect("dev-tei");
    let mongo = DevMongo::start(DevMongoConfig::default()).expect("dev-mongo");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    for (docs, workers, reps) in [(100_000u64, 1usize, runs), (100_000, 2, runs), (large, large_workers, 1)] {
        let mut ms: Vec<Vec<Measured>> = bins.iter().map(|_| Vec::new()).collect();
        for _ in 0..reps {
            for (bin, m) in bins.iter().zip(&mut ms) {
                let eligible = fresh_work_queue(&rt, &mongo, docs, 3);
                let mut one = backfill(bin, &mongo, &tei, dir.path(), workers);
                one.docs = eligible;
                m.push(one);
            }
        }
        for (bin, m) in bins.iter().zip(ms) {
            rows.push((bin.clone(), docs, workers, median_by(m, |m| m.wall.as_secs_f64())));
        }
    }
    println!("\nbackfill, 4 simulated GPUs --instant, dim 768, pipeline in its own process (median of {runs}; 1 run at {large})");
    println!(
        "| binary | documents | workers | docs embedded+rejected | wall (s) | docs/s | pipeline CPU-µs/doc | peak RSS (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (bin, docs, workers, m) in rows {
        println!(
            "| {bin} | {docs} | {workers} | {} | {:.1} | {:.0} | {:.1} | {:.0} |",
            m.docs,
            m.wall.as_secs_f64(),
            m.docs as f64 / m.wall.as_secs_f64(),
            m.cpu.as_secs_f64() * 1e6 / m.docs as f64,
            m.max_rss_kib as f64 / 1024.0
        );
    }
}
