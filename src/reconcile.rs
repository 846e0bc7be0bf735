//! `tweet-embed reconcile`: ids in the output whose tweet is no longer in the collection become
//! recorded deletions (`_deletions/`), and the output files holding them are rewritten without
//! them. For deletions the change stream could not show: made in a gap after its history was
//! lost (the run says so once in its log), or while nothing was following the stream. The
//! library is `tweet_embed_operators::table::reconcile`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use mongodb::bson::Document;
use tweet_embed_operators::mongo::error::describe;
use tweet_embed_operators::table::reconcile::{reconcile, ReconcileTarget};

/// Flags of `tweet-embed reconcile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// The tweets.
    #[command(flatten)]
    pub mongo: crate::config::MongoArgs,
    /// The output directory of the run.
    #[arg(long)]
    pub out: PathBuf,
    /// The run's state directory (no run may be using it: reconcile takes its lock).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The run's staging directory, if it set one; default `<state-dir>/staging`.
    #[arg(long)]
    pub staging_dir: Option<PathBuf>,
    /// Count the ids whose tweet is gone, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Record the deletions even when most of the output's ids are missing from the collection
    /// (refused without it: that usually means the wrong --db, --collection or --out).
    #[arg(long)]
    pub force: bool,
}

/// Runs `tweet-embed reconcile`: one line saying what it checked and what it did.
pub fn run(args: ReconcileArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let coll = rt.block_on(async {
        let client = mongodb::Client::with_uri_str(&args.mongo.mongo_uri)
            .await
            .map_err(|e| anyhow!("bad --mongo-uri: {}", describe(&e)))?;
        Ok::<_, anyhow::Error>(client.database(&args.mongo.db).collection::<Document>(&args.mongo.collection))
    })?;
    let target = ReconcileTarget {
        staging_dir: args.staging_dir.clone().unwrap_or_else(|| args.state_dir.join("staging")),
        out: args.out.clone(),
        state_dir: args.state_dir.clone(),
        dry_run: args.dry_run,
        force: args.force,
    };
    let found = reconcile(&target, &coll, rt.handle())?;
    let what = format!(
        "reconcile: checked {} ids in {} files against {}.{}: {} no longer there",
        found.checked, found.files, args.mongo.db, args.mongo.collection, found.missing
    );
    match &found.deletion_file {
        Some(file) => crate::say!(
            "{what}; recorded in {} and removed from {} output file{}",
            file.display(),
            found.rewritten,
            if found.rewritten == 1 { "" } else { "s" }
        ),
        None if args.dry_run && found.missing > 0 => crate::say!("{what} (dry run: nothing recorded)"),
        None => crate::say!("{what}"),
    }
    if found.unreadable > 0 {
        crate::say!("reconcile: {} ids were not written by tweet-embed and were left alone", found.unreadable);
    }
    Ok(())
}
