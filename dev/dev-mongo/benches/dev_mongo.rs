//! Throughput of dev-mongo through the official Rust driver over loopback
//! (`cargo bench -p dev-mongo --bench dev_mongo`): inserts (bulk `insert_many` and concurrent
//! `insert_one`), streaming a collection with find/getMore, the pipeline's work-queue scan on its
//! partial index, and hinted counts. Each figure is the median of 3 runs; the dev server must never
//! be what the pipeline's own benchmarks measure, so the targets are ≥ 20k inserts/s and ≥ 100k
//! docs/s found.

use dev_mongo::{DevMongo, DevMongoConfig};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::Hint;
use mongodb::{Client, Collection};
use std::time::Instant;

const DOCS: i64 = 200_000;
const RUNS: usize = 3;

fn tweet(i: i64) -> Document {
    doc! {
        "_id": i,
        "lang": if i % 3 == 0 { "es" } else { "en" },
        "classified": true,
        "text": format!("Just watched game #{i}, what a finish!! can't believe it @friend{} #sports", i % 97),
        "created_at": mongodb::bson::DateTime::from_millis(1_600_000_000_000 + i),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn fresh(client: &Client, name: &str) -> Collection<Document> {
    let c = client.database("bench").collection::<Document>(name);
    c.drop().await.expect("drop");
    c
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = DevMongo::start(DevMongoConfig::default()).expect("start dev-mongo");
    let client = Client::with_uri_str(server.uri()).await.expect("client");
    let mut rows: Vec<(&str, f64, &str)> = Vec::new();

    // Bulk inserts, 1,000 documents per insert_many, as a seeder or a loader does.
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let c = fresh(&client, "bulk").await;
        let start = Instant::now();
        for chunk in 0..(DOCS / 1000) {
            c.insert_many((chunk * 1000..(chunk + 1) * 1000).map(tweet)).await.expect("insert_many");
        }
        rates.push(DOCS as f64 / start.elapsed().as_secs_f64());
    }
    rows.push(("insert_many (1,000 per call)", median(rates), "docs/s"));

    // Single-document inserts from 16 concurrent tasks (live tweets arriving).
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let c = fresh(&client, "single").await;
        let n = 40_000i64;
        let start = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let c = c.clone();
                tokio::spawn(async move {
                    for i in (t..n).step_by(16) {
                        c.insert_one(tweet(i)).await.expect("insert_one");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    rows.push(("insert_one (16 concurrent clients)", median(rates), "docs/s"));

    // The full collection streamed through find/getMore (driver default batch sizes).
    let c = client.database("bench").collection::<Document>("bulk");
    c.create_index(tweet_embed_operators::mongo::work_queue::work_queue_index("gemma_embedded_768"))
        .await
        .expect("index");
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut cur = c.find(doc! {}).await.expect("find");
        let mut n = 0u64;
        while cur.advance().await.expect("getMore") {
            n += 1;
        }
        assert_eq!(n as i64, DOCS);
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    rows.push(("find all, _id order", median(rates), "docs/s"));

    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let docs: Vec<Document> = c
            .find(doc! {"lang": "en", "classified": true, "retweeted": null, "gemma_embedded_768": null, "_id": {"$gt": 0}})
            .sort(doc! {"_id": 1})
            .hint(Hint::Name("embedding_work_queue".into()))
            .batch_size(10_000)
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("getMore");
        rates.push(docs.len() as f64 / start.elapsed().as_secs_f64());
    }
    rows.push(("work-queue scan (hinted partial index)", median(rates), "docs/s"));

    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let n = c
            .count_documents(doc! {"retweeted": null, "gemma_embedded_768": null})
            .hint(Hint::Name("embedding_work_queue".into()))
            .await
            .expect("count");
        assert_eq!(n as i64, DOCS);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    rows.push(("hinted count of 200k work-queue entries", median(times), "ms"));

    println!("\ndev-mongo through the mongodb crate over loopback ({DOCS} small documents, median of {RUNS})");
    println!("| operation | median | unit |");
    println!("|---|---:|---|");
    for (name, value, unit) in rows {
        println!("| {name} | {value:.0} | {unit} |");
    }
}
