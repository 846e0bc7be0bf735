//! `tweet-embed demo`: the whole backfill on the embedded default. It starts dev-mongo seeded
//! with synthetic tweets (several languages and scripts, emoji, duplicates, bad documents,
//! retweets and already-embedded ones that must be skipped) and simulated TEI GPUs, creates the
//! indexes, runs the real backfill with its progress display, and prints the summary and how to
//! read the output. Nothing here is a real GPU or a real MongoDB; the README says so.

use anyhow::{Context, Result};
use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::{DevTei, SimConfig};
use std::path::PathBuf;
use std::time::Duration;
use tweet_embed_operators::run::{Engine, RunConfig};

/// Flags of `tweet-embed demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Synthetic tweets to seed.
    #[arg(long, default_value_t = 100_000)]
    pub tweets: u64,
    /// Simulated GPUs.
    #[arg(long, default_value_t = 4)]
    pub gpus: usize,
    /// Tokens per second of each simulated GPU.
    #[arg(long, default_value_t = 100_000)]
    pub gpu_tokens_per_second: u64,
    /// Where the output and checkpoint go (replaced on each run).
    #[arg(long, default_value = "demo-output")]
    pub dir: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    let mongo = DevMongo::start(DevMongoConfig::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(test_support::seed_work_queue(&mongo, args.tweets, 1))?;
    let sim = SimConfig {
        gpus: args.gpus,
        tokens_per_second: args.gpu_tokens_per_second as f64,
        base: Duration::from_millis(2),
        ..SimConfig::default()
    };
    let tei = runtime.block_on(DevTei::start(sim))?;
    let target = crate::config::MongoArgs::tweets_at(mongo.uri());
    println!(
        "tweet-embed demo: {} synthetic tweets in dev-mongo ({}), {} simulated TEI GPUs",
        args.tweets,
        mongo.uri(),
        args.gpus
    );
    println!("(simulated: dev-mongo is a dev server, the GPUs are a model of TEI's queue, vectors carry no meaning)");
    let mut config = RunConfig::new(target.target(), tei.urls(), &args.dir);
    config.workers = args.workers;
    config.checkpoint_interval = Duration::from_secs(1);
    let out = config.out.clone();
    let summary = crate::backfill::execute(config, None, Engine::backfill)?;
    crate::backfill::print_summary("backfill", &summary, &out);
    let out = out.display();
    println!("\nRead the output with DuckDB:");
    println!("  duckdb -c \"SELECT id, lang, source, len(embedding) FROM '{out}/*.parquet' LIMIT 5\"");
    println!("or pyarrow:");
    println!("  python3 -c \"import pyarrow.dataset as ds; t = ds.dataset('{out}', format='parquet').to_table(); print(t.num_rows, t.schema)\"");
    println!("rejected documents and their reasons are in {out}/_rejects/.");
    runtime.block_on(tei.shutdown());
    mongo.shutdown()
}
