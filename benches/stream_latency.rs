//! Continuous-mode latency (`cargo bench --bench stream_latency`): `tweet-embed run` in its own
//! process with a 1 s checkpoint interval on an empty work queue, while a writer inserts new
//! tweets at a steady rate into in-process dev-mongo, 4 simulated GPUs (default service model,
//! not `--instant`). Latency is insert → durable row: from just before the insert is sent to
//! when the row's Parquet file is first seen in the staging or output directory (files arrive
//! there only after they are fsynced). With `BENCH_MAX_FILE_AGE` (e.g. `10s`), the run gets that
//! `--max-file-age` and latency is insert → visible row: first seen in the output directory,
//! where readers look. `BENCH_RATE` (inserts/s, default 1000) and `BENCH_SECS` (default 30) set
//! the load.

use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::{DevTei, SimConfig};
use hdrhistogram::Histogram;
use mongodb::bson::{doc, Document};
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

use test_support::bench::env_or;

fn main() {
    let rate: u64 = env_or("BENCH_RATE", 1_000);
    let secs: u64 = env_or("BENCH_SECS", 30);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let tei = rt.block_on(DevTei::start(SimConfig { gpus: 4, ..SimConfig::default() })).expect("dev-tei");
    let mongo = DevMongo::start(DevMongoConfig::default()).expect("dev-mongo");
    rt.block_on(test_support::create_indexes(&mongo)).expect("indexes");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let max_age: Option<String> = std::env::var("BENCH_MAX_FILE_AGE").ok();
    // Durable: staged or compacted; visible: compacted into --out.
    let watched = match &max_age {
        Some(_) => vec![out.clone()],
        None => vec![out.clone(), dir.path().join("state").join("staging")],
    };
    let mut child = Command::new(BIN)
        .arg("run")
        .args(["--mongo-uri", &mongo.uri(), "--tei-urls", &tei.urls().join(",")])
        .arg("--out")
        .arg(&out)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--checkpoint-interval", "1s", "--log", "warn"])
        .args(max_age.iter().flat_map(|a| ["--max-file-age", a.as_str()]))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn run");
    let coll = rt.block_on(async {
        mongodb::Client::with_uri_str(mongo.uri())
            .await
            .expect("client")
            .database("twitter_data")
            .collection::<Document>("tweets")
    });
    // Let the run open its stream and settle before the clock starts.
    std::thread::sleep(Duration::from_secs(3));

    let tick = Duration::from_millis(50);
    let per_tick = (rate * tick.as_millis() as u64 / 1000).max(1);
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut seen_files: HashSet<std::path::PathBuf> = HashSet::new();
    let mut lat = Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("histogram");
    let started = Instant::now();
    let mut next = started;
    let mut i = 0u64;
    let mut poll = |sent: &mut HashMap<String, Instant>, lat: &mut Histogram<u64>| {
        for e in watched.iter().filter_map(|d| std::fs::read_dir(d).ok()).flatten().flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("parquet") || !seen_files.insert(p.clone()) {
                continue;
            }
            let now = Instant::now();
            // A staged file may be compacted away between the listing and the read.
            let Ok(ids) = tweet_embed_operators::table::output::read_row_ids(&p) else { continue };
            for (id, _) in ids {
                if let Some(t) = sent.remove(&id) {
                    lat.record(now.duration_since(t).as_millis().max(1) as u64).expect("record");
                }
            }
        }
    };
    while started.elapsed() < Duration::from_secs(secs) {
        let docs: Vec<Document> = (0..per_tick)
            .map(|_| {
                i += 1;
                // ObjectIds, MongoDB's own: the id type an empty collection's dataset gets.
                let id = mongodb::bson::oid::ObjectId::new();
                doc! {"_id": id, "lang": "en", "text": format!("live tweet number {i}: the match is on 🔥")}
            })
            .collect();
        let t = Instant::now();
        for d in &docs {
            // The output's id of an ObjectId is its 24 hex digits.
            sent.insert(d.get_object_id("_id").expect("id").to_hex(), t);
        }
        rt.block_on(async { coll.insert_many(docs).await }).expect("insert");
        poll(&mut sent, &mut lat);
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let inserted = i;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !sent.is_empty() && Instant::now() < deadline {
        poll(&mut sent, &mut lat);
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let q = |p: f64| lat.value_at_quantile(p) as f64 / 1000.0;
    let what =
        max_age.as_ref().map_or("durable row".to_string(), |a| format!("visible row in --out, --max-file-age {a}"));
    println!("\ncontinuous mode, insert → {what}, 4 simulated GPUs, checkpoint interval 1 s");
    println!("| inserts/s | seconds | inserted | rows seen | p50 (s) | p95 (s) | p99 (s) | max (s) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {rate} | {secs} | {inserted} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        lat.len(),
        q(0.5),
        q(0.95),
        q(0.99),
        lat.max() as f64 / 1000.0
    );
    assert!(sent.is_empty(), "{} inserted documents never reached the output", sent.len());
    assert!(status.success(), "run did not stop cleanly on SIGTERM: {status:?}");
}
