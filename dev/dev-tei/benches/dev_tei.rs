//! Benchmark of the TEI simulator (`cargo bench -p dev-tei --bench dev_tei`).
//!
//! Modelled rows: simulated GPUs (base 5 ms, 20,000 tokens/s, max_batch_tokens 16384) saturated by
//! closed-loop clients sending 32 documents of 418 estimated tokens each, measured for 10 s after
//! a warm-up. "configured" is the capacity at the batch fill actually reached (tokens over the
//! modelled busy time); "measured" is the tokens completed between two batch ends over the wall
//! time between them (per GPU, summed), so a GPU that idles or lets timer slack accumulate shows
//! a ratio under 1. Client-side rates count a request's documents when it completes, over the
//! same 10 s: they lag by up to one request per GPU at each end of the window.
//!
//! Instant rows: no service time, so requests/s and docs/s show the simulator's own CPU cost
//! (tokenize, vectors at dim 768, JSON) plus the in-process clients', on this machine's cores.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_tei::{embedding_for, DevTei, GpuStats, SimConfig};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tweet_embed_operators::tei::estimate_tokens;

const DOC_TOKENS: usize = 418;
const DOCS_PER_REQUEST: usize = 32;
/// Completions further apart than this belong to different batch ends (a batch here is ~820 ms).
const BURST_GAP: Duration = Duration::from_millis(50);

/// A text of exactly `tokens` estimated tokens: `tokens - 2` four-hex-digit words.
fn doc(tokens: usize, seed: usize) -> String {
    let words: Vec<String> =
        (0..tokens - 2).map(|i| format!("{:04x}", (seed.wrapping_mul(7919) + i * 31) % 0xffff)).collect();
    words.join(" ")
}

/// A tweet-sized text (~140 chars).
fn tweet(seed: usize) -> String {
    format!(
        "Just watched the game #{seed} — what a finish!! Can't believe it 😂🔥 @friend{} we need \
         to talk about that last play. Thoughts? https://t.co/x{seed:x}",
        seed % 97
    )
}

/// A completed request: when, how many docs and tokens, and its latency.
#[derive(Clone, Copy)]
struct Completion {
    at: Instant,
    docs: u64,
    tokens: u64,
    latency: Duration,
}

struct Load {
    stop: AtomicBool,
    completions: Mutex<Vec<Completion>>,
    errors: AtomicU64,
}

impl Load {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            stop: AtomicBool::new(false),
            completions: Mutex::new(Vec::with_capacity(1 << 20)),
            errors: AtomicU64::new(0),
        })
    }
}

