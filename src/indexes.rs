//! `tweet-embed indexes`: creates the work-queue and monitoring indexes of DESIGN.md on a
//! collection. Idempotent: existing identical indexes are left as they are.

use anyhow::{anyhow, Result};
use mongodb::bson::Document;
use tweet_embed_operators::mongo::error::describe;

/// Flags of `tweet-embed indexes`.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexesArgs {
    /// The tweets.
    #[command(flatten)]
    pub mongo: crate::config::MongoArgs,
    /// The mark field the work queue's partial filter uses. The default's indexes are
    /// `embedding_work_queue` and `processed_monitor_idx`; another field's get its name appended
    /// (`embedding_work_queue_<field>`), so outputs of several models can share a collection.
    #[arg(long, default_value = "gemma_embedded_768")]
    pub mark_field: String,
    /// Create the collection (with the indexes) if it does not exist yet. Without it a missing
    /// collection is an error: MongoDB would create one silently, and a typo in --collection
    /// would leave an empty indexed collection beside the real one.
    #[arg(long)]
    pub create_missing: bool,
}

/// Creates both indexes; returns their names.
pub async fn create(args: &IndexesArgs) -> Result<Vec<String>> {
    let client = mongodb::Client::with_uri_str(&args.mongo.mongo_uri)
        .await
        .map_err(|e| anyhow!("bad --mongo-uri: {}", describe(&e)))?;
    let db = client.database(&args.mongo.db);
    if !args.create_missing {
        let names = db
            .list_collection_names()
            .await
            .map_err(|e| anyhow!("listing the collections of {}: {}", args.mongo.db, describe(&e)))?;
        if !names.contains(&args.mongo.collection) {
            let mut names = names;
            names.sort();
            let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return Err(anyhow!(
                "no collection {}.{} (its collections: {known}); check --db and --collection, or pass \
                 --create-missing to create it with the indexes",
                args.mongo.db,
                args.mongo.collection
            ));
        }
    }
    let coll = db.collection::<Document>(&args.mongo.collection);
    tweet_embed_operators::mongo::work_queue::create_indexes(&coll, &args.mark_field).await.map_err(|e| match e {
        Ok(conflict) => anyhow!(conflict),
        Err(e) => anyhow!("creating the indexes on {}.{}: {}", args.mongo.db, args.mongo.collection, describe(&e)),
    })
}

/// Runs `tweet-embed indexes`.
pub fn run(args: IndexesArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let names = rt.block_on(create(&args))?;
    crate::say!("indexes on {}.{}: {}", args.mongo.db, args.mongo.collection, names.join(", "));
    Ok(())
}
