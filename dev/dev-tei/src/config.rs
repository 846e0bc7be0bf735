//! Configuration of the simulator: [`SimConfig`] for the library, [`DevTeiArgs`] for the
//! `dev-tei` command, and the conversion and checks between them.
//!
//! This module owns defaults and validation (a bad value is a one-line error before anything
//! binds); it never starts anything.

use std::path::PathBuf;
use std::time::Duration;

use super::faults::FaultConfig;

/// `max_batch_requests` TEI's candle backend forces on CPU.
pub const CPU_MAX_BATCH_REQUESTS: usize = 4;

/// A scheduled outage of one GPU (`--outage GPU:START_S:DURATION_S`): its endpoint goes down
/// `start` after startup and comes back `duration` later, on the same port.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub gpu: usize,
    pub start: Duration,
    pub duration: Duration,
}

impl std::str::FromStr for Outage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("outage {s:?} is not GPU:START_S:DURATION_S (e.g. 1:30:10)");
        let parts: Vec<&str> = s.split(':').collect();
        let [gpu, start, duration] = parts[..] else {
            return Err(bad());
        };
        let secs = |v: &str| {
            v.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(Duration::from_secs_f64).ok_or_else(bad)
        };
        let gpu = gpu.parse().map_err(|_| bad())?;
        Ok(Self { gpu, start: secs(start)?, duration: secs(duration)? })
    }
}

/// Everything a simulator run is made of. [`Default`] is TEI 1.9's defaults, the Gemma model's
/// dimension, a 5 ms + 20,000 tokens/s GPU, one GPU on an ephemeral port, and no faults.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Simulated GPUs, one endpoint each.
    pub gpus: usize,
    /// Port of GPU 0; GPU `i` gets `base_port + i`. 0: every GPU binds its own ephemeral port.
    pub base_port: u16,
    /// `/info.model_id` and `/v1/embeddings`' `model`.
    pub model_id: String,
    /// `/info.served_model_name` (TEI's `--served-model-name`); None: the model id, as TEI.
    pub served_model_name: Option<String>,
    /// `/info.model_sha`: the model's revision.
    pub model_sha: Option<String>,
    /// The model's prompts by name (`config_sentence_transformers.json`): `prompt_name` picks
    /// one, whose text is prepended to every input, so it changes the vectors and the tokens.
    pub prompts: Vec<(String, String)>,
    /// The prompt used when a request names none (TEI's `--default-prompt-name`).
    pub default_prompt_name: Option<String>,
    /// Simulate a router on CPU: `/info` reports `model_dtype: float32` and, as TEI's candle CPU
    /// backend forces it, `max_batch_requests: 4` (unless `max_batch_requests` says otherwise),
    /// which the queue enforces.
    pub cpu: bool,
    /// Simulate a padded model (TEI's `is_padded()`: Gemma3, i.e. EmbeddingGemma, on every
    /// device; every non-flash model; every CPU backend): the queue cuts a batch while
    /// `(n + 1) × longest ≤ max_batch_tokens` and the batch costs `n × longest` tokens
    /// (TEI 1.9 `core/src/queue.rs`). A CPU router is always padded.
    pub padded: bool,
    /// Embedding dimension.
    pub dim: usize,
    /// Permits per GPU, one per input.
    pub max_concurrent_requests: usize,
    /// Token budget of one server batch (unpadded sum).
    pub max_batch_tokens: usize,
    /// Inputs per server batch; None: unlimited, as TEI on CUDA.
    pub max_batch_requests: Option<usize>,
    /// Inputs per client request.
    pub max_client_batch_size: usize,
    /// Tokens per input, special tokens included.
    pub max_input_length: usize,
    /// Request body limit in bytes.
    pub payload_limit: usize,
    /// Default of `truncate` when a request omits it (TEI 1.9: true).
    pub auto_truncate: bool,
    /// Fixed cost of one server batch.
    pub base: Duration,
    /// Token throughput of the GPU within a batch.
    pub tokens_per_second: f64,
    /// No service time and no sleeping: the simulator's own CPU cost only.
    pub instant: bool,
    /// A `tokenizer.json` to count with; None: the pipeline's estimate
    /// ([`estimate_tokens`](tweet_embed_operators::tei::estimate_tokens)).
    pub tokenizer: Option<PathBuf>,
    /// Required `Authorization: Bearer <key>` on model routes and `/info`.
    pub api_key: Option<String>,
    /// Random faults every GPU starts with (change them per GPU with the handle's hooks).
    pub faults: FaultConfig,
    /// Scheduled outages (used by `dev-tei`; the library handle exposes `set_down` instead).
    pub outages: Vec<Outage>,
    /// Seed of the fault RNGs (GPU `i` uses `seed + i`).
    pub seed: u64,
}

