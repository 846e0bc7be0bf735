//! The timely operators of tweet-embed and the components they drive: the Mongo work queue and
//! marker, the TEI endpoint pool with its token budget, Parquet output and the checkpoint store.
//! Each operator is one module with an extension trait on `Stream`, usable on its own.

#![forbid(missing_docs)]

pub mod output;
pub mod record;

pub use timely;
