//! `tweet-embed demo`: the embedded default. Until the backfill pipeline lands, it starts the dev
//! stack the pipeline will run on — dev-mongo seeded with synthetic tweets and simulated TEI GPUs
//! — prints where they listen and how to try them, and serves until Ctrl-C.

use crate::devmongo::{DevMongo, DevMongoConfig};
use crate::devtei::{DevTei, SimConfig};
use anyhow::{Context, Result};
use mongodb::bson::doc;

/// Flags of `tweet-embed demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Synthetic tweets to seed.
    #[arg(long, default_value_t = 10_000)]
    pub tweets: u64,
    /// Simulated GPUs.
    #[arg(long, default_value_t = 4)]
    pub gpus: usize,
    /// Exit after starting and checking the stack instead of serving until Ctrl-C.
    #[arg(long)]
    pub check: bool,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let mongo = DevMongo::start(DevMongoConfig::default())?;
    mongo.with_store(|s| -> Result<()> {
        for i in 0..args.tweets {
            let lang = ["en", "es", "ja", "pt"][(i % 4) as usize];
            s.insert(
                "twitter_data",
                "tweets",
                doc! {"lang": lang, "classified": true, "text": format!("synthetic tweet {i} 🚀")},
            )
            .map_err(|e| anyhow::anyhow!("seeding: {e}"))?;
        }
        Ok(())
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let tei = runtime.block_on(DevTei::start(SimConfig { gpus: args.gpus, ..SimConfig::default() }))?;
    println!("tweet-embed demo: the dev stack is up (the backfill pipeline is not built yet).");
    println!("  dev-mongo : {}  ({} synthetic tweets in twitter_data.tweets)", mongo.uri(), args.tweets);
    for (i, url) in tei.urls().iter().enumerate() {
        println!("  GPU {i}     : {url}/embed  (simulated TEI, not a model)");
    }
    println!(
        "Try: curl -s {}/embed -H 'content-type: application/json' -d '{{\"inputs\":\"hello\"}}' | head -c 80",
        tei.urls()[0]
    );
    if !args.check {
        println!("Serving until Ctrl-C.");
        crate::devmongo::wait_for_signal()?;
    }
    runtime.block_on(tei.shutdown());
    mongo.shutdown()
}
