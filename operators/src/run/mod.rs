//! The run engine: a run built from a resolved [`RunConfig`], with no flags and no environment.
//!
//! [`Engine::connect`] reaches MongoDB and the TEI endpoints; [`Engine::backfill`] embeds the
//! work queue once; [`Engine::continuous`] backfills and then follows the change stream until its
//! stop signal. Both recover from the checkpoint first (`crate::checkpoint`) and run passes of
//! one graph (`passes`); [`Engine::monitor`] hands progress displays and exporters what to read.
//!
//! ```no_run
//! use tweet_embed_operators::run::{Engine, MongoTarget, RunConfig};
//! let config = RunConfig::new(
//!     MongoTarget::tweets_at("mongodb://127.0.0.1:27017/?replicaSet=rs0"),
//!     vec!["http://127.0.0.1:18080".into()],
//!     std::path::Path::new("/data/tweet-embed"),
//! );
//! let summary = Engine::connect(config)?.backfill()?;
//! println!("{} embedded, {} rejected", summary.embedded, summary.rejected);
//! # Ok::<(), anyhow::Error>(())
//! ```

mod backfill;
mod cluster;
mod config;
mod continuous;
mod engine;
mod passes;

pub use cluster::{is_peer_loss, peer_lost};
pub use config::{ClusterConfig, MongoTarget, RunConfig, TestHooks};
pub use continuous::Continuous;
pub use engine::{Engine, Monitor, Summary};
