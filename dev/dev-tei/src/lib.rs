//! The TEI GPU simulator: one text-embeddings-inference 1.9–compatible HTTP endpoint per
//! simulated GPU, on loopback, for tests, benchmarks, the demo and trying things by hand
//! (`tweet-embed dev-tei`, which serves this crate).
//!
//! It owns: TEI's HTTP API (`POST /embed`, `POST /v1/embeddings`, `POST /tokenize`, `GET /info`,
//! `GET /health`, `GET /metrics`) with its limits, status codes and error bodies
//! (`shared/notes/tei.md`); TEI's queue and batching with a service-time model of a GPU
//! ([`GpuStats`] exposes its counters); deterministic vectors ([`embedding_for`]) so every row
//! can be checked; token counting (the pipeline's own [`estimate_tokens`], or a real
//! `tokenizer.json`); and faults (error rate, dropped connections, slow answers, unhealthy, an
//! endpoint that goes down and comes back on the same port, all-NaN vectors for some texts).
//!
//! It must never be mistaken for a model: vectors carry no meaning. It binds 127.0.0.1 only, and
//! never reaches the network. It depends on `tweet-embed-operators` for the estimate only; the
//! pipeline's crates never depend on it.
//!
//! [`estimate_tokens`]: tweet_embed_operators::tei::estimate_tokens
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dev_tei::{DevTei, SimConfig};
//! let tei = DevTei::start(SimConfig { gpus: 2, ..SimConfig::default() }).await?;
//! let urls = tei.urls(); // ["http://127.0.0.1:PORT", ...]
//! tei.gpus()[1].set_down(true).await?; // connection refused
//! tei.gpus()[1].set_down(false).await?; // serving again, same port
//! tei.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod config;
mod embed;
mod faults;
mod gpu;
mod metrics;
mod routes;
mod server;
mod state;
mod tokens;
mod vectors;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Semaphore;

pub use config::{gemma_prompts, DevTeiArgs, DevTeiFlags, Outage, SimConfig, DEFAULT_MODEL_SHA};
pub use faults::{returns_nan, FaultConfig};
pub use gpu::GpuStats;
pub use state::Received;
pub use tokens::estimate_truncate;
pub use vectors::{embedding_for, embedding_for_ids, raw_embedding_for};

use faults::Faults;
use gpu::{GpuModel, GpuQueue};
use server::Endpoint;
use state::GpuState;
use tokens::TokenCounter;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevTeiError {
    #[error("{0}")]
    Config(String),
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("port {port} is in use: choose another --base-port")]
    PortInUse { port: u16 },
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: io::Error },
}

/// A running simulator. Dropping it stops every endpoint; [`DevTei::shutdown`] also waits for
/// the listeners to close.
pub struct DevTei {
    gpus: Vec<SimGpu>,
}

/// The handle of one simulated GPU: its address, fault hooks and counters. Cheap to clone.
#[derive(Clone)]
pub struct SimGpu {
    index: usize,
    endpoint: Arc<Endpoint>,
}

impl DevTei {
    /// Validates `config`, loads the tokenizer if any, and binds every GPU's endpoint. Must run
    /// inside a tokio runtime (multi-threaded for benchmarks).
    pub async fn start(config: SimConfig) -> Result<Self, DevTeiError> {
        config.validate().map_err(DevTeiError::Config)?;
        let tokenizer = match &config.tokenizer {
            Some(path) => TokenCounter::from_file(path, config.max_input_length)
                .map_err(|message| DevTeiError::Tokenizer { path: path.clone(), message })?,
            None => TokenCounter::Estimate,
        };
        let tokenizer = Arc::new(tokenizer);
        let config = Arc::new(config);
        let info = routes::info_body(&config);
        let model = GpuModel {
            base: config.base,
            tokens_per_second: config.tokens_per_second,
            instant: config.instant,
            max_batch_tokens: config.max_batch_tokens,
            max_batch_requests: config.batch_requests(),
            padded: config.is_padded(),
        };
        // Built up GPU by GPU so a bind failure drops (and stops) the ones already serving.
        let mut tei = DevTei { gpus: Vec::with_capacity(config.gpus) };
        for index in 0..config.gpus {
            let metrics = Arc::new(metrics::Metrics::new(config.max_input_length));
            let state = Arc::new(GpuState {
                config: config.clone(),
                tokenizer: tokenizer.clone(),
                permits: Semaphore::new(config.max_concurrent_requests),
                queue: GpuQueue::start(model.clone(), metrics.clone()),
                metrics,
                faults: Faults::new(config.faults.clone(), config.seed.wrapping_add(index as u64)),
                info: info.clone(),
                texts: parking_lot::Mutex::new(None),
                options: parking_lot::Mutex::default(),
                max_request_tokens: Default::default(),
            });
            let port = match config.base_port {
                0 => 0,
                base => base + index as u16,
            };
            let endpoint = Endpoint::start(state, port).map_err(|source| match source.kind() {
                io::ErrorKind::AddrInUse => DevTeiError::PortInUse { port },
                _ => DevTeiError::Bind { port, source },
            })?;
            tei.gpus.push(SimGpu { index, endpoint });
        }
        Ok(tei)
    }

    /// Base URLs, one per GPU, e.g. `http://127.0.0.1:18080` (append `/embed`).
    pub fn urls(&self) -> Vec<String> {
        self.gpus.iter().map(SimGpu::url).collect()
    }

    /// The GPUs' handles, in port order.
    pub fn gpus(&self) -> &[SimGpu] {
        &self.gpus
    }

