//! Wiring the TEI endpoint pool into the graph: the pool from the command's flags, and the
//! pieces the operators take from it (the embedder, the token counter, request limits).

use crate::config::PipelineArgs;
use anyhow::{anyhow, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tweet_embed_operators::dedup::TokenCounter;
use tweet_embed_operators::embed_sink::{Embedder, Outcome};
use tweet_embed_operators::tei::{Concurrency, EndpointPool, PackLimits, PoolConfig};

/// The pool as the TEI sink's [`Embedder`].
struct PoolEmbedder(Arc<EndpointPool>);

impl Embedder for PoolEmbedder {
    fn embed(&self, texts: Vec<String>) -> Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'static>> {
        let pool = self.0.clone();
        Box::pin(async move { pool.embed(texts).await })
    }
}

/// The pool's configuration from the command's flags: concurrency adaptive unless
/// `--concurrency` pins it, the API key from `--api-key`, `TWEET_EMBED_API_KEY` or `TEI_API_KEY`.
pub fn pool_config(args: &PipelineArgs) -> PoolConfig {
    let mut config = PoolConfig::new(args.tei_urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()));
    config.api = args.api;
    config.api_key =
        args.api_key.clone().or_else(|| std::env::var("TEI_API_KEY").ok()).filter(|key| !key.trim().is_empty());
    config.batch_size = args.batch_size;
    config.tokenizer = args.tokenizer.clone();
    config.concurrency = args.concurrency.map_or(Concurrency::Adaptive, Concurrency::Fixed);
    config.p95_slo = args.p95_slo;
    config
}

/// Connects to every endpoint and checks they agree on model and dimension.
pub async fn connect_pool(args: &PipelineArgs) -> Result<Arc<EndpointPool>> {
    let pool = EndpointPool::connect(pool_config(args)).await.map_err(|e| anyhow!("{e}"))?;
    Ok(Arc::new(pool))
}

/// What the graph takes from the pool.
pub struct GraphParts {
    /// The sink's embedder.
    pub embedder: Arc<dyn Embedder>,
    /// Token counts for the dedup stage.
    pub counter: TokenCounter,
    /// Request limits for the batcher.
    pub limits: PackLimits,
    /// Batches in flight per worker.
    pub in_flight: usize,
    /// Vector dimension.
    pub dim: usize,
    /// Model id.
    pub model_id: String,
}

/// Splits the pool into the parts the operators use.
pub fn graph_parts(args: &PipelineArgs, pool: Arc<EndpointPool>) -> GraphParts {
    let budget = pool.budget().clone();
    // Enough outstanding batches that every endpoint's limit can reach its most (a pinned one,
    // or an adaptive one's cap from the server's permits), plus one per endpoint so a finished
    // batch's successor is ready. Batches beyond what the limits allow wait in the pool, cheaply.
    let wanted = pool.max_in_flight() + pool.urls().len();
    GraphParts {
        counter: Arc::new(move |t: &str| budget.count(t)),
        limits: pool.pack_limits(),
        in_flight: wanted.div_ceil(args.workers.max(1)).max(2),
        dim: pool.dim(),
        model_id: pool.model_id().to_string(),
        embedder: Arc::new(PoolEmbedder(pool)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MongoTarget;
    use std::time::Duration;
    use tweet_embed_operators::tei::Api;

    #[test]
    fn concurrency_adapts_unless_pinned_and_the_slo_and_api_pass_through() {
        let dir = std::path::Path::new("/nonexistent");
        let mut args = PipelineArgs::with_defaults(MongoTarget::tweets_at("mongodb://x"), vec!["http://a".into()], dir);
        let config = pool_config(&args);
        assert_eq!((config.concurrency, config.p95_slo, config.api), (Concurrency::Adaptive, None, Api::Auto));
        args.concurrency = Some(3);
        args.p95_slo = Some(Duration::from_secs(10));
        args.api = Api::OpenAi;
        args.api_key = Some("k".into());
        let config = pool_config(&args);
        assert_eq!((config.concurrency, config.p95_slo), (Concurrency::Fixed(3), Some(Duration::from_secs(10))));
        assert_eq!((config.api, config.api_key.as_deref()), (Api::OpenAi, Some("k")));
    }
}
