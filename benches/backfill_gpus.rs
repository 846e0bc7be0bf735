//! The whole pipeline against GPUs that take time (`cargo bench --bench backfill_gpus`): the
//! `tweet-embed run` graph in-process (backfill only) over 4 simulated GPUs calibrated like the
//! old autotune table (19,500 tok/s + 5 ms per batch, TEI 1.9 defaults: 16,384-token batches,
//! 512 permits, 32 inputs a request).
//!
//! Corpora: tweet-length texts (token lengths log-normal with p50 27, p90 62, p99 ~125, plus
//! EmbeddingGemma's document prompt on each), and documents of 418 tokens. Servers: padded (TEI's
//! rule for EmbeddingGemma and every non-flash model: a batch grows while `(n + 1) × longest ≤
//! max_batch_tokens` and computes `n × longest`) or unpadded (flash models: the plain sum).
//!
//! The figure is real tokens over the GPUs' capacity across the run, from the first batch to
//! each GPU's last: `real / (rate × Σ span)`. It is the product of three parts, each printed:
//! real / computed tokens (padding), computed tokens per busy second over the rate (the 5 ms a
//! batch costs), and busy / span. Request p95 is the pool's, read from `/metrics`, against a full
//! batch's service time. Everything is the simulator's own accounting; every number is simulated.
//! `BENCH_TWEETS` and `BENCH_DOCS` set the corpus sizes, `BENCH_ONLY` a substring of the rows to
//! run, `BENCH_WORKERS` the workers (the machine's cores otherwise), `BENCH_INTERVAL_MS` the
//! checkpoint interval (1,000).

use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::{DevTei, GpuStats, SimConfig};
use mongodb::bson::doc;
use std::time::Duration;
use tweet_embed_operators::dataflow::epoch_clock::StopSignal;
use tweet_embed_operators::run::{Continuous, MongoTarget, RunConfig};
use tweet_embed_operators::tei::{Concurrency, RequestOrder};

const TOKENS_PER_SECOND: f64 = 19_500.0;
const BASE: Duration = Duration::from_millis(5);
const GPUS: usize = 4;

#[derive(Clone, Copy, PartialEq)]
enum Corpus {
    Tweets,
    Docs418,
}

struct Setting {
    name: &'static str,
    corpus: Corpus,
    padded: bool,
    order: RequestOrder,
    /// `--batch-size` and `--concurrency`: the old script's fixed client.
    fixed: Option<(usize, usize)>,
}

struct Row {
    name: &'static str,
    servers: &'static str,
    figure: f64,
    real_share: f64,
    work_per_busy: f64,
    busy: f64,
    p95: f64,
    full_batch: f64,
    errors: u64,
    client_real_share: f64,
    secs: f64,
}

fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return String::new() };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

fn values<'a>(body: &'a str, prefix: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    body.lines().filter(move |l| l.starts_with(prefix)).filter_map(|l| Some((l, l.rsplit(' ').next()?.parse().ok()?)))
}

