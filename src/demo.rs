//! `tweet-embed demo`: the whole job on the embedded default. It starts dev-mongo seeded with
//! synthetic tweets (several languages and scripts, emoji, duplicates, bad documents, retweets
//! and already-embedded ones that must be skipped) and simulated TEI GPUs, creates the indexes,
//! and runs `run`: the backfill with its progress display, then about 20 s of following the
//! change stream while a writer inserts new tweets and deletes some, with compaction and
//! deletions under way. It prints the summary, how to watch with `status`, and how to read the
//! output. Nothing here is a real GPU or a real MongoDB; the README says so.

use anyhow::{Context, Result};
use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::{DevTei, SimConfig};
use indicatif::{ProgressBar, ProgressStyle};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tweet_embed_operators::dataflow::epoch_clock::StopSignal;
use tweet_embed_operators::run::{Continuous, Monitor, RunConfig};

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
    /// Where the output and checkpoint go: its `out/` and `state/` are replaced on each run; a
    /// directory holding anything else is refused.
    #[arg(long, default_value = "demo-output")]
    pub dir: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// How long to follow the change stream after the backfill, while new tweets arrive and
    /// some are deleted (0: stop after the backfill).
    #[arg(long, default_value = "20s", value_parser = crate::config::parse_duration)]
    pub live: Duration,
    /// How the vectors are made, as for `run` (the simulated GPUs serve EmbeddingGemma-like
    /// prompts such as `document` and `query`, and any dimension up to 768).
    #[command(flatten)]
    pub embed: crate::config::EmbedOptionArgs,
}

/// Tweets seeded per step of the seeding progress bar.
const SEED_CHUNK: u64 = 5_000;

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    clear_previous_demo(&args.dir)?;
    let mongo = DevMongo::start(DevMongoConfig::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    crate::say!(
        "tweet-embed demo: {} synthetic tweets in dev-mongo ({}), {} simulated TEI GPUs",
        args.tweets,
        mongo.uri(),
        args.gpus
    );
    crate::say!(
        "(simulated: dev-mongo is a dev server, the GPUs are a model of TEI's queue, vectors carry no meaning)"
    );
    seed(&mongo, &runtime, args.tweets)?;
    let sim = SimConfig {
        gpus: args.gpus,
        tokens_per_second: args.gpu_tokens_per_second as f64,
        base: Duration::from_millis(2),
        // EmbeddingGemma, which the simulator imitates, runs padded on every device in TEI.
        padded: true,
        ..SimConfig::default()
    };
    let tei = runtime.block_on(DevTei::start(sim))?;
    let target = crate::config::MongoArgs::tweets_at(mongo.uri());
    let mut config = RunConfig::new(target.target(), tei.urls(), &args.dir);
    config.workers = args.workers;
    config.checkpoint_interval = Duration::from_secs(1);
    config.tei.options = args.embed.options();
    // Short enough to see within the demo: staged rows reach --out within 5 s, deleted ones
    // leave it within 10 s.
    config.max_file_age = Duration::from_secs(5);
    config.delete_within = Duration::from_secs(10);
    let (out, state) = (config.out.clone(), config.state_dir.clone());
    crate::say!("\nWatch it from another terminal while it runs:");
    crate::say!("  tweet-embed status --mongo-uri '{}' --state-dir {} --watch 2s", mongo.uri(), state.display());
    let stop = StopSignal::default();
    let live = args.live;
    let mut lag_s = None;
    let summary = crate::session::execute(config, None, |engine| {
        let monitor = engine.monitor();
        let writer = {
            let (monitor, stop, uri) = (monitor.clone(), stop.clone(), mongo.uri());
            std::thread::spawn(move || live_writer(&monitor, &uri, live, &stop))
        };
        let summary = engine.continuous(Continuous::default(), stop.clone());
        stop.stop();
        let written = writer.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the demo's writer panicked")));
        let stream_s = monitor.totals.stream_time_s.load(Ordering::Relaxed);
        lag_s = (stream_s > 0)
            .then(|| (tweet_embed_operators::clock::wall_ms() / 1000) as u64 - stream_s.min(i64::MAX as u64));
        let summary = summary?;
        if let Err(e) = written {
            tweet_embed_operators::run::failure::to_stderr(&format!(
                "tweet-embed demo: the live phase stopped early: {e:#}"
            ));
        }
        Ok(summary)
    })?;
    crate::session::print_summary("demo", &summary, &out);
    if let Some(lag) = lag_s {
        crate::say!("  stream lag         : {lag} s behind MongoDB when it stopped");
    }
    let out = out.display();
    crate::say!("\nRead the output with DuckDB (a tweet deleted since its row was compacted is still listed in");
    crate::say!("_deletions/ until its file is rewritten, so anti-join it):");
    crate::say!(
        "  duckdb -c \"SELECT count(*) FROM '{out}/*.parquet' r WHERE NOT EXISTS (SELECT 1 FROM '{out}/_deletions/*.parquet' d WHERE d.id = r.id AND r.epoch <= d.epoch)\""
    );
    crate::say!("or pyarrow:");
    crate::say!("  python3 -c \"import pyarrow.dataset as ds; t = ds.dataset('{out}', format='parquet').to_table(); print(t.num_rows, t.schema)\"");
    crate::say!("rejected documents and their reasons are in {out}/_rejects/.");
    runtime.block_on(tei.shutdown());
    mongo.shutdown()
}

