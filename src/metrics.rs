//! `--metrics-addr`: Prometheus text on `GET /metrics`, encoded by `prometheus-client` from the
//! run's own counters at each scrape — documents and tokens committed, rejections by reason,
//! requests, retries and failures per endpoint, in-flight and limit per endpoint, latency
//! quantiles, the frontier epoch, checkpoint age, stream lag, Parquet bytes written, compactions,
//! bytes rewritten, deletions recorded, applied and pending, staged bytes, and how long the run
//! has been stalled.
//!
//! It only reads counters the pipeline keeps anyway; it never slows or blocks the pipeline, and
//! it never exports a URL's credentials (endpoint labels are redacted).

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tweet_embed_operators::clock::{steady_ms, wall_ms};
use tweet_embed_operators::table::checkpoint::CommitTotals;
use tweet_embed_operators::table::output::OutputStats;
use tweet_embed_operators::tei::{redact, EndpointPool};

/// What the exporter reads at each scrape.
#[derive(Clone)]
pub struct MetricSources {
    /// Committed totals (the run's summary comes from the same counters).
    pub totals: Arc<CommitTotals>,
    /// Parquet writer counters.
    pub output: Arc<OutputStats>,
    /// The TEI endpoint pool.
    pub pool: Arc<EndpointPool>,
    /// The run, for how long it has been stalled.
    pub run: tweet_embed_operators::run::Monitor,
}

impl std::fmt::Debug for MetricSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricSources")
    }
}

