//! Flags shared by the commands that run the pipeline (`backfill` and `run`), and their
//! resolution into the engine's [`RunConfig`], which runs without the CLI.

use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Duration;
use tweet_embed_operators::mongo::error::RetryPolicy;
use tweet_embed_operators::run::RunConfig;
#[cfg(feature = "test-hooks")]
use tweet_embed_operators::run::TestHooks;
use tweet_embed_operators::table::output::IdType;
use tweet_embed_operators::tei::{Api, Concurrency, EmbedOptions, PoolConfig, RequestOrder, TruncationDirection};

/// Parses `500ms`, `5s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 5s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `--api`: `auto`, `tei` or `openai`.
pub fn parse_api(s: &str) -> Result<Api, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Api::Auto),
        "tei" | "native" => Ok(Api::Tei),
        "openai" => Ok(Api::OpenAi),
        other => Err(format!("`{other}` is not a TEI API: use auto, tei or openai")),
    }
}

/// `--id-type`: `auto` (decided at the first start from the collection's smallest and largest
/// `_id`), or the type of the output's `id` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdTypeArg(pub Option<IdType>);

/// Parses `--id-type`: `auto`, `int64`, `string`, `objectid` or `extjson`.
pub fn parse_id_type(s: &str) -> Result<IdTypeArg, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(IdTypeArg(None));
    }
    s.parse()
        .map(|t| IdTypeArg(Some(t)))
        .map_err(|_| format!("`{}` is not an id type: use auto, int64, string, objectid or extjson", s.trim()))
}

/// Which collection of which MongoDB: the flags every command that reads tweets shares.
#[derive(Debug, Clone, clap::Args)]
pub struct MongoArgs {
    /// MongoDB connection string (a replica set for continuous mode).
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?directConnection=true",
        hide_env_values = true
    )]
    pub mongo_uri: String,
    /// Database.
    #[arg(long, default_value = "twitter_data")]
    pub db: String,
    /// Collection of tweets.
    #[arg(long, default_value = "tweets")]
    pub collection: String,
}

impl MongoArgs {
    /// `twitter_data.tweets` at `uri`.
    pub fn tweets_at(uri: impl Into<String>) -> MongoArgs {
        MongoArgs { mongo_uri: uri.into(), db: "twitter_data".into(), collection: "tweets".into() }
    }

    /// The engine's target.
    pub fn target(&self) -> tweet_embed_operators::run::MongoTarget {
        tweet_embed_operators::run::MongoTarget {
            uri: self.mongo_uri.clone(),
            db: self.db.clone(),
            collection: self.collection.clone(),
        }
    }
}

/// How the vectors are made (TEI's `prompt_name`, `dimensions`, `normalize`,
/// `truncation_direction`), shared by the pipeline and `autotune`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EmbedOptionArgs {
    /// A prompt of the model's that TEI prepends to every text, e.g. `document` for
    /// EmbeddingGemma (`config_sentence_transformers.json` names them). Needs the /embed route.
    #[arg(long)]
    pub prompt_name: Option<String>,
    /// Matryoshka truncation of the vectors to this many dimensions (EmbeddingGemma: 768, 512,
    /// 256 or 128); the output's vector width follows. The marks say which vectors a document
    /// has: pick a --mark-field that names the width (the default is gemma_embedded_768).
    #[arg(long)]
    pub dimensions: Option<usize>,
    /// Whether TEI normalizes vectors to unit length (TEI's default: true). Needs /embed.
    #[arg(long)]
    pub normalize: Option<bool>,
    /// Which end TEI keeps of a text over the model's input length: `right` cuts the end (TEI's
    /// default), `left` keeps a tweet's end. Needs /embed.
    #[arg(long, value_parser = parse_direction)]
    pub truncation_direction: Option<TruncationDirection>,
}

impl EmbedOptionArgs {
    /// The engine's options.
    pub fn options(&self) -> EmbedOptions {
        EmbedOptions {
            prompt_name: self.prompt_name.clone(),
            dimensions: self.dimensions,
            normalize: self.normalize,
            truncation_direction: self.truncation_direction,
        }
    }
}

fn parse_direction(s: &str) -> Result<TruncationDirection, String> {
    s.parse()
}

