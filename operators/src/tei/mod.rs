//! The TEI client: text-embeddings-inference servers, one per GPU, used as one embedding service.
//!
//! It owns everything between a list of texts and their vectors: reading each server's limits
//! (`GET /info`), counting tokens ([`TokenBudget`]), cutting texts into requests within those
//! limits ([`RequestBatcher`], the only place that does), calling one server ([`Endpoint`]) and
//! spreading requests across all of them with retries, splitting and isolation of refused inputs ([`EndpointPool`]). It is built to
//! TEI 1.9's API and codes, older 1.x codes included (`shared/notes/tei.md`).
//!
//! It must never lose an input (each ends with a vector or a reason), never stop a run because an
//! endpoint died (it waits and retries), never hand out a vector that is not usable (each is
//! checked: dimension, finite, non-zero, unit norm; see `vectors`), and never log an API key or
//! URL credentials. It knows
//! nothing of Mongo, Parquet or the dataflow.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tweet_embed_operators::tei::TeiError> {
//! use tweet_embed_operators::tei::{EndpointPool, PoolConfig};
//! let pool = EndpointPool::connect(PoolConfig::new(["http://localhost:18080/embed"])).await?;
//! let outcomes = pool.embed(vec!["hello".to_string(), String::new()]).await;
//! assert!(outcomes[0].is_ok()); // a vector of pool.dim() values
//! assert!(outcomes[1].is_err()); // "text the server refuses: ..."
//! # Ok(()) }
//! ```

mod batcher;
mod breaker;
mod budget;
mod dispatch;
mod endpoint;
mod error;
mod estimate;
mod limiter;
mod limits;
mod options;
mod pool;
mod request;
mod stats;
mod vectors;
mod waiting;

pub use batcher::{json_string_len, padded_tokens, Cut, PackLimits, Request, RequestBatcher, RequestOrder};
pub use breaker::BreakerState;
pub use budget::TokenBudget;
pub use endpoint::{http_client, Api, EmbedReply, Endpoint};
pub use error::{CallError, FailureKind, TeiError};
pub use estimate::{estimate_pieces, estimate_tokens, EstimatePieces, ESTIMATE_SPECIAL_TOKENS};
pub use limiter::Concurrency;
pub use limits::{base_url, redact, ServerLimits, DEFAULT_PAYLOAD_LIMIT};
pub use options::{EmbedOptions, TruncationDirection};
pub use pool::{EndpointPool, PoolConfig};
pub use request::InputOutcome;
pub use stats::{EndpointStats, PoolStats, RATE_WINDOW};
pub use waiting::{CutItems, WaitingKey, WaitingTexts};
