//! `tweet-embed backfill`: resolves the flags into a run and hands it to the shared run session
//! ([`crate::session`]: connect, progress, metrics, summary) with the engine's one-shot backfill.

use crate::config::PipelineArgs;
use crate::session::{execute, print_follower_summary, print_summary};
use anyhow::Result;
use tweet_embed_operators::run::Engine;

/// Runs the backfill of `args` and prints its summary.
pub fn run(args: &PipelineArgs) -> Result<()> {
    let config = args.resolve()?;
    let summary = execute(config, args.metrics_addr, Engine::backfill)?;
    if args.cluster.leads() {
        print_summary("backfill", &summary, &args.out);
    } else {
        print_follower_summary("backfill", &summary, args.cluster.process);
    }
    Ok(())
}
