//! The timely operators of tweet-embed: work-queue source, token-budget batcher, TEI sink,
//! Parquet sink and checkpoint committer, one module each, each an extension trait on `Stream`.
//!
//! The operators land with the backfill pipeline (issue 3); this crate exists now so the
//! workspace layout is fixed and the dev servers' tests already build against it.

#![forbid(missing_docs)]

pub use timely;