/// Removes what an earlier demo left in `dir` (its `out/` and `state/`), and refuses a directory
/// that holds anything else: `--dir` names where the demo writes, never a folder to wipe.
fn clear_previous_demo(dir: &std::path::Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read --dir {}", dir.display())),
    };
    let mut ours = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read --dir {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !(["out", "state"].contains(&name.as_str()) && entry.path().is_dir()) {
            anyhow::bail!(
                "--dir {} holds {name}, which the demo did not write: pick an empty or new directory (the demo \
                 replaces only its own out/ and state/)",
                dir.display()
            );
        }
        ours.push(entry.path());
    }
    for path in ours {
        std::fs::remove_dir_all(&path).with_context(|| format!("clearing {}", path.display()))?;
    }
    Ok(())
}

/// Seeds `n` tweets with a progress bar (the first minutes of a big demo are otherwise blank).
fn seed(mongo: &DevMongo, runtime: &tokio::runtime::Runtime, n: u64) -> Result<()> {
    let bar = ProgressBar::new(n);
    bar.set_style(
        ProgressStyle::with_template("seeding {bar:30} {pos}/{len} tweets {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut from = 0;
    while from < n {
        let to = (from + SEED_CHUNK).min(n);
        test_support::insert_range(mongo, from..to, 1)?;
        bar.set_position(to);
        from = to;
    }
    bar.set_message("· creating the indexes");
    runtime.block_on(test_support::create_indexes(mongo))?;
    bar.finish_and_clear();
    crate::say!("seeded {n} tweets and created the work-queue indexes");
    Ok(())
}

/// After the backfill drains the work queue, inserts about 20 tweets a second for `live` and
/// deletes some (new ones and old ones), then waits for the new ones to be embedded and stops
/// the run.
fn live_writer(monitor: &Monitor, uri: &str, live: Duration, stop: &StopSignal) -> Result<()> {
    let rt = &monitor.runtime;
    let queue = &monitor.queue;
    while !stop.is_stopped() && rt.block_on(queue.remaining()).map_or(true, |n| n > 0) {
        std::thread::sleep(Duration::from_millis(200));
    }
    if stop.is_stopped() || live.is_zero() {
        stop.stop();
        return Ok(());
    }
    crate::say!(
        "\nbackfill done (the work queue is empty); following the change stream for {} s while new tweets arrive and some are deleted",
        live.as_secs()
    );
    let coll = rt.block_on(async {
        let client = mongodb::Client::with_uri_str(uri).await?;
        Ok::<_, mongodb::error::Error>(client.database("twitter_data").collection::<Document>("tweets"))
    })?;
    let started = Instant::now();
    let (mut inserted, mut deleted) = (0u64, 0u64);
    let old: Vec<Bson> = rt.block_on(async {
        let mut c = coll.find(doc! {"gemma_embedded_768": true}).projection(doc! {"_id": 1}).limit(200).await?;
        let mut ids = Vec::new();
        while c.advance().await? {
            ids.extend(c.deserialize_current()?.get("_id").cloned());
        }
        Ok::<_, mongodb::error::Error>(ids)
    })?;
    let mut old = old.into_iter();
    while started.elapsed() < live && !stop.is_stopped() {
        // ObjectIds like the seeded tweets': the dataset's id column is of that type, and an `_id`
        // of another type would be a rejection (a stray).
        let ids: Vec<Bson> = (0..5).map(|_| Bson::ObjectId(ObjectId::new())).collect();
        let batch: Vec<Document> = ids
            .iter()
            .zip(inserted..)
            .map(|(id, i)| doc! {"_id": id, "lang": "en", "text": format!("live tweet {i}: the stream picks this up")})
            .collect();
        rt.block_on(coll.insert_many(batch).into_future())?;
        inserted += 5;
        // One in ten new tweets is deleted again at once, and an older one now and then.
        if inserted % 50 == 0 {
            let gone: Vec<Bson> = ids.into_iter().chain(old.next()).collect();
            deleted += rt.block_on(coll.delete_many(doc! {"_id": {"$in": gone}}).into_future())?.deleted_count;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Let the last inserts through, and one more compaction pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && rt.block_on(queue.remaining()).map_or(true, |n| n > 0) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(6));
    crate::say!("live phase: {inserted} tweets inserted, {deleted} deleted");
    stop.stop();
    Ok(())
}