type Labels = Vec<(String, String)>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels, u64)]) -> std::fmt::Result {
    let mut fam = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(fam.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels, f64)]) -> std::fmt::Result {
    let mut fam = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(fam.encode_family(labels)?)?;
    }
    Ok(())
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Collector for MetricSources {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let t = &self.totals;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut e,
            "tweet_embed_documents",
            "Documents committed and marked, by outcome.",
            &[(l(&[("outcome", "embedded")]), load(&t.embedded)), (l(&[("outcome", "rejected")]), load(&t.rejected))],
        )?;
        counter(&mut e, "tweet_embed_tokens", "Tokens of the embedded documents.", &[(vec![], load(&t.tokens))])?;
        let reasons: Vec<(Labels, u64)> =
            t.rejects_by_reason().into_iter().map(|(r, n)| (l(&[("reason", r.as_str())]), n)).collect();
        counter(&mut e, "tweet_embed_rejects", "Documents rejected, by kind of reason.", &reasons)?;
        counter(&mut e, "tweet_embed_files", "Parquet files committed.", &[(vec![], load(&t.files))])?;
        let out = self.output.snapshot();
        counter(
            &mut e,
            "tweet_embed_parquet_bytes",
            "Bytes of Parquet files sealed into the staging directory (each row's first write).",
            &[(vec![], out.bytes_sealed)],
        )?;
        let c = self.run.compaction.snapshot();
        counter(
            &mut e,
            "tweet_embed_compactions",
            "Target-size files compaction wrote into the output directory.",
            &[(vec![], c.compactions)],
        )?;
        counter(
            &mut e,
            "tweet_embed_compaction_bytes",
            "Bytes compaction and deletion rewrites wrote into the output directory.",
            &[(vec![], c.bytes_written)],
        )?;
        counter(
            &mut e,
            "tweet_embed_deletions_applied",
            "Recorded deletions applied to every file of the output directory.",
            &[(vec![], c.deletions_applied)],
        )?;
        counter(
            &mut e,
            "tweet_embed_deletions_recorded",
            "Deletions from the change stream recorded in _deletions/.",
            &[(vec![], load(&t.deletions))],
        )?;
        counter(
            &mut e,
            "tweet_embed_deleted_rows",
            "Rows removed because their tweet was deleted (at compaction, or by rewriting output files).",
            &[(vec![], c.deleted_rows)],
        )?;
        gauge(
            &mut e,
            "tweet_embed_deletions_pending",
            "Recorded deletions not yet applied to the output directory's files.",
            &[(vec![], c.deletions_pending as f64)],
        )?;
        gauge(
            &mut e,
            "tweet_embed_staged_bytes",
            "Bytes of committed files waiting in the staging directory for compaction.",
            &[(vec![], c.staged_bytes as f64)],
        )?;
        gauge(
            &mut e,
            "tweet_embed_staged_files",
            "Committed files waiting in the staging directory for compaction.",
            &[(vec![], c.staged_files as f64)],
        )?;
        let now = steady_ms().max(0) as u64;
        let committed_at = load(&t.committed_at_ms);
        gauge(
            &mut e,
            "tweet_embed_frontier_epoch",
            "The last epoch committed and marked.",
            &[(vec![], load(&t.committed_epoch) as f64)],
        )?;
        let age = if committed_at > 0 { now.saturating_sub(committed_at) as f64 / 1e3 } else { 0.0 };
        gauge(&mut e, "tweet_embed_checkpoint_age_seconds", "Seconds since the last commit.", &[(vec![], age)])?;
        let stream = load(&t.stream_time_s);
        let wall_s = wall_ms().max(0) as u64 / 1000;
        let lag = if stream > 0 { wall_s.saturating_sub(stream) as f64 } else { 0.0 };
        gauge(
            &mut e,
            "tweet_embed_stream_lag_seconds",
            "Now minus the cluster time of the last change-stream position committed (0 without a stream).",
            &[(vec![], lag)],
        )?;
        gauge(
            &mut e,
            "tweet_embed_stalled_seconds",
            "Seconds without progress while work remains (0 while the run moves); the log says why every stall period.",
            &[(vec![], self.run.stalled_seconds())],
        )?;
        let pool = self.pool.stats();
        let retries: Vec<(Labels, u64)> =
            pool.retries_by_cause.iter().map(|(c, n)| (l(&[("cause", c.as_str())]), *n)).collect();
        counter(&mut e, "tweet_embed_tei_retries", "TEI requests retried, by cause.", &retries)?;
        counter(
            &mut e,
            "tweet_embed_tei_sent_tokens",
            "Tokens of the inputs sent in answered requests: `real`, as counted; `padded`, what a padded server \
             (TEI's EmbeddingGemma, any non-flash model) computes for them, each request's inputs times its \
             longest. real / padded is the share of the GPU's work that is not padding.",
            &[(l(&[("kind", "real")]), pool.budget_tokens), (l(&[("kind", "padded")]), pool.padded_tokens)],
        )?;
        let eps: Vec<(String, &tweet_embed_operators::tei::EndpointStats)> =
            pool.endpoints.iter().map(|s| (redact(&s.url), s)).collect();
        let per = |f: &dyn Fn(&tweet_embed_operators::tei::EndpointStats) -> u64| -> Vec<(Labels, u64)> {
            eps.iter().map(|(u, s)| (l(&[("endpoint", u.as_str())]), f(s))).collect()
        };
        let per_f = |f: &dyn Fn(&tweet_embed_operators::tei::EndpointStats) -> f64| -> Vec<(Labels, f64)> {
            eps.iter().map(|(u, s)| (l(&[("endpoint", u.as_str())]), f(s))).collect()
        };
        counter(&mut e, "tweet_embed_tei_requests", "Requests sent, per endpoint.", &per(&|s| s.requests))?;
        counter(&mut e, "tweet_embed_tei_failures", "Requests that failed, per endpoint.", &per(&|s| s.failures))?;
        counter(&mut e, "tweet_embed_tei_inputs", "Inputs embedded, per endpoint.", &per(&|s| s.embedded_inputs))?;
        counter(
            &mut e,
            "tweet_embed_tei_invalid_vectors",
            "Vectors refused (NaN or infinite components, zero or non-unit norm, another dimension), per endpoint; \
             each one's input is rejected, never written.",
            &per(&|s| s.invalid_vectors),
        )?;
        gauge(
            &mut e,
            "tweet_embed_tei_requests_waiting",
            "Requests waiting for an endpoint slot (every endpoint full, down or being checked).",
            &[(vec![], pool.requests_waiting as f64)],
        )?;
        gauge(
            &mut e,
            "tweet_embed_tei_in_flight",
            "Requests in flight, per endpoint.",
            &per_f(&|s| s.in_flight as f64),
        )?;
        gauge(
            &mut e,
            "tweet_embed_tei_concurrency_limit",
            "Concurrency limit, per endpoint.",
            &per_f(&|s| s.concurrency_limit as f64),
        )?;
        let errors: Vec<(Labels, u64)> = eps
            .iter()
            .flat_map(|(u, s)| {
                s.errors_by_cause.iter().map(move |(c, n)| (l(&[("endpoint", u.as_str()), ("cause", c.as_str())]), *n))
            })
            .collect();
        counter(&mut e, "tweet_embed_tei_errors", "Failed requests per endpoint, by status or cause.", &errors)?;
        gauge(
            &mut e,
            "tweet_embed_tei_tokens_per_second",
            "Tokens embedded per second over the last 10 s, per endpoint.",
            &per_f(&|s| s.tokens_per_second),
        )?;
        gauge(
            &mut e,
            "tweet_embed_tei_breaker_open",
            "1 while an endpoint's circuit breaker keeps it out of rotation.",
            &per_f(&|s| f64::from(u8::from(s.breaker != tweet_embed_operators::tei::BreakerState::Closed))),
        )?;
        let mut latency: Vec<(Labels, f64)> = Vec::new();
        for (u, s) in &eps {
            for (q, d) in [("0.5", s.latency_p50), ("0.95", s.latency_p95), ("0.99", s.latency_p99)] {
                latency.push((l(&[("endpoint", u.as_str()), ("quantile", q)]), d.as_secs_f64()));
            }
        }
        gauge(
            &mut e,
            "tweet_embed_tei_request_latency_seconds",
            "Request latency quantiles per endpoint (hdrhistogram).",
            &latency,
        )?;
        Ok(())
    }
}

/// The exporter's listener; it stops when dropped.
pub struct MetricsServer {
    /// Where it listens (the port is real even when 0 was asked for).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `sources` on `addr` from `runtime`.
pub fn serve(runtime: &tokio::runtime::Handle, addr: SocketAddr, sources: MetricSources) -> Result<MetricsServer> {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
    let addr = listener.local_addr().context("reading the metrics listener's address")?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(sources));
    let registry = Arc::new(registry);
    let task = runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let registry = registry.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, &registry)) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    Ok(MetricsServer { addr, task })
}

fn respond(req: &Request<hyper::body::Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "see /metrics\n".into());
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", body),
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "encoding failed\n".into()),
    }
}