    /// Counters of every GPU.
    pub fn stats(&self) -> Vec<GpuStats> {
        self.gpus.iter().map(SimGpu::stats).collect()
    }

    /// Starts counting how often each text is embedded (off by default: it keeps every text).
    pub fn record_texts(&self) {
        for gpu in &self.gpus {
            gpu.endpoint.state.texts.lock().get_or_insert_with(Default::default);
        }
    }

    /// The embedding options requests carried (prompt, dimensions, normalize, truncation
    /// direction, as sent), and how many requests carried each, over every GPU.
    pub fn options_seen(&self) -> std::collections::BTreeMap<Received, u64> {
        let mut all = std::collections::BTreeMap::new();
        for gpu in &self.gpus {
            for (o, n) in gpu.endpoint.state.options.lock().iter() {
                *all.entry(o.clone()).or_insert(0) += n;
            }
        }
        all
    }

    /// The most tokens one request carried on any GPU (prompts included, after truncation).
    pub fn max_request_tokens(&self) -> usize {
        let load = |g: &SimGpu| g.endpoint.state.max_request_tokens.load(std::sync::atomic::Ordering::Relaxed);
        self.gpus.iter().map(load).max().unwrap_or(0)
    }

    /// How often each text was embedded, over every GPU, since [`DevTei::record_texts`].
    pub fn texts_seen(&self) -> std::collections::HashMap<String, u32> {
        let mut all = std::collections::HashMap::new();
        for gpu in &self.gpus {
            for (t, n) in gpu.endpoint.state.texts.lock().iter().flatten() {
                *all.entry(t.clone()).or_insert(0) += n;
            }
        }
        all
    }

    /// Stops every endpoint and waits for the listeners to close.
    pub async fn shutdown(self) {
        for gpu in &self.gpus {
            gpu.endpoint.shutdown().await;
        }
    }
}

impl Drop for DevTei {
    fn drop(&mut self) {
        for gpu in &self.gpus {
            gpu.endpoint.close();
        }
    }
}

impl SimGpu {
    /// Position of the GPU (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The port it serves on, kept across outages.
    pub fn port(&self) -> u16 {
        self.endpoint.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.endpoint.port)
    }

    /// Takes the endpoint down (listener closed, open connections closed: connection refused,
    /// like a dead container) or brings it back on the same port. Returns when that holds.
    pub async fn set_down(&self, down: bool) -> io::Result<()> {
        self.endpoint.set_down(down).await
    }

    /// Whether the endpoint is down now.
    pub fn is_down(&self) -> bool {
        self.endpoint.is_down()
    }

    /// Unhealthy: `/health` and every model request answer 503 `Unhealthy`.
    pub fn set_unhealthy(&self, unhealthy: bool) {
        self.endpoint.state.faults.set_unhealthy(unhealthy);
    }

    /// Fraction of model requests answered 503 or 424 from now on.
    pub fn set_error_rate(&self, rate: f64) {
        self.endpoint.state.faults.update(|f| f.error_rate = rate);
    }

    /// Fraction of model requests whose connection is closed without an answer.
    pub fn set_drop_rate(&self, rate: f64) {
        self.endpoint.state.faults.update(|f| f.drop_rate = rate);
    }

    /// Fraction of model requests answered `extra` late.
    pub fn set_slow(&self, rate: f64, extra: Duration) {
        self.endpoint.state.faults.update(|f| {
            f.slow_rate = rate;
            f.slow = extra;
        });
    }

    /// Answers 424 to every request holding an input that contains `text` (None: no more).
    pub fn set_poison(&self, text: Option<String>) {
        self.endpoint.state.faults.update(|f| f.poison = text);
    }

    /// Fraction of texts whose vector is all NaN from now on (see [`returns_nan`]).
    pub fn set_nan_rate(&self, rate: f64) {
        self.endpoint.state.faults.update(|f| f.nan_rate = rate);
    }

    /// Counters of this GPU's queue since start.
    pub fn stats(&self) -> GpuStats {
        self.endpoint.state.queue.stats()
    }
}

/// Runs `tweet-embed dev-tei` until interrupted.
pub fn run(args: DevTeiArgs) -> Result<()> {
    let config = SimConfig::try_from(args).map_err(anyhow::Error::msg)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: SimConfig) -> Result<()> {
    let outages = config.outages.clone();
    let tei = DevTei::start(config.clone()).await?;
    for gpu in tei.gpus() {
        println!(
            "dev-tei gpu {}: {}  model={} max_batch_tokens={} max_client_batch_size={} \
             max_input_length={} max_concurrent_requests={}",
            gpu.index(),
            gpu.url(),
            config.model_id,
            config.max_batch_tokens,
            config.max_client_batch_size,
            config.max_input_length,
            config.max_concurrent_requests,
        );
    }
    for outage in outages {
        let gpu = tei.gpus()[outage.gpu].clone();
        tokio::spawn(async move {
            tokio::time::sleep(outage.start).await;
            if let Err(err) = gpu.set_down(true).await {
                eprintln!("dev-tei gpu {}: cannot go down: {err}", gpu.index());
                return;
            }
            println!("dev-tei gpu {}: down for {:?}", gpu.index(), outage.duration);
            tokio::time::sleep(outage.duration).await;
            match gpu.set_down(false).await {
                Ok(()) => println!("dev-tei gpu {}: back on {}", gpu.index(), gpu.url()),
                Err(err) => eprintln!("dev-tei gpu {}: cannot come back: {err}", gpu.index()),
            }
        });
    }
    tokio::signal::ctrl_c().await.context("cannot wait for ctrl-c")?;
    tei.shutdown().await;
    Ok(())
}
