//! The command line: one subcommand per user task, and an environment variable for every flag
//! (`TWEET_EMBED_<FLAG>` unless it has a conventional one). Parsing only; the work lives in the
//! command modules and the libraries.

use clap::{CommandFactory, Parser, Subcommand};

/// Embeds a MongoDB collection of tweets with TEI servers into Parquet.
#[derive(Debug, Parser)]
#[command(name = "tweet-embed", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `tweet_embed=debug`.
    #[arg(long, global = true, help_heading = LOGGING, env = "TWEET_EMBED_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as text for people or JSON for machines.
    #[arg(long, global = true, help_heading = LOGGING, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// A TOML file of flag values (`batch_size = 32`); flags and environment variables win.
    #[arg(long, global = true, env = "TWEET_EMBED_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// What to run, listed in the order of a deployment: `indexes` first.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Creates the work-queue and monitoring indexes (idempotent).
    Indexes(crate::indexes::IndexesArgs),
    /// Embeds every document of the work queue once, then exits (the one-shot backfill).
    Backfill(Box<crate::config::PipelineArgs>),
    /// Embeds the backfill and then new tweets as they arrive, until SIGINT/SIGTERM.
    Run(Box<crate::run::RunArgs>),
    /// Shows the effective settings of a command (`config print run …`), secrets redacted.
    Config(crate::config_file::ConfigArgs),
    /// Sweeps batch size × concurrency on a sample and recommends a setting meeting a p95 SLO.
    Autotune(Box<crate::autotune::AutotuneArgs>),
    /// Progress from the two indexes and the checkpoint: done, remaining, rate, ETA, cost.
    Status(crate::status::StatusArgs),
    /// Clears the marks of rejections matching a reason, so the next run embeds them again.
    Requeue(crate::requeue::RequeueArgs),
    /// Records as deletions the output ids whose tweet is gone from the collection, and removes them.
    Reconcile(crate::reconcile::ReconcileArgs),
    /// Merges small Parquet files of vectors (ours or the old scripts') into large ones.
    Consolidate(crate::consolidate::ConsolidateArgs),
    /// Runs the embedded default: dev-mongo with synthetic tweets and simulated TEI GPUs.
    #[cfg(feature = "dev")]
    Demo(crate::demo::DemoArgs),
    /// Runs the MongoDB wire-protocol dev server on loopback (a dev server, not a database).
    #[cfg(feature = "dev")]
    DevMongo(dev_mongo::DevMongoArgs),
    /// Runs simulated TEI GPUs, one HTTP endpoint per GPU, on loopback.
    #[cfg(feature = "dev")]
    DevTei(dev_tei::DevTeiArgs),
}

/// The help heading of the log flags, shown last, after the pipeline's MongoDB, TEI, Model,
/// Output, Run and Cluster headings (`crate::config::PipelineArgs`).
pub const LOGGING: &str = "Logging";

/// The flags of `run` beyond `backfill`'s, shown under the pipeline's "Run" heading.
const RUN_FLAGS: [&str; 2] = ["no_backfill", "no_stream"];

/// The environment variable of a flag without a conventional one.
pub fn env_name(id: &str) -> String {
    format!("TWEET_EMBED_{}", id.to_uppercase())
}

/// The CLI with an environment variable on every flag.
pub fn command() -> clap::Command {
    with_env(Cli::command()).mut_subcommand("run", |run| {
        run.mut_args(|a| if RUN_FLAGS.contains(&a.get_id().as_str()) { a.help_heading("Run") } else { a })
    })
}

fn with_env(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if a.get_env().is_none() && a.get_long().is_some() && a.get_id() != "help" && a.get_id() != "version" {
            let name = env_name(a.get_id().as_str());
            a.env(name)
        } else {
            a
        }
    })
    .mut_subcommands(with_env)
}
