//! The whole pipeline against GPUs that take time (`cargo bench --bench backfill_gpus`): the
//! `tweet-embed run` graph in-process on a collection of documents of 418 tokens, 4 simulated
//! GPUs calibrated like the old autotune table (19,600 tok/s + 5 ms per batch, TEI 1.9 defaults).
//! Rows: our defaults (no batch or concurrency flag: the adaptive limit) and the old script's
//! fixed setting (batch 32, 128 requests over 4 endpoints = 32 each). Throughput and GPU busy
//! time are the simulator's own accounting over the steady part of the run (after the first
//! `WARM` seconds until 95% of the documents are done); request latency quantiles come from the
//! pool through `/metrics`. `BENCH_DOCS` sets the collection size. Every number is simulated.

use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::{DevTei, GpuStats, SimConfig};
use mongodb::bson::doc;
use std::time::{Duration, Instant};
use tweet_embed_operators::epoch_clock::StopSignal;
use tweet_embed_operators::run::{Continuous, MongoTarget, RunConfig};
use tweet_embed_operators::tei::Concurrency;

const DOC_TOKENS: usize = 418;
const TOKENS_PER_SECOND: f64 = 19_600.0;
const WARM: Duration = Duration::from_secs(10);

/// A text of exactly `tokens` estimated tokens (the simulator's estimate), distinct per `seed`.
fn doc_text(tokens: usize, seed: u64) -> String {
    let words: Vec<String> = (0..tokens - 2)
        .map(|i| format!("{:04x}", (seed as usize).wrapping_mul(7919).wrapping_add(i * 31) % 0xffff))
        .collect();
    words.join(" ")
}

fn sum(stats: &[GpuStats]) -> (u64, f64) {
    (stats.iter().map(|s| s.tokens).sum(), stats.iter().map(|s| s.busy.as_secs_f64()).sum())
}

fn scrape_p95(addr: std::net::SocketAddr) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return f64::NAN };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("tweet_embed_tei_request_latency_seconds{") && l.contains("quantile=\"0.95\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

struct Row {
    name: &'static str,
    tok_s: f64,
    capacity: f64,
    busy: f64,
    docs_s: f64,
    p95: f64,
    full_batch: f64,
    errors: u64,
}

fn run_once(name: &'static str, docs: u64, batch: Option<usize>, concurrency: Option<usize>) -> Row {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sim = SimConfig {
        gpus: 4,
        base: Duration::from_millis(5),
        tokens_per_second: TOKENS_PER_SECOND,
        ..SimConfig::default()
    };
    let full_tokens = (sim.max_batch_tokens / DOC_TOKENS * DOC_TOKENS) as f64;
    let full_batch = 0.005 + full_tokens / TOKENS_PER_SECOND;
    let capacity = 4.0 * full_tokens / full_batch;
    let tei = rt.block_on(DevTei::start(sim)).expect("dev-tei");
    let mongo = DevMongo::start(DevMongoConfig::default()).expect("dev-mongo");
    mongo.with_store(|s| {
        for i in 0..docs {
            let d = doc! {"_id": i as i64, "lang": "en", "classified": true, "text": doc_text(DOC_TOKENS, i)};
            s.insert("twitter_data", "tweets", d).expect("seed");
        }
    });
    rt.block_on(test_support::create_indexes(&mongo)).expect("indexes");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = RunConfig::new(MongoTarget::tweets_at(mongo.uri()), tei.urls(), dir.path());
    p.tei.batch_size = batch;
    p.tei.concurrency = concurrency.map_or(Concurrency::Adaptive, Concurrency::Fixed);
    p.checkpoint_interval = Duration::from_secs(1);
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let polling = Continuous { scan_at_start: true, stream: false };
    let stop = StopSignal::default();
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || tweet_embed::backfill::execute(p, Some(addr), |e| e.continuous(polling, stop)))
    };
    let coll = rt.block_on(async { mongodb::Client::with_uri_str(mongo.uri()).await }).expect("client");
    let coll = coll.database("twitter_data").collection::<mongodb::bson::Document>("tweets");
    let done = || rt.block_on(async { coll.count_documents(doc! {"gemma_embedded_768": true}).await }).unwrap_or(0);
    std::thread::sleep(WARM);
    let (t1, s1) = (Instant::now(), sum(&tei.stats()));
    let mut p95 = 0.0;
    while done() < docs * 95 / 100 {
        std::thread::sleep(Duration::from_millis(500));
        p95 = scrape_p95(addr);
    }
    let (t2, s2) = (Instant::now(), sum(&tei.stats()));
    let errors = {
        let body = {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).expect("metrics");
            let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            b
        };
        body.lines()
            .filter(|l| {
                l.starts_with("tweet_embed_tei_errors_total{")
                    || l.starts_with("tweet_embed_documents_total{outcome=\"rejected\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    while done() < docs {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.stop();
    handle.join().expect("thread").expect("run");
    let secs = (t2 - t1).as_secs_f64();
    Row {
        name,
        tok_s: (s2.0 - s1.0) as f64 / secs,
        capacity,
        busy: (s2.1 - s1.1) / (4.0 * secs),
        // From the GPUs' tokens: marks trail the GPUs by an epoch, so counting marks in a window
        // skews its edges.
        docs_s: (s2.0 - s1.0) as f64 / secs / DOC_TOKENS as f64,
        p95,
        full_batch,
        errors,
    }
}

fn main() {
    let docs: u64 = std::env::var("BENCH_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(12_000);
    let rows = [
        run_once("ours: no batch or concurrency flag (adaptive)", docs, None, None),
        run_once("old script: batch 32, concurrency 128 (32 per endpoint)", docs, Some(32), Some(32)),
    ];
    println!(
        "\nbackfill end to end, 4 simulated GPUs at 19,600 tok/s + 5 ms/batch, {docs} documents of {DOC_TOKENS} tokens"
    );
    println!("| setting | tok/s | capacity | ratio | GPU busy | docs/s | request p95 | p95 / full batch | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.1}% | {:.1} | {:.2} s | {:.2} | {} |",
            r.name,
            r.tok_s,
            r.capacity,
            r.tok_s / r.capacity,
            r.busy * 100.0,
            r.docs_s,
            r.p95,
            r.p95 / r.full_batch,
            r.errors
        );
    }
}