/// The simulated model's revision in `/info`.
pub const DEFAULT_MODEL_SHA: &str = "57c266a740f537b4dc058e1b0cda161fd15afa75";

/// Prompts modelled on EmbeddingGemma's `config_sentence_transformers.json`: tasks of queries,
/// and documents.
pub fn gemma_prompts() -> Vec<(String, String)> {
    [
        ("query", "task: search result | query: "),
        ("document", "title: none | text: "),
        ("Retrieval-query", "task: search result | query: "),
        ("Retrieval-document", "title: none | text: "),
        ("Classification", "task: classification | query: "),
        ("Clustering", "task: clustering | query: "),
        ("STS", "task: sentence similarity | query: "),
        ("Summarization", "task: summarization | query: "),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), p.to_string()))
    .collect()
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            gpus: 1,
            base_port: 0,
            model_id: "google/embeddinggemma-300m".to_string(),
            served_model_name: None,
            model_sha: Some(DEFAULT_MODEL_SHA.to_string()),
            prompts: gemma_prompts(),
            default_prompt_name: None,
            cpu: false,
            padded: false,
            dim: 768,
            max_concurrent_requests: 512,
            max_batch_tokens: 16_384,
            max_batch_requests: None,
            max_client_batch_size: 32,
            max_input_length: 512,
            payload_limit: 2_000_000,
            auto_truncate: true,
            base: Duration::from_millis(5),
            tokens_per_second: 20_000.0,
            instant: false,
            tokenizer: None,
            api_key: None,
            faults: FaultConfig::default(),
            outages: Vec::new(),
            seed: 0,
        }
    }
}

impl SimConfig {
    /// A TEI router on CPU: as [`SimConfig::default`], with [`SimConfig::cpu`] set.
    pub fn cpu_router() -> Self {
        Self { cpu: true, ..Self::default() }
    }

    /// Items per server batch in force: `max_batch_requests`, else 4 on a CPU router (TEI's
    /// candle CPU backend), else unlimited.
    pub fn batch_requests(&self) -> Option<usize> {
        self.max_batch_requests.or(if self.cpu { Some(CPU_MAX_BATCH_REQUESTS) } else { None })
    }

    /// Whether batches are padded to their longest input: [`SimConfig::padded`], or a CPU router.
    pub fn is_padded(&self) -> bool {
        self.padded || self.cpu
    }

