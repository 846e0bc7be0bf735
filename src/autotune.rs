//! `tweet-embed autotune`: sweeps batch size × concurrency per endpoint on a real sample of
//! texts, prints the old `autotune_embed.py` table, recommends the setting with the most docs/s
//! that meets `--p95-slo` with zero errors, and writes it as TOML.
//!
//! This module owns the sweep, the table and the recommendation. It never changes the pool's
//! rules (each setting is a pool with the concurrency pinned) and never writes to Mongo: the
//! sample is read with the work-queue filter and left as it is.
//!
//! The file it writes (`--write FILE.toml`) holds two keys, `batch_size` (texts per request, the
//! `--batch-size` flag) and `concurrency` (requests in flight per endpoint, the `--concurrency`
//! flag, which pins the otherwise adaptive limit), for the config-file loader of the other
//! commands.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tweet_embed_operators::mongo::error::describe;

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mongodb::bson::{doc, Bson, Document};
use parking_lot::Mutex;
use tweet_embed_operators::tei::{Api, Concurrency, EndpointPool, PoolConfig};

use crate::config::{parse_api, parse_duration, MongoArgs};

/// Flags of `tweet-embed autotune`.
#[derive(Debug, Clone, clap::Args)]
pub struct AutotuneArgs {
    /// TEI endpoints, comma-separated, one per GPU (`/embed` suffix accepted).
    #[arg(long, value_delimiter = ',', required = true)]
    pub tei_urls: Vec<String>,
    /// Where the sample comes from unless `--texts-file` is given.
    #[command(flatten)]
    pub mongo: MongoArgs,
    /// Texts in the sample (each setting embeds all of them).
    #[arg(long, default_value_t = 2000)]
    pub sample: usize,
    /// Sample from this file instead, one text per line (blank lines skipped).
    #[arg(long)]
    pub texts_file: Option<PathBuf>,
    /// Batch sizes (texts per request) to try.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64")]
    pub batch_sizes: Vec<usize>,
    /// Concurrencies (requests in flight per endpoint) to try.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub concurrency: Vec<usize>,
    /// Latency a recommended setting must keep its p95 under.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub p95_slo: Duration,
    /// Write the recommended setting to this TOML file.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Field holding the tweet's text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field set when a document is done: the sample is taken from documents without it.
    #[arg(long, default_value = "gemma_embedded_768")]
    pub mark_field: String,
    /// TEI route: auto, tei or openai.
    #[arg(long, default_value = "auto", value_parser = parse_api)]
    pub api: Api,
    /// Bearer token for TEI; `TEI_API_KEY` is read too.
    #[arg(long, env = "TWEET_EMBED_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The run's embedding options: a prompt changes every request's tokens, so throughput.
    #[command(flatten)]
    pub embed: crate::config::EmbedOptionArgs,
}

/// One setting's measurements: the old table's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneRow {
    /// Texts per request (after the server's `max_client_batch_size`).
    pub batch_size: usize,
    /// Requests in flight per endpoint.
    pub concurrency: usize,
    /// Texts embedded per second.
    pub docs_per_s: f64,
    /// Tokens embedded per second.
    pub tokens_per_s: f64,
    /// Median latency of an `embed` call of one batch.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Failed calls (retried) plus texts refused.
    pub errors: u64,
    /// Wall time of the setting.
    pub total: Duration,
    /// Real tokens over what a padded server computes for the requests as sent (each request's
    /// inputs times its longest): 1.0 is no padding. TEI pads EmbeddingGemma's batches on every
    /// device, so on such a server the GPU's useful share. None when nothing was sent.
    pub real_share: Option<f64>,
}

/// Runs `tweet-embed autotune`.
pub fn run(args: AutotuneArgs) -> Result<()> {
    if args.batch_sizes.iter().chain(&args.concurrency).any(|&n| n == 0) || args.sample == 0 {
        bail!("--sample, --batch-sizes and --concurrency values must be at least 1");
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let texts = match &args.texts_file {
            Some(path) => texts_from_file(path, args.sample)?,
            None => texts_from_mongo(&args).await?,
        };
        if texts.is_empty() {
            bail!("the sample is empty: nothing to embed (check --texts-file, or the work queue of --collection)");
        }
        let mut base = PoolConfig::new(args.tei_urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()));
        base.api = args.api;
        base.api_key = args.api_key.clone().or_else(|| std::env::var("TEI_API_KEY").ok()).filter(|k| !k.is_empty());
        base.options = args.embed.options();
        let settings: Vec<(usize, usize)> =
            args.batch_sizes.iter().flat_map(|&b| args.concurrency.iter().map(move |&c| (b, c))).collect();
        let bar = progress_bar((settings.len() * texts.len()) as u64);
        let mut out = std::io::stdout();
        let rows = sweep(&base, &texts, &settings, &bar).await?;
        bar.finish_and_clear();
        print_table(&mut out, &rows)?;
        match recommend(&rows, args.p95_slo) {
            Some(best) => {
                writeln!(
                    out,
                    "\nRecommended: batch size {}, concurrency {} per endpoint ({:.1} docs/s, p95 {:.2} s <= {:?}, no errors)",
                    best.batch_size,
                    best.concurrency,
                    best.docs_per_s,
                    best.p95.as_secs_f64(),
                    args.p95_slo
                )?;
                if let Some(path) = &args.write {
                    write_toml(path, best, args.p95_slo)?;
                    writeln!(out, "Wrote {}", path.display())?;
                }
                Ok(())
            }
            None => bail!(
                "no setting met p95 <= {:?} with zero errors; try smaller --batch-sizes or --concurrency, or a looser --p95-slo",
                args.p95_slo
            ),
        }
    })
}

