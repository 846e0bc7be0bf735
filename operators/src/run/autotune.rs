//! The autotune sweep: batch size × concurrency per endpoint measured on a real sample of texts,
//! one fresh pool per setting, and the recommendation: the setting with the most docs/s that
//! meets a p95 SLO with zero errors. `tweet-embed autotune` resolves its flags, shows the progress
//! ([`Watch`]), prints the table and writes the recommended setting.
//!
//! It owns the sweep, its measurements ([`TuneRow`]), the recommendation and reading the sample.
//! It never changes the pool's rules (each setting is a pool with the concurrency pinned), never
//! writes to Mongo (the sample is read with the work-queue filter and left as it is), and never
//! prints or draws. Error messages name the CLI's flags (`--mongo-uri`, `--texts-file`).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;
use mongodb::bson::{doc, Bson, Document};
use parking_lot::Mutex;

use crate::mongo::error::describe;
use crate::run::MongoTarget;
use crate::tei::{Concurrency, EndpointPool, PoolConfig};

/// What a sweep tells whoever shows its progress; both calls default to nothing, so `()` shows
/// nothing. Called from the sweep's tasks, so it must be cheap and must not block.
pub trait Watch: Send + Sync {
    /// A setting starts: `batch_size` texts per request, `concurrency` requests per endpoint.
    fn setting(&self, batch_size: usize, concurrency: usize) {
        let _ = (batch_size, concurrency);
    }

    /// `texts` more texts were embedded (or refused) in the current setting.
    fn embedded(&self, texts: u64) {
        let _ = texts;
    }
}

impl Watch for () {}

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

/// Measures every `(batch size, concurrency)` of `settings` on `texts`, each with a fresh pool
/// made from `base` (its batch size and concurrency replaced), telling `watch` as it goes.
pub async fn sweep(
    base: &PoolConfig,
    texts: &[String],
    settings: &[(usize, usize)],
    watch: Arc<dyn Watch>,
) -> Result<Vec<TuneRow>> {
    let mut rows = Vec::with_capacity(settings.len());
    for &(batch_size, concurrency) in settings {
        watch.setting(batch_size, concurrency);
        let config =
            PoolConfig { batch_size: Some(batch_size), concurrency: Concurrency::Fixed(concurrency), ..base.clone() };
        let pool = EndpointPool::connect(config).await.map_err(|e| anyhow!("{e}"))?;
        rows.push(measure(&pool, texts, batch_size, concurrency, &watch).await);
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
    watch: &Arc<dyn Watch>,
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
        let (pool, batches, next, latency, watch) =
            (pool.clone(), batches.clone(), next.clone(), latency.clone(), watch.clone());
        tasks.spawn(async move {
            while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                pool.embed(batch.clone()).await;
                let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                latency.lock().saturating_record(us);
                watch.embedded(batch.len() as u64);
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

/// Up to `n` non-blank lines of `path`.
pub fn texts_from_file(path: &Path, n: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --texts-file {}", path.display()))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).take(n).map(str::to_string).collect())
}

/// Up to `sample` texts (`text_field`, non-blank strings) of the work queue of `mongo` for
/// `mark_field` (documents still to embed), read as they come.
pub async fn texts_from_mongo(
    mongo: &MongoTarget,
    text_field: &str,
    mark_field: &str,
    sample: usize,
) -> Result<Vec<String>> {
    let client =
        mongodb::Client::with_uri_str(&mongo.uri).await.map_err(|e| anyhow!("bad --mongo-uri: {}", describe(&e)))?;
    let coll = client.database(&mongo.db).collection::<Document>(&mongo.collection);
    let filter = doc! {"retweeted": null, mark_field: null, text_field: {"$type": "string"}};
    let cursor = tokio::time::timeout(
        Duration::from_secs(30),
        coll.find(filter).projection(doc! {text_field: 1}).limit(i64::try_from(sample).unwrap_or(i64::MAX)),
    )
    .await
    .map_err(|_| anyhow!("MongoDB is not reachable at --mongo-uri (no answer in 30 s)"))?
    .map_err(|e| anyhow!("cannot read the sample from {}.{}: {}", mongo.db, mongo.collection, describe(&e)))?;
    let mut cursor = cursor;
    let mut docs = Vec::new();
    let read_err =
        |e: mongodb::error::Error| anyhow!("cannot read the sample from {}: {}", mongo.collection, describe(&e));
    while cursor.advance().await.map_err(read_err)? {
        // A sample text that is not UTF-8 is left out, as a run would reject it (see
        // `candidate`), instead of failing the sweep.
        if let Ok(d) = mongodb::bson::Document::try_from(cursor.current()) {
            docs.push(d);
        }
    }
    Ok(docs
        .into_iter()
        .filter_map(|d| match d.get(text_field) {
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
        TuneRow {
            batch_size,
            concurrency,
            docs_per_s,
            tokens_per_s: 0.0,
            p50: p95 / 2,
            p95,
            errors,
            total: p95,
            real_share: Some(0.5),
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
    }

    #[test]
    fn a_sample_file_gives_its_first_non_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("texts.txt");
        std::fs::write(&path, "one\n\n  \ntwo\nthree\n").unwrap();
        assert_eq!(texts_from_file(&path, 2).unwrap(), ["one", "two"]);
        let err = texts_from_file(&dir.path().join("missing"), 2).unwrap_err();
        assert!(format!("{err:#}").starts_with("cannot read --texts-file"), "{err:#}");
    }
}