    /// The text of the prompt named `name`.
    pub fn prompt(&self, name: &str) -> Option<&str> {
        self.prompts.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_str())
    }

    /// Checks values that would make the simulator meaningless; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let rate = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("--{name} must be within 0..=1, got {v}"))
            }
        };
        rate("error-rate", self.faults.error_rate)?;
        rate("drop-rate", self.faults.drop_rate)?;
        rate("slow-rate", self.faults.slow_rate)?;
        rate("nan-rate", self.faults.nan_rate)?;
        let positive = [
            ("gpus", self.gpus),
            ("dim", self.dim),
            ("max-concurrent-requests", self.max_concurrent_requests),
            ("max-batch-tokens", self.max_batch_tokens),
            ("max-client-batch-size", self.max_client_batch_size),
            ("payload-limit", self.payload_limit),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("--{name} must be at least 1"));
        }
        if self.max_batch_requests == Some(0) {
            return Err("--max-batch-requests must be at least 1".into());
        }
        if let Some(name) = &self.default_prompt_name {
            if self.prompt(name).is_none() {
                return Err(format!("--default-prompt-name {name} is not one of the model's prompts"));
            }
        }
        if self.max_input_length < 3 {
            return Err("--max-input-length must be at least 3 (2 special tokens + 1)".into());
        }
        // TEI refuses this at startup too: an input must fit one batch.
        if self.max_input_length > self.max_batch_tokens {
            return Err(format!(
                "--max-input-length ({}) must be <= --max-batch-tokens ({})",
                self.max_input_length, self.max_batch_tokens
            ));
        }
        let tps_ok = self.tokens_per_second.is_finite() && self.tokens_per_second > 0.0;
        if !self.instant && !tps_ok {
            return Err("--tokens-per-second must be a positive number".into());
        }
        if self.base_port != 0 && usize::from(self.base_port) + self.gpus - 1 > usize::from(u16::MAX) {
            return Err(format!("--base-port {} + --gpus {} runs past port 65535", self.base_port, self.gpus));
        }
        if let Some(o) = self.outages.iter().find(|o| o.gpu >= self.gpus) {
            return Err(format!("--outage names GPU {} but there are {} GPUs", o.gpu, self.gpus));
        }
        Ok(())
    }
}

/// Flags of `tweet-embed dev-tei`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevTeiArgs {
    /// Number of simulated GPUs, one endpoint each.
    #[arg(long, default_value_t = 4)]
    pub gpus: usize,
    /// Port of the first GPU's endpoint; the others follow.
    #[arg(long, default_value_t = 18080)]
    pub base_port: u16,
    /// Boxed so the CLI's `Command` enum stays small (clippy's large_enum_variant).
    #[command(flatten)]
    pub sim: Box<DevTeiFlags>,
}