/// Measures every `(batch size, concurrency)` of `settings` on `texts`, each with a fresh pool.
pub async fn sweep(
    base: &PoolConfig,
    texts: &[String],
    settings: &[(usize, usize)],
    bar: &ProgressBar,
) -> Result<Vec<TuneRow>> {
    let mut rows = Vec::with_capacity(settings.len());
    for &(batch_size, concurrency) in settings {
        bar.set_message(format!("batch {batch_size}, concurrency {concurrency}"));
        let config =
            PoolConfig { batch_size: Some(batch_size), concurrency: Concurrency::Fixed(concurrency), ..base.clone() };
        let pool = EndpointPool::connect(config).await.map_err(|e| anyhow!("{e}"))?;
        rows.push(measure(&pool, texts, batch_size, concurrency, bar).await);
    }
    Ok(rows)
}

/// Embeds `texts` in batches of `batch_size`, with as many callers as the endpoints' limits let
/// run at once (so calls do not wait for a slot: their latency is the request's).
async fn measure(
    pool: &EndpointPool,
    texts: &[String],
    batch_size: usize,
    concurrency: usize,
    bar: &ProgressBar,
) -> TuneRow {
    let batch_size = batch_size.min(pool.pack_limits().max_items);
    let batches: Arc<Vec<Vec<String>>> = Arc::new(texts.chunks(batch_size).map(<[String]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    // Constant, valid bounds (1 µs to an hour): this cannot fail.
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")));
    let before = pool.stats();
    let started = Instant::now();
    let callers = pool.stats().endpoints.iter().map(|e| e.concurrency_limit).sum::<usize>().max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (pool, batches, next, latency, bar) =
            (pool.clone(), batches.clone(), next.clone(), latency.clone(), bar.clone());
        tasks.spawn(async move {
            while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                pool.embed(batch.clone()).await;
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                latency.lock().saturating_record(us);
                bar.inc(batch.len() as u64);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let total = started.elapsed();
    let after = pool.stats();
    let latency = latency.lock();
    let q = |q: f64| Duration::from_micros(latency.value_at_quantile(q));
    let secs = total.as_secs_f64().max(1e-9);
    let tokens = after.budget_tokens - before.budget_tokens;
    TuneRow {
        batch_size,
        concurrency,
        docs_per_s: (after.embedded_inputs - before.embedded_inputs) as f64 / secs,
        tokens_per_s: tokens as f64 / secs,
        p50: q(0.5),
        p95: q(0.95),
        errors: (after.retries - before.retries) + (after.rejected_inputs - before.rejected_inputs),
        total,
        real_share: {
            let padded = after.padded_tokens - before.padded_tokens;
            (padded > 0).then(|| tokens as f64 / padded as f64)
        },
    }
}

/// The row with the most docs/s among those with zero errors and p95 within `slo` (fewer
/// requests in flight on a tie).
pub fn recommend(rows: &[TuneRow], slo: Duration) -> Option<&TuneRow> {
    rows.iter().filter(|r| r.errors == 0 && r.p95 <= slo).max_by(|a, b| {
        a.docs_per_s.total_cmp(&b.docs_per_s).then((b.concurrency * b.batch_size).cmp(&(a.concurrency * a.batch_size)))
    })
}

/// The old script's table.
pub fn print_table(out: &mut impl Write, rows: &[TuneRow]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>10} {:>11} {:>9} {:>10} {:>8} {:>8} {:>7} {:>14} {:>13}",
        "Batch Size", "Concurrency", "Docs/s", "Tok/s", "p50 (s)", "p95 (s)", "Errors", "Total Time (s)", "Real/Padded"
    )?;
    for r in rows {
        let share = r.real_share.map_or("-".to_string(), |s| format!("{s:.2}"));
        writeln!(
            out,
            "{:>10} {:>11} {:>9.1} {:>10.0} {:>8.2} {:>8.2} {:>7} {:>14.1} {:>13}",
            r.batch_size,
            r.concurrency,
            r.docs_per_s,
            r.tokens_per_s,
            r.p50.as_secs_f64(),
            r.p95.as_secs_f64(),
            r.errors,
            r.total.as_secs_f64(),
            share
        )?;
    }
    Ok(())
}

/// Writes `best` as the config file's `batch_size` and `concurrency`.
pub fn write_toml(path: &Path, best: &TuneRow, slo: Duration) -> Result<()> {
    let text = format!(
        "# Written by `tweet-embed autotune`: the setting with the most docs/s meeting p95 <= {:?} with zero errors\n\
         # ({:.1} docs/s, {:.0} tok/s, p50 {:.2} s, p95 {:.2} s). Without `concurrency` the limit adapts per endpoint.\n\
         batch_size = {}\nconcurrency = {}\n",
        slo,
        best.docs_per_s,
        best.tokens_per_s,
        best.p50.as_secs_f64(),
        best.p95.as_secs_f64(),
        best.batch_size,
        best.concurrency
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn progress_bar(total: u64) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} texts  {msg}  [{elapsed_precise}]") {
        bar.set_style(style);
    }
    bar
}

/// Up to `n` non-blank lines of `path`.
pub fn texts_from_file(path: &Path, n: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --texts-file {}", path.display()))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).take(n).map(str::to_string).collect())
}

/// Up to `--sample` texts of the work queue (documents still to embed), read as they come.
async fn texts_from_mongo(args: &AutotuneArgs) -> Result<Vec<String>> {
    let client = mongodb::Client::with_uri_str(&args.mongo.mongo_uri)
        .await
        .map_err(|e| anyhow!("bad --mongo-uri: {}", describe(&e)))?;
    let coll = client.database(&args.mongo.db).collection::<Document>(&args.mongo.collection);
    let filter = doc! {"retweeted": null, &args.mark_field: null, &args.text_field: {"$type": "string"}};
    let cursor = tokio::time::timeout(
        Duration::from_secs(30),
        coll.find(filter).projection(doc! {&args.text_field: 1}).limit(i64::try_from(args.sample).unwrap_or(i64::MAX)),
    )
    .await
    .map_err(|_| anyhow!("MongoDB is not reachable at --mongo-uri (no answer in 30 s)"))?
    .map_err(|e| {
        anyhow!("cannot read the sample from {}.{}: {}", args.mongo.db, args.mongo.collection, describe(&e))
    })?;
    let mut cursor = cursor;
    let mut docs = Vec::new();
    let read_err =
        |e: mongodb::error::Error| anyhow!("cannot read the sample from {}: {}", args.mongo.collection, describe(&e));
    while cursor.advance().await.map_err(read_err)? {
        // A sample text that is not UTF-8 is left out, as a run would reject it (see
        // `candidate`), instead of failing the sweep.
        if let Ok(d) = mongodb::bson::Document::try_from(cursor.current()) {
            docs.push(d);
        }
    }
    Ok(docs
        .into_iter()
        .filter_map(|d| match d.get(&args.text_field) {
            Some(Bson::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(batch_size: usize, concurrency: usize, docs_per_s: f64, p95_s: f64, errors: u64) -> TuneRow {
        let p95 = Duration::from_secs_f64(p95_s);
        let real_share = Some(0.5);
        TuneRow {
            batch_size,
            concurrency,
            docs_per_s,
            tokens_per_s: 0.0,
            p50: p95 / 2,
            p95,
            errors,
            total: p95,
            real_share,
        }
    }

    #[test]
    fn the_recommendation_meets_the_slo_with_zero_errors_and_is_the_fastest_that_does() {
        let rows = [
            row(32, 1, 150.0, 0.8, 0),
            row(32, 2, 186.0, 1.6, 0),
            row(32, 16, 188.0, 25.0, 0),
            row(64, 8, 190.0, 5.0, 3),
        ];
        let best = recommend(&rows, Duration::from_secs(10)).unwrap();
        assert_eq!((best.batch_size, best.concurrency), (32, 2));
        assert_eq!(recommend(&rows, Duration::from_millis(500)), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tune.toml");
        write_toml(&path, best, Duration::from_secs(10)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(keys, ["batch_size = 32", "concurrency = 2"]);
        let mut table = Vec::new();
        print_table(&mut table, &rows).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.starts_with("Batch Size Concurrency    Docs/s") && table.contains("Total Time (s)"), "{table}");
        assert!(table.lines().next().is_some_and(|l| l.ends_with("Real/Padded")), "{table}");
        assert!(table.lines().nth(1).is_some_and(|l| l.ends_with("0.50")), "{table}");
    }
}
