//! Seeding: synthetic tweets in in-process dev-mongo and the indexes the pipeline needs, the one
//! way the tests, the benches and the demo fill a work queue.

use anyhow::{anyhow, Context, Result};
use dev_mongo::DevMongo;
use mongodb::bson::Document;

use crate::synth::{kind_of, tweet, Kind};

/// The database the synthetic tweets go to.
pub const DB: &str = "twitter_data";
/// The collection the synthetic tweets go to.
pub const COLLECTION: &str = "tweets";
/// The pipeline's default mark field, which the indexes are created for.
pub const MARK_FIELD: &str = "gemma_embedded_768";

/// What was seeded: tweets `0..n` of `seed`.
pub struct Seeded {
    pub n: u64,
    pub seed: u64,
}

impl Seeded {
    /// How many of them are in the work queue (to embed or to reject).
    pub fn eligible(&self) -> usize {
        (0..self.n).filter(|i| matches!(kind_of(*i, self.seed), Kind::Good | Kind::Bad)).count()
    }
}

/// Inserts tweets `0..n` of `seed` into `twitter_data.tweets` straight into the store: memory
/// speed, no driver, no indexes.
pub fn insert_tweets(mongo: &DevMongo, n: u64, seed: u64) -> Result<Seeded> {
    insert_range(mongo, 0..n, seed)?;
    Ok(Seeded { n, seed })
}

/// Inserts tweets `range` of `seed` (as [`insert_tweets`]), for a caller that shows progress
/// between ranges.
pub fn insert_range(mongo: &DevMongo, range: std::ops::Range<u64>, seed: u64) -> Result<()> {
    mongo.with_store(|s| {
        for i in range {
            s.insert(DB, COLLECTION, tweet(i, seed)).map_err(|e| anyhow!("seeding: {e}"))?;
        }
        Ok(())
    })
}

/// Creates the pipeline's work-queue and monitoring indexes (for [`MARK_FIELD`]) on
/// `twitter_data.tweets` through the driver; returns their names.
pub async fn create_indexes(mongo: &DevMongo) -> Result<Vec<String>> {
    let client = mongodb::Client::with_uri_str(mongo.uri()).await.context("connecting to dev-mongo")?;
    let coll = client.database(DB).collection::<Document>(COLLECTION);
    tweet_embed_operators::mongo::work_queue::create_indexes(&coll, MARK_FIELD).await.map_err(|e| match e {
        Ok(conflict) => anyhow::anyhow!(conflict),
        Err(e) => anyhow::Error::new(e).context(format!("creating the indexes on {DB}.{COLLECTION}")),
    })
}

/// A work queue: [`insert_tweets`], then [`create_indexes`].
pub async fn seed_work_queue(mongo: &DevMongo, n: u64, seed: u64) -> Result<Seeded> {
    let seeded = insert_tweets(mongo, n, seed)?;
    create_indexes(mongo).await?;
    Ok(seeded)
}

/// [`seed_work_queue`] for a test outside a runtime: it runs on a runtime of its own and panics
/// when seeding fails.
pub fn seed(mongo: &DevMongo, n: u64, seed: u64) -> Seeded {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    rt.block_on(seed_work_queue(mongo, n, seed)).expect("seeding")
}

/// A fresh work queue for a benchmark run: replaces dev-mongo's contents with tweets `0..n` of
/// `seed` and the indexes, and returns how many the pipeline will embed or reject.
pub fn fresh_work_queue(rt: &tokio::runtime::Runtime, mongo: &DevMongo, n: u64, seed: u64) -> u64 {
    mongo.with_store(|s| s.dbs.clear());
    let seeded = rt.block_on(seed_work_queue(mongo, n, seed)).expect("seeding");
    seeded.eligible() as u64
}

/// A work queue of the test's own documents: inserts `docs` as they are into
/// `twitter_data.tweets` of `stack`'s dev-mongo (straight into the store), then creates the
/// indexes ([`create_indexes`]); panics when either fails.
pub fn insert_docs(stack: &crate::Stack, docs: &[Document]) {
    stack.mongo.with_store(|s| {
        for d in docs {
            s.insert(DB, COLLECTION, d.clone()).expect("insert");
        }
    });
    stack.rt.block_on(create_indexes(&stack.mongo)).expect("indexes");
}
