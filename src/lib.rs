//! tweet-embed turns a MongoDB collection of tweets into embeddings with text-embeddings-inference
//! (TEI) servers, one per GPU, and writes the vectors to Parquet with crash-safe checkpoints.
//!
//! This crate is the command line: one module per command, each resolving flags, environment and
//! the config file into settings and calling a library. The run engine and its timely operators
//! are the `tweet-embed-operators` crate (`tweet_embed_operators::run::Engine` runs a backfill
//! from a `RunConfig` without any of this). The two dev servers are crates of their own, which
//! the binary serves: `dev-mongo` (`dev/dev-mongo`, `tweet-embed dev-mongo`), a MongoDB
//! wire-protocol server, and `dev-tei` (`dev/dev-tei`, `tweet-embed dev-tei`), a TEI GPU
//! simulator. Synthetic tweets and seeding, shared by the demo, the tests and the benches, are the
//! `test-support` crate (`dev/test-support`).
//!
//! The dev stack (`demo`, `dev-mongo`, `dev-tei`) and the crash tests' hooks come with the `dev`
//! feature, on by default; the binary to deploy is built without it
//! (`cargo build --release --no-default-features`) and links no simulator.

pub mod autotune;
pub mod backfill;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod consolidate;
#[cfg(feature = "dev")]
pub mod demo;
pub mod indexes;
pub mod metrics;
pub mod progress;
pub mod reconcile;
pub mod requeue;
pub mod run;
pub mod session;
pub mod status;
pub mod stdout;
