//! tweet-embed turns a MongoDB collection of tweets into embeddings with text-embeddings-inference
//! (TEI) servers, one per GPU, and writes the vectors to Parquet with crash-safe checkpoints.
//!
//! The library is usable without the CLI: [`pipeline::backfill`] runs the backfill from a
//! [`config::PipelineArgs`]; the timely operators live in the `tweet-embed-operators` crate. The
//! two dev servers every test runs against are crates of their own, which the binary serves:
//! `dev-mongo` (`dev/dev-mongo`, `tweet-embed dev-mongo`), a MongoDB wire-protocol server, and
//! `dev-tei` (`dev/dev-tei`, `tweet-embed dev-tei`), a TEI GPU simulator. Synthetic tweets and
//! seeding, shared by the demo, the tests and the benches, are the `test-support` crate
//! (`dev/test-support`).

pub mod autotune;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod consolidate;
pub mod demo;
pub mod indexes;
pub mod metrics;
pub mod pass;
pub mod pipeline;
pub mod progress;
pub mod run;
pub mod status;
pub mod tei;