/// Flags of `tweet-embed backfill` (and `run`), declared and shown under help headings in the
/// order of a deployment: MongoDB, TEI, Model, Output, Run, Cluster (then the global Logging
/// flags). A heading's place in `-h` is where its first flag is declared, so keep each field
/// with its heading.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// The tweets.
    #[command(flatten, next_help_heading = "MongoDB")]
    pub mongo: MongoArgs,
    /// Field holding the tweet's text.
    #[arg(long, help_heading = "MongoDB", default_value = "text")]
    pub text_field: String,
    /// Field set when a document is done (`true` embedded, `false` rejected).
    #[arg(long, help_heading = "MongoDB", default_value = "gemma_embedded_768")]
    pub mark_field: String,
    /// Only these languages (comma-separated).
    #[arg(long, help_heading = "MongoDB", value_delimiter = ',')]
    pub lang: Option<Vec<String>>,
    /// Only documents with this `classified` value.
    #[arg(long, help_heading = "MongoDB")]
    pub classified: Option<bool>,
    /// The longest wait between tries of a MongoDB operation that failed with an error that
    /// heals (an election, a dropped connection); tries go on for as long as it lasts.
    #[arg(long, help_heading = "MongoDB", default_value = "5s", value_parser = parse_duration, hide = true)]
    pub mongo_retry_max: Duration,
    /// TEI endpoints, comma-separated, one per GPU (`/embed` suffix accepted).
    #[arg(long, help_heading = "TEI", value_delimiter = ',', required = true)]
    pub tei_urls: Vec<String>,
    /// TEI route: `auto` (base64 vectors from /v1/embeddings where the servers allow), `tei`
    /// (/embed, JSON floats) or `openai` (/v1/embeddings, base64).
    #[arg(long, help_heading = "TEI", default_value = "auto", value_parser = parse_api)]
    pub api: Api,
    /// Bearer token for TEI (`--api-key` on the servers); `TEI_API_KEY` is read too.
    #[arg(long, help_heading = "TEI", env = "TWEET_EMBED_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// At most this many texts per request (the server's max_client_batch_size otherwise); never
    /// more than the server's permits (--max-concurrent-requests: TEI takes one per input).
    #[arg(long, help_heading = "TEI")]
    pub batch_size: Option<usize>,
    /// Pins the requests in flight per TEI endpoint (capped so their inputs fit the server's
    /// permits, and eased for a while after a 429); adaptive per endpoint when not given.
    #[arg(long, help_heading = "TEI")]
    pub concurrency: Option<usize>,
    /// Bounds the adaptive concurrency so request latency stays under this (e.g. 10s).
    #[arg(long, help_heading = "TEI", value_parser = parse_duration)]
    pub p95_slo: Option<Duration>,
    /// Order texts are cut into requests: `length` (neighbouring token lengths, one sweep up and down:
    /// TEI pads each server batch of a padded model, EmbeddingGemma among them, to its longest
    /// input) or `arrival` (as read; pads most).
    #[arg(long, help_heading = "TEI", default_value = "length")]
    pub request_order: RequestOrder,
    /// How the vectors are made.
    #[command(flatten, next_help_heading = "Model")]
    pub embed: EmbedOptionArgs,
    /// The model's tokenizer.json, for exact token counts (an estimate otherwise).
    #[arg(long, help_heading = "Model")]
    pub tokenizer: Option<PathBuf>,
    /// Output directory for the final Parquet files (cold storage).
    #[arg(long, help_heading = "Output")]
    pub out: PathBuf,
    /// Directory for the checkpoint (hot storage).
    #[arg(long, help_heading = "Output")]
    pub state_dir: PathBuf,
    /// Directory for files being written (hot storage); default `<state-dir>/tmp`.
    #[arg(long, help_heading = "Output")]
    pub tmp_dir: Option<PathBuf>,
    /// Where committed epochs' small files wait for compaction (hot storage; readers of --out
    /// never see them); default `<state-dir>/staging`, and `<out>/_staging` in a cluster, where
    /// it must be shared by every process.
    #[arg(long, help_heading = "Output")]
    pub staging_dir: Option<PathBuf>,
    /// Type of the output's `id` column: `int64`, `string`, `objectid` (24 hex digits) or
    /// `extjson` (extended JSON, for collections of mixed `_id` types); `auto` decides at the first
    /// start from the smallest and largest `_id`. Recorded in the checkpoint: a later run cannot
    /// change it. An `_id` that does not fit is rejected with the reason.
    #[arg(long, help_heading = "Output", default_value = "auto", value_parser = parse_id_type)]
    pub id_type: IdTypeArg,
    /// Size of the files compaction writes into --out, e.g. `512MiB`, `1GB` or bytes. Below it
    /// only the tail: one file of each kind when a backfill ends, and in `run` files older than
    /// --max-file-age.
    #[arg(long, help_heading = "Output", default_value = "512MiB", value_parser = crate::consolidate::parse_size)]
    pub target_file_bytes: u64,
    /// In `run`, staged rows are compacted into --out once the oldest has waited this long, even
    /// below --target-file-bytes, so fresh rows become visible.
    #[arg(long, help_heading = "Output", default_value = "1h", value_parser = parse_duration)]
    pub max_file_age: Duration,
    /// A tweet deleted in MongoDB (seen by the change stream, or found by `reconcile`) leaves the
    /// files in --out within this time: files holding deleted rows are rewritten without them.
    #[arg(long, help_heading = "Output", default_value = "24h", value_parser = parse_duration)]
    pub delete_within: Duration,
    /// When this run's settings or servers would make other vectors than the output holds
    /// (another model, revision, dimension, prompt …): delete the output and its checkpoint and
    /// clear the marks, so everything is embedded again. Without it such a run refuses.
    #[arg(long, help_heading = "Output")]
    pub reset_output: bool,
    /// Commit and mark an epoch even when nearly all of it is rejected for one reason, or most
    /// of it are strays. Without it such an epoch (the mark of a wrong --text-field or --id-type)
    /// stops the run before anything of it is marked.
    #[arg(long, help_heading = "Output")]
    pub allow_mass_rejection: bool,
    /// Worker threads (per process in a cluster).
    #[arg(long, help_heading = "Run", default_value_t = 2)]
    pub workers: usize,
    /// Time between checkpoints (epochs close at this interval).
    #[arg(long, help_heading = "Run", default_value = "5s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// On SIGTERM/SIGINT, how long `run` waits for the epochs in flight to commit before it
    /// exits non-zero saying what was still in flight (the next start resumes from the
    /// checkpoint, so nothing is lost).
    #[arg(long, help_heading = "Run", default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// A run that makes no progress while work remains warns this often, with its best guess
    /// why (and `tweet_embed_stalled_seconds` on /metrics counts up).
    #[arg(long, help_heading = "Run", default_value = "60s", value_parser = parse_duration)]
    pub stall_warning: Duration,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9898`), path `/metrics`.
    #[arg(long, help_heading = "Run")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Test hook: abort right after the n-th commit is saved, before marking, to prove that
    /// recovery re-marks committed epochs.
    #[cfg(feature = "test-hooks")]
    #[arg(long, help_heading = "Run", hide = true, env = "TWEET_EMBED_CRASH_AFTER_COMMIT")]
    pub crash_after_commit: Option<u64>,
    /// Test hook: pause compaction after writing a merged file and after recording its switch,
    /// so a crash test can kill the process while a compaction is under way.
    #[cfg(feature = "test-hooks")]
    #[arg(long, help_heading = "Run", hide = true, value_parser = parse_duration, env = "TWEET_EMBED_COMPACTION_PAUSE")]
    pub compaction_pause: Option<Duration>,
    /// Running as one process of a cluster.
    #[command(flatten, next_help_heading = "Cluster")]
    pub cluster: crate::cluster::ClusterArgs,
}

impl PipelineArgs {
    /// The run's settings: these flags (environment and config file already layered in by clap)
    /// checked and resolved. The API key falls back to `TEI_API_KEY`; the hostfile is read.
    /// Errors name the flag to fix.
    pub fn resolve(&self) -> Result<RunConfig> {
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        if self.workers > cores {
            tracing::warn!(
                workers = self.workers,
                cores,
                "--workers {} is more than this machine's {cores} cores: each worker is a thread with its own \
                 buffers, so past the cores they add memory and switching, not speed (the GPUs are fed by one \
                 batching worker per process)",
                self.workers
            );
        }
        if self.tei_urls.iter().all(|u| u.trim().is_empty()) {
            bail!("--tei-urls needs at least one URL");
        }
        // A URL that cannot work (no scheme, another scheme) is said before anything starts.
        for url in self.tei_urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            tweet_embed_operators::tei::base_url(url)?;
        }
        let dirs = [
            ("--out", Some(&self.out), "the Parquet files are written into"),
            ("--state-dir", Some(&self.state_dir), "the checkpoint is kept in"),
            ("--tmp-dir", self.tmp_dir.as_ref(), "files being written are kept in"),
            ("--staging-dir", self.staging_dir.as_ref(), "committed files wait in"),
        ];
        for (flag, dir, what) in dirs {
            if let Some(dir) = dir {
                directory_or_absent(flag, dir, what)?;
            }
        }
        if self.batch_size == Some(0) || self.concurrency == Some(0) {
            bail!("--batch-size and --concurrency must be at least 1");
        }
        if self.stall_warning.is_zero() || self.mongo_retry_max.is_zero() {
            bail!("--stall-warning and --mongo-retry-max must be positive, e.g. 60s");
        }
        if self.checkpoint_interval.is_zero() || self.delete_within.is_zero() {
            bail!("--checkpoint-interval and --delete-within must be positive, e.g. 5s and 24h");
        }
        if self.p95_slo.is_some_and(|slo| slo.is_zero()) {
            bail!("--p95-slo must be positive, e.g. 10s");
        }
        let mut tei = PoolConfig::new(self.tei_urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()));
        tei.api = self.api;
        tei.api_key =
            self.api_key.clone().or_else(|| std::env::var("TEI_API_KEY").ok()).filter(|key| !key.trim().is_empty());
        tei.batch_size = self.batch_size;
        tei.tokenizer = self.tokenizer.clone();
        tei.concurrency = self.concurrency.map_or(Concurrency::Adaptive, Concurrency::Fixed);
        tei.p95_slo = self.p95_slo;
        tei.order = self.request_order;
        tei.options = self.embed.options();
        Ok(RunConfig {
            mongo: self.mongo.target(),
            tei,
            out: self.out.clone(),
            state_dir: self.state_dir.clone(),
            tmp_dir: self.tmp_dir.clone().unwrap_or_else(|| self.state_dir.join("tmp")),
            workers: self.workers,
            cluster: self.cluster.resolve()?,
            text_field: self.text_field.clone(),
            mark_field: self.mark_field.clone(),
            langs: self.lang.clone(),
            classified: self.classified,
            checkpoint_interval: self.checkpoint_interval,
            target_file_bytes: self.target_file_bytes,
            id_type: self.id_type.0,
            staging_dir: self.staging_dir.clone(),
            max_file_age: self.max_file_age,
            delete_within: self.delete_within,
            mongo_retry: RetryPolicy {
                first: Duration::from_millis(100).min(self.mongo_retry_max),
                max: self.mongo_retry_max,
            },
            stall_warn_every: self.stall_warning,
            drain_timeout: self.drain_timeout,
            reset_output: self.reset_output,
            allow_mass_rejection: self.allow_mass_rejection,
            #[cfg(feature = "test-hooks")]
            hooks: TestHooks { crash_after_commit: self.crash_after_commit, compaction_pause: self.compaction_pause },
        })
    }
}

/// Refuses a directory flag naming something that exists and is not a directory (a file, say
/// `--out vectors.parquet`), saying what the flag is for and a directory to give instead.
fn directory_or_absent(flag: &str, path: &std::path::Path, what: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => {
            let instead = match path.extension() {
                Some(_) if !path.with_extension("").exists() => {
                    format!(", e.g. {flag} {}", path.with_extension("").display())
                }
                _ => String::new(),
            };
            bail!(
                "{flag} {} is a file, not a directory: {flag} names the directory {what} (created if missing); \
                 give a directory{instead}",
                path.display()
            )
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> PipelineArgs {
        #[derive(clap::Parser)]
        struct Top {
            #[command(flatten)]
            args: PipelineArgs,
        }
        let base = ["x", "--tei-urls", "http://a", "--out", "/o", "--state-dir", "/s"];
        <Top as clap::Parser>::parse_from(base.iter().chain(extra)).args
    }

    #[test]
    fn concurrency_adapts_unless_pinned_and_the_slo_and_api_pass_through() {
        let config = args(&[]).resolve().unwrap();
        let tei = &config.tei;
        assert_eq!((tei.concurrency, tei.p95_slo, tei.api), (Concurrency::Adaptive, None, Api::Auto));
        assert_eq!(config.tmp_dir, PathBuf::from("/s/tmp"));
        let config =
            args(&["--concurrency", "3", "--p95-slo", "10s", "--api", "openai", "--api-key", "k"]).resolve().unwrap();
        let tei = &config.tei;
        assert_eq!((tei.concurrency, tei.p95_slo), (Concurrency::Fixed(3), Some(Duration::from_secs(10))));
        assert_eq!((tei.api, tei.api_key.as_deref()), (Api::OpenAi, Some("k")));
        assert!(args(&["--workers", "0"]).resolve().unwrap_err().to_string().contains("--workers"));
        let config = args(&[]).resolve().unwrap();
        assert_eq!((config.drain_timeout, config.stall_warn_every), (Duration::from_secs(60), Duration::from_secs(60)));
        let config = args(&["--drain-timeout", "2s", "--stall-warning", "1s"]).resolve().unwrap();
        assert_eq!((config.drain_timeout, config.stall_warn_every), (Duration::from_secs(2), Duration::from_secs(1)));
    }

    #[test]
    fn the_id_type_is_auto_unless_given() {
        assert_eq!(args(&[]).resolve().unwrap().id_type, None);
        assert_eq!(args(&["--id-type", "int64"]).resolve().unwrap().id_type, Some(IdType::Int64));
        assert_eq!(args(&["--id-type", "AUTO"]).resolve().unwrap().id_type, None);
        let err = parse_id_type("uuid").unwrap_err();
        assert!(err.contains("auto, int64, string, objectid or extjson"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