/// One closed-loop client: sends `docs` to `url` again and again until stopped.
async fn client(http: reqwest::Client, url: String, docs: Arc<Vec<String>>, load: Arc<Load>) {
    let body = serde_json::to_vec(&serde_json::json!({ "inputs": *docs })).unwrap();
    let tokens: u64 = docs.iter().map(|d| estimate_tokens(d) as u64).sum();
    while !load.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let resp = http
            .post(format!("{url}/embed"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let ok = match resp {
            Ok(resp) if resp.status() == 200 => resp.bytes().await.is_ok(),
            _ => false,
        };
        if ok {
            let at = Instant::now();
            load.completions.lock().push(Completion { at, docs: docs.len() as u64, tokens, latency: at - started });
        } else {
            load.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Row {
    name: String,
    configured: Option<f64>,
    measured: Option<f64>,
    client_tok_s: f64,
    docs_s: f64,
    req_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    fill: Option<f64>,
    errors: u64,
}

/// Runs `clients_per_gpu` clients per GPU against a fresh simulator and measures one window.
async fn run(
    name: &str,
    config: SimConfig,
    clients_per_gpu: usize,
    docs: impl Fn(usize) -> Vec<String>,
    warmup: Duration,
    window: Duration,
) -> Row {
    let tei = DevTei::start(config).await.expect("simulator starts");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients_per_gpu * 2)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let load = Load::new();
    let mut tasks = Vec::new();
    for (g, url) in tei.urls().into_iter().enumerate() {
        for c in 0..clients_per_gpu {
            let docs = Arc::new(docs(g * 1000 + c));
            tasks.push(tokio::spawn(client(http.clone(), url.clone(), docs, load.clone())));
        }
    }
    tokio::time::sleep(warmup).await;
    let before: Vec<GpuStats> = tei.stats();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let after: Vec<GpuStats> = tei.stats();
    let t1 = Instant::now();
    load.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.abort();
    }
    tei.shutdown().await;
    let errors = load.errors.load(Ordering::SeqCst);

    let mut done: Vec<Completion> =
        load.completions.lock().iter().filter(|c| c.at >= t0 && c.at <= t1).copied().collect();
    done.sort_by_key(|c| c.at);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    for c in &done {
        let _ = latency.record((c.latency.as_micros() as u64).max(1));
    }
    let modelled = before.iter().zip(&after).all(|(b, a)| a.busy > b.busy);
    // Modelled GPUs complete requests in bursts at batch ends: count from the end of the first
    // burst in the window (excluded: its work predates the window) to the last burst (included).
    // Instant mode has no bursts: count everything over the window.
    let (counted, span) = if modelled {
        let first_burst_end = done.windows(2).position(|w| w[1].at - w[0].at > BURST_GAP).map_or(done.len(), |i| i + 1);
        let span = match (done.get(first_burst_end.saturating_sub(1)), done.last()) {
            (Some(a), Some(b)) if b.at > a.at => (b.at - a.at).as_secs_f64(),
            _ => f64::NAN,
        };
        (&done[first_burst_end..], span)
    } else {
        (&done[..], (t1 - t0).as_secs_f64())
    };
    let docs_done: u64 = counted.iter().map(|c| c.docs).sum();
    let tokens: u64 = counted.iter().map(|c| c.tokens).sum();
    let requests = counted.len();
    let (p50, p95) = (latency.value_at_quantile(0.5), latency.value_at_quantile(0.95));

    let (mut configured, mut measured, mut batches, mut batch_docs) = (0.0, 0.0, 0u64, 0u64);
    for (b, a) in before.iter().zip(&after) {
        let tokens = (a.tokens - b.tokens) as f64;
        let busy = (a.busy - b.busy).as_secs_f64();
        if let (Some(e0), Some(e1)) = (b.last_batch_end, a.last_batch_end) {
            let span = e1.duration_since(e0).as_secs_f64();
            if span > 0.0 && busy > 0.0 {
                configured += tokens / busy;
                measured += tokens / span;
            }
        }
        batches += a.batches - b.batches;
        batch_docs += a.inputs - b.inputs;
    }
    Row {
        name: name.to_string(),
        configured: modelled.then_some(configured),
        measured: modelled.then_some(measured),
        client_tok_s: tokens as f64 / span,
        docs_s: docs_done as f64 / span,
        req_s: requests as f64 / span,
        p50_ms: p50 as f64 / 1000.0,
        p95_ms: p95 as f64 / 1000.0,
        fill: (modelled && batches > 0).then(|| batch_docs as f64 / batches as f64),
        errors,
    }
}

fn print(rows: &[Row]) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    println!(
        "| {:<48} | {:>10} | {:>10} | {:>6} | {:>10} | {:>7} | {:>8} | {:>7} | {:>8} | {:>8} | {:>10} | {:>6} |",
        "scenario",
        "config t/s",
        "meas t/s",
        "ratio",
        "client t/s",
        "c.ratio",
        "docs/s",
        "req/s",
        "p50 ms",
        "p95 ms",
        "docs/batch",
        "errors"
    );
    println!("|{}|", ["---"; 12].join("|"));
    for r in rows {
        let ratio = match (r.configured, r.measured) {
            (Some(c), Some(m)) if c > 0.0 => format!("{:.3}", m / c),
            _ => "-".into(),
        };
        let client_ratio = match r.configured {
            Some(c) if c > 0.0 => format!("{:.3}", r.client_tok_s / c),
            _ => "-".into(),
        };
        println!(
            "| {:<48} | {:>10} | {:>10} | {:>6} | {:>10.0} | {:>7} | {:>8.1} | {:>7.1} | {:>8.1} | {:>8.1} | {:>10} | {:>6} |",
            r.name,
            opt(r.configured),
            opt(r.measured),
            ratio,
            r.client_tok_s,
            client_ratio,
            r.docs_s,
            r.req_s,
            r.p50_ms,
            r.p95_ms,
            r.fill.map_or("-".into(), |f| format!("{f:.1}")),
            r.errors
        );
    }
}

/// Single-threaded cost of what the simulator does per returned vector: derive it and write it as
/// JSON (the same recipe and serializer the routes use).
fn vector_cost() {
    let texts: Vec<String> = (0..1000).map(tweet).collect();
    let mut out = Vec::with_capacity(768 * 16);
    let rounds = 50;
    let started = Instant::now();
    for _ in 0..rounds {
        for text in &texts {
            out.clear();
            let v = embedding_for(text, 768);
            serde_json::to_writer(&mut out, &v).unwrap();
        }
    }
    let per = started.elapsed() / (rounds * texts.len() as u32);
    println!(
        "vector + JSON at dim 768, one core: {:.1} us per vector ({} bytes of JSON)",
        per.as_secs_f64() * 1e6,
        out.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        assert_eq!(estimate_tokens(&doc(DOC_TOKENS, 1)), DOC_TOKENS);
        let gpu = |gpus| SimConfig {
            gpus,
            base: Duration::from_millis(5),
            tokens_per_second: 20_000.0,
            max_batch_tokens: 16_384,
            ..SimConfig::default()
        };
        let docs418 =
            |seed: usize| -> Vec<String> { (0..DOCS_PER_REQUEST).map(|d| doc(DOC_TOKENS, seed * 64 + d)).collect() };
        let tweets = |seed: usize| -> Vec<String> { (0..DOCS_PER_REQUEST).map(|d| tweet(seed * 64 + d)).collect() };
        // `cargo bench --bench dev_tei -- instant` runs only the rows whose name contains "instant".
        let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
        let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
        let (warmup, window) = (Duration::from_secs(3), Duration::from_secs(10));
        let mut rows = Vec::new();
        let name = "1 GPU, 5 ms + 20k tok/s, 8 clients x 32 docs";
        if wanted(name) {
            rows.push(run(name, gpu(1), 8, docs418, warmup, window).await);
        }
        let name = "4 GPUs, 5 ms + 20k tok/s, 32 clients x 32 docs";
        if wanted(name) {
            rows.push(run(name, gpu(4), 8, docs418, warmup, window).await);
        }
        let instant = SimConfig { instant: true, ..SimConfig::default() };
        let (warmup, window) = (Duration::from_secs(1), Duration::from_secs(5));
        let name = "instant, dim 768, 8 clients x 32 tweets";
        if wanted(name) {
            rows.push(run(name, instant.clone(), 8, tweets, warmup, window).await);
        }
        let name = "instant, dim 768, 8 clients x 32 docs of 418 tok";
        if wanted(name) {
            rows.push(run(name, instant, 8, docs418, warmup, window).await);
        }
        print(&rows);
        if wanted("instant") {
            vector_cost();
        }
    });
}
