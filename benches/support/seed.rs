//! A fresh work queue for a benchmark run: synthetic tweets in in-process dev-mongo, and the
//! indexes the pipeline needs.

use dev_mongo::DevMongo;

/// Replaces dev-mongo's contents with `n` synthetic tweets of `seed`, creates the indexes, and
/// returns how many the pipeline will embed or reject.
pub fn fresh_work_queue(rt: &tokio::runtime::Runtime, mongo: &DevMongo, n: u64, seed: u64) -> u64 {
    let mut eligible = 0;
    mongo.with_store(|s| {
        s.dbs.clear();
        for i in 0..n {
            if matches!(
                tweet_embed::synth::kind_of(i, seed),
                tweet_embed::synth::Kind::Good | tweet_embed::synth::Kind::Bad
            ) {
                eligible += 1;
            }
            s.insert("twitter_data", "tweets", tweet_embed::synth::tweet(i, seed)).expect("seed");
        }
    });
    rt.block_on(tweet_embed::indexes::create(&tweet_embed::indexes::IndexesArgs {
        mongo: tweet_embed::config::MongoTarget::tweets_at(mongo.uri()),
        mark_field: "gemma_embedded_768".into(),
    }))
    .expect("indexes");
    eligible
}
