//! Benchmark of the TEI pool's adaptive concurrency against simulated GPUs
//! (`cargo bench --bench tei_adaptive`). Every number comes from the dev-tei simulator, not from
//! a GPU: it models TEI's queue and a GPU's service time, calibrated like the old autotune table
//! (about 19.5k tokens/s per GPU at full batches, documents of 418 tokens, TEI 1.9's defaults).
//!
//! The pool is driven as the backfill's sink drives it: a steady backlog of concurrent `embed`
//! calls, each one packed request of 32 documents, more of them than any limit lets through.
//! Rows:
//! - `adaptive`: no concurrency flag. Targets: ≥ 97% of the simulator's capacity, p95 request
//!   latency ≤ 2 × one full batch's service time, zero errors.
//! - `fixed 128`: the old script's setting (batch 32, 128 requests in flight over 4 GPUs = 32
//!   per endpoint, which the pool caps at 16 so the inputs fit TEI's 512 permits).
//! - `heterogeneous`: one of the 4 GPUs at half speed. Target: ≥ 95% of the summed capacity.
//! - an outage: GPU 1 down for 30 s mid-run and back; nothing lost, GPU 1 used again after; the
//!   throughput timeline is printed.
//!
//! Capacity is the simulator's at full batches (`max_batch_tokens` filled with whole
//! documents); measured throughput is tokens the simulated GPUs completed over wall time.
//! Request latency is the pool's, from dispatch to answer (not the time an `embed` call waits for
//! a slot in the pool's backlog).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_tei::{DevTei, GpuStats, SimConfig};
use hdrhistogram::Histogram;
use test_support::gpu::Gpu;
use tweet_embed_operators::tei::{Concurrency, EndpointPool, PoolConfig};

const DOC_TOKENS: usize = 418;
const DOCS_PER_REQUEST: usize = 32;
const TOKENS_PER_SECOND: f64 = 19_600.0;
const WARM_UP: Duration = Duration::from_secs(6);
const MEASURE: Duration = Duration::from_secs(20);

/// A text of exactly `tokens` estimated tokens: `tokens - 2` four-hex-digit words.
fn doc(tokens: usize, seed: usize) -> String {
    let words: Vec<String> =
        (0..tokens - 2).map(|i| format!("{:04x}", (seed.wrapping_mul(7919) + i * 31) % 0xffff)).collect();
    words.join(" ")
}

/// A simulated GPU of `tokens_per_second` and 5 ms per batch.
fn gpu(tokens_per_second: f64) -> Gpu {
    Gpu { base: Duration::from_millis(5), tokens_per_second }
}

/// Tokens of one full server batch of whole documents, and its service time.
fn full_batch(config: &SimConfig) -> (f64, Duration) {
    let tokens = (config.max_batch_tokens / DOC_TOKENS * DOC_TOKENS) as f64;
    (tokens, config.base + Duration::from_secs_f64(tokens / config.tokens_per_second))
}

/// The simulator's capacity in tokens/s at full batches.
fn capacity(config: &SimConfig) -> f64 {
    let (tokens, service) = full_batch(config);
    config.gpus as f64 * tokens / service.as_secs_f64()
}

/// A steady backlog: `clients` loops of `embed(32 docs)` until stopped.
struct Backlog {
    stop: Arc<AtomicBool>,
    docs_done: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Backlog {
    fn start(pool: &EndpointPool, clients: usize) -> Self {
        let (stop, docs_done, lost) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..clients)
            .map(|c| {
                let (pool, stop, docs_done, lost) =
                    (pool.clone(), stop.clone(), Arc::clone(&docs_done), Arc::clone(&lost));
                tokio::spawn(async move {
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let texts: Vec<String> =
                            (0..DOCS_PER_REQUEST).map(|i| doc(DOC_TOKENS, c * 1_000_003 + round * 32 + i)).collect();
                        let outcomes = pool.embed(texts).await;
                        let ok = outcomes.iter().filter(|o| o.as_ref().is_ok_and(|v| v.len() == 768)).count();
                        docs_done.fetch_add(ok as u64, Ordering::Relaxed);
                        lost.fetch_add((DOCS_PER_REQUEST - ok) as u64, Ordering::Relaxed);
                        round += 1;
                    }
                })
            })
            .collect();
        Self { stop, docs_done, lost, tasks }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        (self.docs_done.load(Ordering::Relaxed), self.lost.load(Ordering::Relaxed))
    }
}

