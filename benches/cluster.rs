//! What running as a timely cluster costs (`cargo bench --bench cluster`): the same 100k-document
//! backfill against in-process dev-mongo and 4 simulated GPUs in `--instant` mode (zero service
//! time, dim 768), as one process with 2 workers, and as 2 processes with 1 worker each joined
//! over loopback TCP (every exchanged record serialized), each process with 2 of the 4 GPUs. The
//! total worker count is the same, so the difference is timely's transport and the extra
//! process. On a 2-core machine this measures overhead, not scaling: a cluster is for more
//! machines. CPU time is summed over the pipeline processes (from `wait4`), excluding the dev
//! servers. `BENCH_DOCS` overrides the size, `BENCH_RUNS` the repetitions (median reported).

use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::{DevTei, SimConfig};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::bench::{env_or, median_by};
use test_support::fresh_work_queue;
use test_support::proc::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

struct Measured {
    wall: Duration,
    cpu: Duration,
}

/// Runs `processes` pipeline processes of `workers` threads each to completion.
// wait4 below reaps the children (and reads their rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn backfill(mongo: &DevMongo, tei: &DevTei, dir: &Path, processes: usize, workers: usize) -> Measured {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    let hosts = dir.join("hosts");
    let lines: Vec<String> = (0..processes).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    std::fs::write(&hosts, lines.join("\n")).expect("hostfile");
    let urls = tei.urls();
    let per = urls.len() / processes;
    let started = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|p| {
            let mut cmd = Command::new(BIN);
            cmd.arg("backfill")
                .args(["--mongo-uri", &mongo.uri(), "--tei-urls", &urls[p * per..(p + 1) * per].join(",")])
                .arg("--out")
                .arg(dir.join("out"))
                .arg("--state-dir")
                .arg(dir.join(format!("state-{p}")))
                .args(["--workers", &workers.to_string(), "--checkpoint-interval", "1s", "--log", "warn"])
                .stdout(Stdio::null());
            if processes > 1 {
                cmd.args(["--processes", &processes.to_string(), "--process", &p.to_string()])
                    .arg("--hostfile")
                    .arg(&hosts);
            }
            cmd.spawn().expect("spawn backfill")
        })
        .collect();
    let mut cpu = Duration::ZERO;
    for child in children {
        let pid = child.id() as libc::pid_t;
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child with valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(r, pid, "wait4");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "backfill failed: {status}");
        let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
        cpu += tv(usage.ru_utime) + tv(usage.ru_stime);
    }
    Measured { wall: started.elapsed(), cpu }
}

fn main() {
    let runs: usize = env_or("BENCH_RUNS", 3);
    let docs: u64 = env_or("BENCH_DOCS", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let tei =
        rt.block_on(DevTei::start(SimConfig { gpus: 4, instant: true, ..SimConfig::default() })).expect("dev-tei");
    let mongo = DevMongo::start(DevMongoConfig::default()).expect("dev-mongo");
    let dir = tempfile::tempdir().expect("tempdir");
    let shapes = [(1usize, 2usize), (2, 1)];
    let mut results: Vec<Vec<Measured>> = shapes.iter().map(|_| Vec::new()).collect();
    let mut eligible = 0;
    // Interleaved, so drift on a shared machine hits every shape alike.
    for _ in 0..runs {
        for (i, (processes, workers)) in shapes.iter().enumerate() {
            eligible = fresh_work_queue(&rt, &mongo, docs, 5);
            results[i].push(backfill(&mongo, &tei, &dir.path().join("run"), *processes, *workers));
        }
    }
    println!("\nbackfill of {docs} documents ({eligible} embedded or rejected), 4 simulated GPUs --instant, median of {runs}");
    println!("| processes × workers | wall (s) | docs/s | pipeline CPU-µs/doc (all processes) |");
    println!("|---|---:|---:|---:|");
    let mut medians = Vec::new();
    for ((processes, workers), ms) in shapes.iter().zip(results) {
        let m = median_by(ms, |m| m.wall.as_secs_f64());
        let rate = eligible as f64 / m.wall.as_secs_f64();
        let cpu = m.cpu.as_secs_f64() * 1e6 / eligible as f64;
        println!("| {processes} × {workers} | {:.1} | {rate:.0} | {cpu:.1} |", m.wall.as_secs_f64());
        medians.push((rate, cpu));
    }
    println!(
        "2 × 1 over 1 × 2: {:.2}× the throughput, {:.2}× the CPU per document",
        medians[1].0 / medians[0].0,
        medians[1].1 / medians[0].1
    );
}
