//! The dataflow: the timely operators of a pass, in the order records flow through them
//! (`work_queue_source`/`change_stream_source` → `id_gate` → `dedup` → `embed` →
//! `write_parquet`), and the state they share (the epoch clock, pacing, the records). Both
//! sources are one builder, `async_source`, over a plain state type each.
//!
//! Each operator is one file with an extension trait on `Stream` and a runnable doc example. An
//! operator is a thin shell: what it decides lives in plain types of `crate::mongo`,
//! `crate::tei` and `crate::table`. Nothing here writes a durable file or the checkpoint
//! itself; `write_parquet` hands rows to `crate::table::output`.

pub mod async_source;
pub mod change_stream_source;
pub mod dedup;
pub mod embed;
pub mod epoch_clock;
pub mod id_gate;
pub mod pass_control;
pub mod record;
pub mod source_pacing;
pub mod vector_cache;
pub mod work_queue_source;
pub mod write_parquet;