fn tokens(stats: &[GpuStats]) -> u64 {
    stats.iter().map(|s| s.tokens).sum()
}

struct Row {
    name: String,
    limits: String,
    capacity: f64,
    measured: f64,
    docs_per_s: f64,
    p50: f64,
    p95: f64,
    errors: u64,
}

/// Runs a backlog on `pool` over GPUs whose stats `gpu_stats` reads; measures after warm-up.
async fn measure(
    name: &str,
    pool: &EndpointPool,
    clients: usize,
    capacity: f64,
    gpu_stats: &dyn Fn() -> Vec<GpuStats>,
) -> Row {
    let backlog = Backlog::start(pool, clients);
    tokio::time::sleep(WARM_UP).await;
    let (t0, tok0, lat0, pool0) = (Instant::now(), tokens(&gpu_stats()), pool.request_latencies(), pool.stats());
    let docs0 = backlog.docs_done.load(Ordering::Relaxed);
    tokio::time::sleep(MEASURE).await;
    let (wall, tok1, mut lat, pool1) = (t0.elapsed(), tokens(&gpu_stats()), pool.request_latencies(), pool.stats());
    let docs1 = backlog.docs_done.load(Ordering::Relaxed);
    let _ = backlog.finish().await;
    let _ = lat.subtract(&lat0);
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    let limits: Vec<String> = pool1.endpoints.iter().map(|e| e.concurrency_limit.to_string()).collect();
    Row {
        name: name.to_string(),
        limits: limits.join("/"),
        capacity,
        measured: (tok1 - tok0) as f64 / wall.as_secs_f64(),
        docs_per_s: (docs1 - docs0) as f64 / wall.as_secs_f64(),
        p50: q(&lat, 0.5),
        p95: q(&lat, 0.95),
        errors: (pool1.retries - pool0.retries) + (pool1.rejected_inputs - pool0.rejected_inputs),
    }
}

fn print_rows(rows: &[Row], full_batch_s: f64) {
    println!(
        "| scenario | limit per endpoint (end) | capacity tok/s | measured tok/s | ratio | docs/s | p50 (s) | p95 (s) | p95 / full batch | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
            r.name,
            r.limits,
            r.capacity,
            r.measured,
            r.measured / r.capacity,
            r.docs_per_s,
            r.p50,
            r.p95,
            r.p95 / full_batch_s,
            r.errors
        );
    }
}

fn verdict(name: &str, ok: bool) {
    println!("{name}: {}", if ok { "met" } else { "NOT met" });
}

async fn pool(urls: Vec<String>, concurrency: Concurrency) -> EndpointPool {
    let config = PoolConfig { concurrency, batch_size: Some(DOCS_PER_REQUEST), ..PoolConfig::new(urls) };
    match EndpointPool::connect(config).await {
        Ok(pool) => pool,
        Err(err) => panic!("cannot connect to the simulator: {err}"),
    }
}

async fn run_homogeneous() -> (Row, Row, f64) {
    let config = gpu(TOKENS_PER_SECOND).sim(4);
    let (_, batch) = full_batch(&config);
    let cap = capacity(&config);
    let tei = DevTei::start(config.clone()).await.expect("simulator starts");
    let stats = || tei.stats();
    let adaptive = pool(tei.urls(), Concurrency::Adaptive).await;
    let clients = adaptive.max_in_flight() + 8;
    let a = measure("adaptive (no flag)", &adaptive, clients, cap, &stats).await;
    drop(adaptive);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fixed = pool(tei.urls(), Concurrency::Fixed(32)).await;
    let f =
        measure("fixed: batch 32, concurrency 128 (old script; capped at 16/endpoint)", &fixed, 128, cap, &stats).await;
    (a, f, batch.as_secs_f64())
}

async fn run_heterogeneous() -> Row {
    let fast = gpu(TOKENS_PER_SECOND).sim(3);
    let slow = gpu(TOKENS_PER_SECOND / 2.0).sim(1);
    let cap = capacity(&fast) + capacity(&slow);
    let (a, b) = (DevTei::start(fast).await.expect("starts"), DevTei::start(slow).await.expect("starts"));
    let urls: Vec<String> = a.urls().into_iter().chain(b.urls()).collect();
    let stats = || a.stats().into_iter().chain(b.stats()).collect();
    let adaptive = pool(urls, Concurrency::Adaptive).await;
    let clients = adaptive.max_in_flight() + 8;
    let row = measure("heterogeneous: GPU 3 at half speed, adaptive", &adaptive, clients, cap, &stats).await;
    let shares: Vec<String> = adaptive.stats().endpoints.iter().map(|e| e.embedded_inputs.to_string()).collect();
    println!("heterogeneous: inputs per endpoint {}", shares.join(" / "));
    row
}

