//! The command line: one subcommand per user task. Parsing only; the work lives in the library.

use clap::{Parser, Subcommand};

/// Embeds a MongoDB collection of tweets with TEI servers into Parquet.
#[derive(Debug, Parser)]
#[command(name = "tweet-embed", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `tweet_embed=debug`.
    #[arg(long, global = true, env = "TWEET_EMBED_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embeds every document of the work queue once, then exits (the one-shot backfill).
    Backfill(Box<crate::config::PipelineArgs>),
    /// Embeds the backfill and then new tweets as they arrive, until SIGINT/SIGTERM.
    Run(Box<crate::run::RunArgs>),
    /// Progress from the two indexes and the checkpoint: done, remaining, rate, ETA, cost.
    Status(crate::status::StatusArgs),
    /// Creates the work-queue and monitoring indexes (idempotent).
    Indexes(crate::indexes::IndexesArgs),
    /// Merges small Parquet files of vectors (ours or the old scripts') into large ones.
    Consolidate(crate::consolidate::ConsolidateArgs),
    /// Runs the embedded default: dev-mongo with synthetic tweets and simulated TEI GPUs.
    Demo(crate::demo::DemoArgs),
    /// Runs the MongoDB wire-protocol dev server on loopback (a dev server, not a database).
    DevMongo(crate::devmongo::DevMongoArgs),
    /// Runs simulated TEI GPUs, one HTTP endpoint per GPU, on loopback.
    DevTei(crate::devtei::DevTeiArgs),
}
