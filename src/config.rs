//! Flags shared by the commands that run the pipeline (`backfill`, later `run`), and their
//! validation into a [`PipelineConfig`] the library runs without the CLI.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;
use tweet_embed_operators::tei::Api;

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

/// Which collection of which MongoDB: the flags every command that reads tweets shares.
#[derive(Debug, Clone, clap::Args)]
pub struct MongoTarget {
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

impl MongoTarget {
    /// `twitter_data.tweets` at `uri`.
    pub fn tweets_at(uri: impl Into<String>) -> MongoTarget {
        MongoTarget { mongo_uri: uri.into(), db: "twitter_data".into(), collection: "tweets".into() }
    }
}

/// Flags of `tweet-embed backfill`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// The tweets.
    #[command(flatten)]
    pub mongo: MongoTarget,
    /// TEI endpoints, comma-separated, one per GPU (`/embed` suffix accepted).
    #[arg(long, value_delimiter = ',', required = true)]
    pub tei_urls: Vec<String>,
    /// Output directory for the final Parquet files (cold storage).
    #[arg(long)]
    pub out: PathBuf,
    /// Directory for the checkpoint (hot storage).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Directory for files being written (hot storage); default `<state-dir>/tmp`.
    #[arg(long)]
    pub tmp_dir: Option<PathBuf>,
    /// Worker threads (per process in a cluster).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Running as one process of a cluster.
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
    /// Field holding the tweet's text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field set when a document is done (`true` embedded, `false` rejected).
    #[arg(long, default_value = "gemma_embedded_768")]
    pub mark_field: String,
    /// Only these languages (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub lang: Option<Vec<String>>,
    /// Only documents with this `classified` value.
    #[arg(long)]
    pub classified: Option<bool>,
    /// At most this many texts per request (the server's max_client_batch_size otherwise).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Pins the requests in flight per TEI endpoint; adaptive per endpoint when not given.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Bounds the adaptive concurrency so request latency stays under this (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    pub p95_slo: Option<Duration>,
    /// TEI route: `auto` (base64 vectors from /v1/embeddings where the servers allow), `tei`
    /// (/embed, JSON floats) or `openai` (/v1/embeddings, base64).
    #[arg(long, default_value = "auto", value_parser = parse_api)]
    pub api: Api,
    /// The model's tokenizer.json, for exact token counts (an estimate otherwise).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Time between checkpoints (epochs close at this interval).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// Target size of output files.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub target_file_bytes: u64,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9898`), path `/metrics`.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Bearer token for TEI (`--api-key` on the servers); `TEI_API_KEY` is read too.
    #[arg(long, env = "TWEET_EMBED_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl PipelineArgs {
    /// The defaults of every flag, for `mongo`, `tei_urls` and a working directory `dir`
    /// (`dir/out`, `dir/state`); what the demo and tests start from.
    pub fn with_defaults(mongo: MongoTarget, tei_urls: Vec<String>, dir: &std::path::Path) -> PipelineArgs {
        PipelineArgs {
            mongo,
            tei_urls,
            out: dir.join("out"),
            state_dir: dir.join("state"),
            tmp_dir: None,
            workers: 2,
            cluster: crate::cluster::ClusterArgs::default(),
            text_field: "text".into(),
            mark_field: "gemma_embedded_768".into(),
            lang: None,
            classified: None,
            batch_size: None,
            concurrency: None,
            p95_slo: None,
            api: Api::Auto,
            tokenizer: None,
            checkpoint_interval: Duration::from_secs(5),
            target_file_bytes: 512 * 1024 * 1024,
            api_key: None,
            metrics_addr: None,
        }
    }

    /// Checks what can be checked before connecting anywhere.
    pub fn validate(&self) -> Result<()> {
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        self.cluster.addresses()?;
        if self.tei_urls.iter().all(|u| u.trim().is_empty()) {
            bail!("--tei-urls needs at least one URL");
        }
        if self.batch_size == Some(0) || self.concurrency == Some(0) {
            bail!("--batch-size and --concurrency must be at least 1");
        }
        if self.p95_slo.is_some_and(|slo| slo.is_zero()) {
            bail!("--p95-slo must be positive, e.g. 10s");
        }
        std::fs::create_dir_all(&self.out).with_context(|| format!("cannot create --out {}", self.out.display()))?;
        std::fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("cannot create --state-dir {}", self.state_dir.display()))?;
        Ok(())
    }

    /// The hot directory for files being written.
    pub fn tmp_dir(&self) -> PathBuf {
        self.tmp_dir.clone().unwrap_or_else(|| self.state_dir.join("tmp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
