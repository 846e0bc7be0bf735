//! The Prometheus metrics of one simulated GPU, under TEI's names (`te_*`), in their own
//! registry, rendered by `GET /metrics`.
//!
//! This module owns the metric set and its text rendering; it never decides what to count (the
//! routes and the queue do). Counters are rendered without the OpenMetrics `_total` suffix because
//! TEI's exporter has none: a client scraping `te_request_count{method="batch"}` must find it here
//! as on a real server. Durations are in seconds, with TEI's bucket layout.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A counter rendered as TEI's exporter renders one: `name{labels} value`, no `_total`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TeiCounter(Counter);

impl TeiCounter {
    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn add(&self, by: u64) {
        self.0.inc_by(by);
    }
}

impl TypedMetric for TeiCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for TeiCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // The gauge encoding is the plain `name value` line; the TYPE line still says counter.
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

type Labels = [(&'static str, &'static str); 1];

/// All metrics of one GPU.
pub(crate) struct Metrics {
    registry: Registry,
    request_count: Family<Labels, TeiCounter>,
    request_success: Family<Labels, TeiCounter>,
    request_failure: Family<Labels, TeiCounter>,
    pub embed_count: TeiCounter,
    pub request_duration: Histogram,
    pub tokenization_duration: Histogram,
    pub queue_duration: Histogram,
    pub inference_duration: Histogram,
    pub input_length: Histogram,
    batch_next_size: Histogram,
    batch_next_tokens: Histogram,
    batch_inference_count: TeiCounter,
    batch_inference_duration: Histogram,
    pub queue_size: Gauge,
    real_tokens: TeiCounter,
    computed_tokens: TeiCounter,
}

/// TEI's duration buckets: 35 steps of ×1.5 from 15 µs.
fn duration_buckets() -> Vec<f64> {
    std::iter::successors(Some(0.000_015), |v| Some(v * 1.5)).take(35).collect()
}

fn powers_of_two(count: i32) -> impl Iterator<Item = f64> {
    (0..count).map(|x| 2f64.powi(x))
}

impl Metrics {
    pub fn new(max_input_length: usize) -> Self {
        let mut registry = Registry::default();
        let family = Family::<Labels, TeiCounter>::default;
        let duration = || Histogram::new(duration_buckets());
        let m = Self {
            request_count: family(),
            request_success: family(),
            request_failure: family(),
            embed_count: TeiCounter::default(),
            request_duration: duration(),
            tokenization_duration: duration(),
            queue_duration: duration(),
            inference_duration: duration(),
            input_length: Histogram::new(powers_of_two(20).filter(|x| *x as usize <= max_input_length.max(1))),
            batch_next_size: Histogram::new(powers_of_two(13)),
            batch_next_tokens: Histogram::new(powers_of_two(21)),
            batch_inference_count: TeiCounter::default(),
            batch_inference_duration: duration(),
            queue_size: Gauge::default(),
            real_tokens: TeiCounter::default(),
            computed_tokens: TeiCounter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("te_request_count", "Requests received", m.request_count.clone());
        r.register("te_request_success", "Requests answered", m.request_success.clone());
        r.register("te_request_failure", "Requests failed, by cause", m.request_failure.clone());
        r.register("te_embed_count", "Inputs embedded", m.embed_count.clone());
        r.register("te_request_duration", "Request time (s)", m.request_duration.clone());
        let tok = m.tokenization_duration.clone();
        r.register("te_request_tokenization_duration", "Tokenization time (s)", tok);
        r.register("te_request_queue_duration", "Queue time (s)", m.queue_duration.clone());
        let inf = m.inference_duration.clone();
        r.register("te_request_inference_duration", "Inference time (s)", inf);
        r.register("te_request_input_length", "Input tokens", m.input_length.clone());
        r.register("te_batch_next_size", "Inputs per server batch", m.batch_next_size.clone());
        r.register("te_batch_next_tokens", "Tokens per server batch", m.batch_next_tokens.clone());
        let count = m.batch_inference_count.clone();
        r.register("te_batch_inference_count", "Server batches run", count);
        let bdur = m.batch_inference_duration.clone();
        r.register("te_batch_inference_duration", "Server batch time (s)", bdur);
        r.register("te_queue_size", "Inputs waiting in the queue", m.queue_size.clone());
        // The simulator's own (TEI has no such counters): padding made visible.
        let real = m.real_tokens.clone();
        r.register("dev_tei_real_tokens", "Tokens of the inputs run, padding excluded", real);
        let computed = m.computed_tokens.clone();
        r.register("dev_tei_computed_tokens", "Tokens the batches computed, padding included", computed);
        Self { registry, ..m }
    }

    /// `method` is `single` or `batch`, as TEI labels requests.
    pub fn request(&self, method: &'static str) {
        self.request_count.get_or_create(&[("method", method)]).inc();
    }

    pub fn success(&self, method: &'static str) {
        self.request_success.get_or_create(&[("method", method)]).inc();
    }

    /// `err` is TEI's label: `overloaded`, `validation`, `batch_size`, `tokenization`, `empty`,
    /// `backend` or `unhealthy`.
    pub fn failure(&self, err: &'static str) {
        self.request_failure.get_or_create(&[("err", err)]).inc();
    }

    /// One server batch: `size` inputs of `tokens` real tokens, `computed` with padding.
    pub fn observe_batch(&self, size: usize, tokens: usize, computed: usize, service: Duration) {
        self.batch_next_size.observe(size as f64);
        self.batch_next_tokens.observe(tokens as f64);
        self.real_tokens.add(tokens as u64);
        self.computed_tokens.add(computed as u64);
        self.batch_inference_count.inc();
        self.batch_inference_duration.observe(service.as_secs_f64());
    }

    /// The Prometheus text of all metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error would only mean a bug in an encoder.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
