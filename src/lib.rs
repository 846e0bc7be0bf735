//! tweet-embed turns a MongoDB collection of tweets into embeddings with text-embeddings-inference
//! (TEI) servers, one per GPU, and writes the vectors to Parquet with crash-safe checkpoints.
//!
//! The library is usable without the CLI: [`pipeline::backfill`] runs the backfill from a
//! [`config::PipelineArgs`]; the timely operators live in the `tweet-embed-operators` crate. It
//! also holds [`devtei`], the TEI GPU simulator every test runs against; the MongoDB
//! wire-protocol dev server is the `dev-mongo` crate (`dev/dev-mongo`), which the binary serves as
//! `tweet-embed dev-mongo`.

pub mod autotune;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod consolidate;
pub mod demo;
pub mod devtei;
pub mod indexes;
pub mod metrics;
pub mod pass;
pub mod pipeline;
pub mod progress;
pub mod run;
pub mod status;
pub mod synth;
pub mod tei;