/// The simulator flags of `dev-tei` beyond GPU count and ports.
#[derive(Debug, Clone, clap::Args)]
pub struct DevTeiFlags {
    /// Model id reported by /info.
    #[arg(long, default_value = "google/embeddinggemma-300m")]
    pub model_id: String,
    /// served_model_name reported by /info (default: the model id).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// model_sha reported by /info (the model's revision).
    #[arg(long, default_value = DEFAULT_MODEL_SHA)]
    pub model_sha: String,
    /// A prompt of the model, NAME=TEXT (repeatable); default: EmbeddingGemma-like prompts
    /// (`query`, `document`, `Classification`, `Clustering`, `STS`, …).
    #[arg(long, value_parser = parse_prompt)]
    pub prompt: Vec<(String, String)>,
    /// The prompt used when a request names none (TEI's --default-prompt-name).
    #[arg(long)]
    pub default_prompt_name: Option<String>,
    /// Act as a TEI router on CPU: max_batch_requests 4 (unless given) and model_dtype float32.
    #[arg(long)]
    pub cpu: bool,
    /// Simulate a padded model, as TEI runs EmbeddingGemma (Gemma3) on every device and any
    /// model without flash attention: a server batch grows while (n + 1) × longest input stays
    /// within --max-batch-tokens and costs n × longest tokens. /metrics reports real and computed
    /// tokens (dev_tei_real_tokens, dev_tei_computed_tokens). Implied by --cpu.
    #[arg(long)]
    pub padded: bool,
    /// Embedding dimension.
    #[arg(long, default_value_t = 768)]
    pub dim: usize,
    /// Concurrency permits per GPU, one per input; over it: 429.
    #[arg(long, default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Token budget of one server batch.
    #[arg(long, default_value_t = 16_384)]
    pub max_batch_tokens: usize,
    /// Inputs per server batch (default: unlimited).
    #[arg(long)]
    pub max_batch_requests: Option<usize>,
    /// Inputs per client request; over it: 422.
    #[arg(long, default_value_t = 32)]
    pub max_client_batch_size: usize,
    /// Tokens per input (the Gemma model's real value is 2048).
    #[arg(long, default_value_t = 512)]
    pub max_input_length: usize,
    /// Request body limit in bytes; over it: 413.
    #[arg(long, default_value_t = 2_000_000)]
    pub payload_limit: usize,
    /// Default of `truncate` when a request omits it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_truncate: bool,
    /// Fixed cost of one server batch, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub base_ms: f64,
    /// GPU throughput within a batch.
    #[arg(long, default_value_t = 20_000.0)]
    pub tokens_per_second: f64,
    /// Zero service time: measure the simulator itself.
    #[arg(long)]
    pub instant: bool,
    /// tokenizer.json of the model; default: a deterministic estimate.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Require `Authorization: Bearer <key>`.
    #[arg(long, env = "TEI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Fraction of requests answered 503 or 424.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction of requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Fraction of requests answered --slow-ms late.
    #[arg(long, default_value_t = 0.0)]
    pub slow_rate: f64,
    /// Extra latency of a slow request, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub slow_ms: u64,
    /// Fraction of texts whose vector is all NaN (JSON nulls, base64 NaN bytes), chosen by text.
    #[arg(long, default_value_t = 0.0)]
    pub nan_rate: f64,
    /// Answer 424 (CublasError) to any request holding an input that contains this text.
    #[arg(long)]
    pub poison: Option<String>,
    /// GPU:START_S:DURATION_S: take a GPU down (connection refused) and bring it back. Repeatable.
    #[arg(long)]
    pub outage: Vec<Outage>,
    /// Seed of the fault RNGs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_prompt(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, text)) if !name.is_empty() => Ok((name.to_string(), text.to_string())),
        _ => Err(format!("`{s}` is not NAME=TEXT")),
    }
}

impl TryFrom<DevTeiArgs> for SimConfig {
    type Error = String;

    fn try_from(args: DevTeiArgs) -> Result<Self, String> {
        let a = *args.sim;
        if !(a.base_ms.is_finite() && a.base_ms >= 0.0) {
            return Err("--base-ms must be a non-negative number".into());
        }
        let config = SimConfig {
            gpus: args.gpus,
            base_port: args.base_port,
            model_id: a.model_id,
            served_model_name: a.served_model_name,
            model_sha: Some(a.model_sha).filter(|s| !s.is_empty()),
            prompts: if a.prompt.is_empty() { gemma_prompts() } else { a.prompt },
            default_prompt_name: a.default_prompt_name,
            cpu: a.cpu,
            padded: a.padded,
            dim: a.dim,
            max_concurrent_requests: a.max_concurrent_requests,
            max_batch_tokens: a.max_batch_tokens,
            max_batch_requests: a.max_batch_requests,
            max_client_batch_size: a.max_client_batch_size,
            max_input_length: a.max_input_length,
            payload_limit: a.payload_limit,
            auto_truncate: a.auto_truncate,
            base: Duration::from_secs_f64(a.base_ms / 1000.0),
            tokens_per_second: a.tokens_per_second,
            instant: a.instant,
            tokenizer: a.tokenizer,
            api_key: a.api_key,
            faults: FaultConfig {
                error_rate: a.error_rate,
                drop_rate: a.drop_rate,
                slow_rate: a.slow_rate,
                slow: Duration::from_millis(a.slow_ms),
                nan_rate: a.nan_rate,
                poison: a.poison.filter(|p| !p.is_empty()),
            },
            outages: a.outage,
            seed: a.seed,
        };
        config.validate()?;
        Ok(config)
    }
}