fn run_once(setting: &Setting, tweets: u64, docs: u64) -> Row {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sim = SimConfig {
        gpus: GPUS,
        base: BASE,
        tokens_per_second: TOKENS_PER_SECOND,
        padded: setting.padded,
        ..SimConfig::default()
    };
    let full_batch = BASE.as_secs_f64() + sim.max_batch_tokens as f64 / TOKENS_PER_SECOND;
    let tei = rt.block_on(DevTei::start(sim)).expect("dev-tei");
    let mongo = DevMongo::start(DevMongoConfig::default()).expect("dev-mongo");
    let count = if setting.corpus == Corpus::Tweets { tweets } else { docs };
    mongo.with_store(|s| {
        for i in 0..count {
            let text = match setting.corpus {
                Corpus::Tweets => test_support::lengths::tweet_length_text(i),
                Corpus::Docs418 => test_support::lengths::text_of_tokens(418, i),
            };
            let d = doc! {"_id": i as i64, "lang": "en", "classified": true, "text": text};
            s.insert("twitter_data", "tweets", d).expect("seed");
        }
    });
    rt.block_on(test_support::create_indexes(&mongo)).expect("indexes");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = RunConfig::new(MongoTarget::tweets_at(mongo.uri()), tei.urls(), dir.path());
    p.tei.batch_size = setting.fixed.map(|f| f.0);
    p.tei.concurrency = setting.fixed.map_or(Concurrency::Adaptive, |f| Concurrency::Fixed(f.1));
    p.tei.order = setting.order;
    if setting.corpus == Corpus::Tweets {
        p.tei.options.prompt_name = Some("document".into());
    }
    p.checkpoint_interval = Duration::from_millis(test_support::bench::env_or("BENCH_INTERVAL_MS", 1_000));
    if let Some(workers) = std::env::var("BENCH_WORKERS").ok().and_then(|v| v.parse().ok()) {
        p.workers = workers;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let polling = Continuous { scan_at_start: true, stream: false };
    let stop = StopSignal::default();
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || tweet_embed::session::execute(p, Some(addr), |e| e.continuous(polling, stop)))
    };
    let coll = rt.block_on(async { mongodb::Client::with_uri_str(mongo.uri()).await }).expect("client");
    let coll = coll.database("twitter_data").collection::<mongodb::bson::Document>("tweets");
    let done = || rt.block_on(async { coll.count_documents(doc! {"gemma_embedded_768": true}).await }).unwrap_or(0);
    let mut last = String::new();
    while done() < count {
        std::thread::sleep(Duration::from_millis(300));
        let body = scrape(addr);
        if !body.is_empty() {
            last = body;
        }
    }
    stop.stop();
    handle.join().expect("thread").expect("run");
    let stats: Vec<GpuStats> = tei.stats();
    let first = stats.iter().filter_map(|s| s.first_batch_start).min().expect("a batch ran");
    let spans: f64 = stats
        .iter()
        .map(|s| s.last_batch_end.map_or(0.0, |end| end.saturating_duration_since(first).as_secs_f64()))
        .sum();
    let real: u64 = stats.iter().map(|s| s.tokens).sum();
    let computed: u64 = stats.iter().map(|s| s.computed_tokens).sum();
    let busy: f64 = stats.iter().map(|s| s.busy.as_secs_f64()).sum();
    let p95 = values(&last, "tweet_embed_tei_request_latency_seconds{")
        .filter(|(l, _)| l.contains("quantile=\"0.95\""))
        .map(|(_, v)| v)
        .fold(0.0, f64::max);
    let errors = values(&last, "tweet_embed_tei_errors_total{")
        .chain(values(&last, "tweet_embed_documents_total{outcome=\"rejected\""))
        .map(|(_, v)| v)
        .sum::<f64>() as u64;
    let sent = |kind: &str| {
        values(&last, "tweet_embed_tei_sent_tokens_total{").find(|(l, _)| l.contains(kind)).map_or(0.0, |(_, v)| v)
    };
    Row {
        name: setting.name,
        servers: if setting.padded { "padded" } else { "unpadded" },
        figure: real as f64 / (TOKENS_PER_SECOND * spans),
        real_share: real as f64 / computed as f64,
        work_per_busy: computed as f64 / (busy * TOKENS_PER_SECOND),
        busy: busy / spans,
        p95,
        full_batch,
        errors,
        client_real_share: sent("real") / sent("padded"),
        secs: spans / GPUS as f64,
    }
}

fn main() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (tweets, docs) = (env("BENCH_TWEETS", 20_000), env("BENCH_DOCS", 4_000));
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let old = Some((32, 32));
    let settings = [
        Setting {
            name: "tweets, ours",
            corpus: Corpus::Tweets,
            padded: true,
            order: RequestOrder::Length,
            fixed: None,
        },
        Setting {
            name: "tweets, ours, --request-order arrival",
            corpus: Corpus::Tweets,
            padded: true,
            order: RequestOrder::Arrival,
            fixed: None,
        },
        Setting {
            name: "tweets, old script: batch 32 × 32 per endpoint",
            corpus: Corpus::Tweets,
            padded: true,
            order: RequestOrder::Arrival,
            fixed: old,
        },
        Setting {
            name: "tweets, ours",
            corpus: Corpus::Tweets,
            padded: false,
            order: RequestOrder::Length,
            fixed: None,
        },
        Setting {
            name: "tweets, old script: batch 32 × 32 per endpoint",
            corpus: Corpus::Tweets,
            padded: false,
            order: RequestOrder::Arrival,
            fixed: old,
        },
        Setting {
            name: "418-token documents, ours",
            corpus: Corpus::Docs418,
            padded: false,
            order: RequestOrder::Length,
            fixed: None,
        },
    ];
    let rows: Vec<Row> = settings
        .iter()
        .filter(|s| {
            only.is_empty() || format!("{} {}", s.name, if s.padded { "padded" } else { "unpadded" }).contains(&only)
        })
        .map(|s| {
            let row = run_once(s, tweets, docs);
            eprintln!("{} ({}): figure {:.3}", row.name, row.servers, row.figure);
            row
        })
        .collect();
    println!(
        "\nbackfill end to end, {GPUS} simulated GPUs at {TOKENS_PER_SECOND} tok/s + 5 ms/batch, {tweets} tweets / {docs} documents"
    );
    println!("| setting | servers | figure | real/computed | work/busy | busy | run | request p95 | p95 / full batch | client real/padded | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | **{:.3}** | {:.3} | {:.3} | {:.3} | {:.1} s | {:.2} s | {:.2} | {:.3} | {} |",
            r.name,
            r.servers,
            r.figure,
            r.real_share,
            r.work_per_busy,
            r.busy,
            r.secs,
            r.p95,
            r.p95 / r.full_batch,
            r.client_real_share,
            r.errors
        );
    }
}
