//! The records that flow through the dataflow, from a document read in Mongo to a row written
//! to Parquet or a rejection. They cross worker and process boundaries, so they are plain
//! structs with serde derives (bincode-safe: no `serde_json::Value`, no `bson::Document`).

use serde::{Deserialize, Serialize};

/// Which source read a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// The work-queue scan of the backfill.
    Backfill,
    /// The change stream of continuous mode.
    ChangeStream,
}

impl Origin {
    /// The value of the output's `source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Backfill => "backfill",
            Origin::ChangeStream => "change_stream",
        }
    }
}

/// What the output keeps of a document besides its vector.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DocMeta {
    /// `_id` as 24 hex digits for an ObjectId, canonical extended JSON otherwise.
    pub id: String,
    /// The tweet's `lang`, if any.
    pub lang: Option<String>,
    /// `created_at` in ms since the epoch, else the ObjectId's time.
    pub created_at_ms: Option<i64>,
    /// The source that read it.
    pub origin: Origin,
}

/// A document as a source emits it: its text, or why it has none usable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The document's metadata.
    pub doc: DocMeta,
    /// The text to embed, or the reason the document is rejected.
    pub text: Result<String, String>,
}

/// A document the change stream saw deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// `_id` as the `id` column writes it (see [`DocMeta::id`]).
    pub id: String,
    /// The delete's cluster time, ms since the Unix epoch.
    pub cluster_time_ms: Option<i64>,
    /// Whether the dataset needs a record of it: not when the document was inserted in the same
    /// epoch, since then no earlier row can hold it and the epoch's own row is cancelled.
    pub recorded: bool,
}

/// What the change stream emits: a document to embed, or a deletion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Inserted, updated or replaced: embed it.
    Upsert(Candidate),
    /// Deleted: its rows leave the dataset.
    Delete(Deleted),
}

/// One distinct text to embed and every document that carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextJob {
    /// xxh3 of the text as sent.
    pub text_hash: u64,
    /// The text.
    pub text: String,
    /// The documents with this text.
    pub docs: Vec<DocMeta>,
}

/// An embedded document: one output row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddedRow {
    /// The document.
    pub doc: DocMeta,
    /// Its vector.
    pub embedding: Vec<f32>,
    /// xxh3 of the text as sent.
    pub text_hash: u64,
    /// Tokens counted for the text, after truncation.
    pub tokens: u32,
}

/// A document that will not be embedded, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The document.
    pub doc: DocMeta,
    /// A short reason, e.g. `no text field`.
    pub reason: String,
}

/// xxh3 of a text: the `text_hash` column and the dedup key.
pub fn text_hash(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// What the dedup stage hands on: a distinct text to embed, or a rejection that skips the GPUs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Work {
    /// Embed this text for these documents.
    Job(TextJob),
    /// Write this rejection.
    Reject(Rejection),
}

/// What the Parquet writer takes: rows from the embed operator, rejections from anywhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Written {
    /// An embedded document.
    Row(EmbeddedRow),
    /// A rejected document.
    Reject(Rejection),
}

impl Written {
    /// The document's `_id`, as the `id` column writes it.
    pub fn id(&self) -> &str {
        match self {
            Written::Row(r) => &r.doc.id,
            Written::Reject(r) => &r.doc.id,
        }
    }
}