async fn run_outage() {
    const BEFORE: Duration = Duration::from_secs(15);
    const DOWN: Duration = Duration::from_secs(30);
    const AFTER: Duration = Duration::from_secs(20);
    const STEP: Duration = Duration::from_millis(2500);
    let config = gpu(TOKENS_PER_SECOND).sim(4);
    let cap = capacity(&config);
    let tei = DevTei::start(config).await.expect("simulator starts");
    let adaptive = pool(tei.urls(), Concurrency::Adaptive).await;
    let backlog = Backlog::start(&adaptive, adaptive.max_in_flight() + 8);
    let gpu = tei.gpus()[1].clone();
    let start = Instant::now();
    let mut timeline = Vec::new();
    let mut last = (0.0, tokens(&tei.stats()), tei.stats()[1].tokens);
    let mut went_down = false;
    let mut came_back_at_tokens = None;
    while start.elapsed() < BEFORE + DOWN + AFTER {
        tokio::time::sleep(STEP).await;
        let t = start.elapsed().as_secs_f64();
        if !went_down && start.elapsed() >= BEFORE {
            gpu.set_down(true).await.expect("GPU 1 goes down");
            went_down = true;
        }
        if went_down && came_back_at_tokens.is_none() && start.elapsed() >= BEFORE + DOWN {
            gpu.set_down(false).await.expect("GPU 1 comes back");
            came_back_at_tokens = Some(tei.stats()[1].tokens);
        }
        let stats = tei.stats();
        let (all, one) = (tokens(&stats), stats[1].tokens);
        let dt = t - last.0;
        timeline.push((
            t,
            (all - last.1) as f64 / dt,
            (one - last.2) as f64 / dt,
            adaptive.stats().endpoints[1].breaker,
        ));
        last = (t, all, one);
    }
    let (docs, lost) = backlog.finish().await;
    let used_after = tei.stats()[1].tokens > came_back_at_tokens.unwrap_or(u64::MAX);
    let stats = adaptive.stats();
    println!(
        "\nOutage: GPU 1 down from {:.0} s to {:.0} s (capacity {:.0} tok/s with 4 GPUs, {:.0} with 3)",
        BEFORE.as_secs_f64(),
        (BEFORE + DOWN).as_secs_f64(),
        cap,
        cap * 0.75
    );
    println!("| t (s) | all GPUs tok/s | GPU 1 tok/s | GPU 1 breaker |");
    println!("|---:|---:|---:|---|");
    for (t, all, one, breaker) in &timeline {
        println!("| {t:.1} | {all:.0} | {one:.0} | {breaker:?} |");
    }
    println!(
        "outage: {docs} docs embedded, {lost} lost; GPU 1 breaker opened {} / closed {} times; retries by cause {:?}",
        stats.endpoints[1].breaker_opened, stats.endpoints[1].breaker_closed, stats.retries_by_cause
    );
    verdict("outage: nothing lost, GPU 1 used again after", lost == 0 && used_after);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let (a, f, batch) = run_homogeneous().await;
        println!(
            "\n4 simulated GPUs: {TOKENS_PER_SECOND} tok/s + 5 ms per batch, max_batch_tokens 16384, {DOC_TOKENS}-token \
             docs, {DOCS_PER_REQUEST} per request; one full batch = {batch:.3} s; warm-up {} s, measured {} s",
            WARM_UP.as_secs(),
            MEASURE.as_secs()
        );
        let adaptive_ok = a.measured / a.capacity >= 0.97 && a.p95 <= 2.0 * batch && a.errors == 0;
        print_rows(&[a, f], batch);
        verdict("adaptive: >= 97% of capacity, p95 <= 2 x full batch, zero errors", adaptive_ok);
        let h = run_heterogeneous().await;
        let hetero_ok = h.measured / h.capacity >= 0.95;
        print_rows(&[h], batch);
        verdict("heterogeneous: >= 95% of summed capacity", hetero_ok);
        run_outage().await;
    });
}
