//! CPU the TEI client spends per tweet: vectors as JSON numbers (`/embed`) against base64
//! little-endian f32 (`/v1/embeddings`, `encoding_format: "base64"`)
//! (`cargo bench --bench tei_transport`).
//!
//! The simulator runs as its own process (`tweet-embed dev-tei --instant`, dim 768), so this
//! process's CPU time (`getrusage`) is the client's alone: building request bodies, HTTP, and
//! decoding the vectors. Each route embeds the same tweets in requests of 32, 8 at a time;
//! median of 5 alternating runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::bench::median_by;
use test_support::proc::{free_port, Proc};
use test_support::texts;
use tweet_embed_operators::tei::{Api, Concurrency, EndpointPool, PoolConfig};

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");
const TWEETS: usize = 40_000;
const RUNS: usize = 5;

/// This process's user + system CPU time.
fn cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn start_server() -> (Proc, String) {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["dev-tei", "--gpus", "1", "--instant", "--base-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dev-tei starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "dev-tei did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), format!("http://127.0.0.1:{port}"))
}

/// CPU-µs per tweet and tweets/s embedding every tweet with `pool`.
async fn run(pool: &EndpointPool, tweets: &[String]) -> (f64, f64) {
    let (cpu0, t0) = (cpu(), Instant::now());
    let chunks: Vec<Vec<String>> = tweets.chunks(32).map(<[String]>::to_vec).collect();
    let mut embedded = 0;
    for group in chunks.chunks(8) {
        let calls: Vec<_> = group.iter().map(|c| pool.embed(c.clone())).collect();
        for outcomes in futures_util::future::join_all(calls).await {
            embedded += outcomes.iter().filter(|o| o.as_ref().is_ok_and(|v| v.len() == 768)).count();
        }
    }
    assert_eq!(embedded, tweets.len(), "every tweet embedded");
    let (cpu, wall) = (cpu() - cpu0, t0.elapsed());
    (cpu.as_secs_f64() * 1e6 / tweets.len() as f64, tweets.len() as f64 / wall.as_secs_f64())
}

fn main() {
    let (_server, url) = start_server();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let tweets: Vec<String> = (0..TWEETS).map(texts::tweet).collect();
        let connect = |api| {
            let config = PoolConfig { api, concurrency: Concurrency::Fixed(8), ..PoolConfig::new([url.clone()]) };
            async move { EndpointPool::connect(config).await.expect("connects") }
        };
        let (json, base64) = (connect(Api::Tei).await, connect(Api::OpenAi).await);
        // Warm both paths (connections, allocator) before measuring.
        run(&json, &tweets[..2000]).await;
        run(&base64, &tweets[..2000]).await;
        let (mut j, mut b) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            j.push(run(&json, &tweets).await);
            b.push(run(&base64, &tweets).await);
        }
        let ((jc, jr), (bc, br)) = (median_by(j, |r| r.0), median_by(b, |r| r.0));
        println!("\nTEI client CPU per tweet, dim 768, requests of 32, simulator in its own process (median of {RUNS} x {TWEETS} tweets)");
        println!("| route | client CPU-µs/tweet | tweets/s |");
        println!("|---|---:|---:|");
        println!("| /embed, JSON floats | {jc:.1} | {jr:.0} |");
        println!("| /v1/embeddings, base64 | {bc:.1} | {br:.0} |");
        println!("| saved | {:.1} ({:.0}%) | |", jc - bc, 100.0 * (jc - bc) / jc);
    });
}
