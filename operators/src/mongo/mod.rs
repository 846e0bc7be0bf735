//! MongoDB: the work queue (what is still to embed), the change stream, reading a stored
//! document into a candidate, the marker that records what was embedded, the document id in its
//! encodings, and errors in words.
//!
//! Everything that talks to MongoDB goes through the `mongodb` driver here (and `crate::run` for
//! the connection). It knows nothing of TEI or Parquet; it must never mark a document before the
//! epoch that holds it is durable (`crate::table::checkpoint` decides when).

pub mod candidate;
pub mod change_stream;
pub mod document_id;
pub mod error;
pub mod marker;
pub mod work_queue;
