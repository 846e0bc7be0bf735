//! The timely operators of tweet-embed and the components they drive: the Mongo work queue and
//! marker, the TEI endpoint pool with its token budget, Parquet output and the checkpoint store.
//! Each operator is one module with an extension trait on `Stream`, usable on its own.

#![forbid(missing_docs)]

pub mod candidate;
pub mod change_stream;
pub mod change_stream_source;
pub mod checkpoint;
pub mod clock;
pub mod compaction;
pub mod dedup;
pub mod document_id;
pub mod embed;
pub mod epoch_clock;
pub mod failure;
pub mod id_gate;
pub mod identity;
pub mod marker;
pub mod mongo_error;
pub mod output;
pub mod pass_control;
pub mod reconcile;
pub mod record;
pub mod run;
pub mod source_pacing;
pub mod tei;
pub mod vector_cache;
pub mod work_queue;
pub mod work_queue_source;
pub mod write_parquet;

pub use timely;
