//! The engine of tweet-embed, in areas: [`dataflow`] (the timely operators of a pass), [`mongo`]
//! (the work queue, the change stream, the marker, document ids), [`tei`] (the endpoint pool,
//! request batching, the adaptive limiter), [`table`] (the one owner of what is durable: Parquet
//! output, the deletion log, the checkpoint, compaction) and [`run`] (passes, backfill and
//! continuous runs). Each operator is one module with an extension trait on `Stream`, usable on
//! its own; the areas are usable without the CLI.

#![forbid(missing_docs)]

pub mod clock;
pub mod dataflow;
pub mod mongo;
pub mod run;
pub mod table;
pub mod tei;

pub use timely;
