//! Open cursors: what a `find`, `aggregate`, `listIndexes` or change stream still has to return,
//! and the batching rules (first batch 101 documents by default, later batches up to 16 MiB).
//!
//! A find cursor keeps its scan position, not its results: getMore resumes the index scan, so
//! memory does not grow with the result size.

use super::changestream::ChangeCursor;
use super::collection::Collection;
use super::error::CmdResult;
use super::matcher::Filter;
use super::planner::Plan;
use super::projection::Projection;
use super::scan::{scan, ScanPosition};
use mongodb::bson::{Bson, Document};
use std::collections::VecDeque;
use std::time::Instant;

/// Documents in a first batch when the client does not say.
pub const DEFAULT_FIRST_BATCH: usize = 101;
/// Bytes in one batch at most (mongod's 16 MiB).
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Keys one batch may examine before it returns (bounds time under the lock).
const SCAN_BUDGET: usize = 200_000;

/// An open cursor.
#[derive(Debug)]
pub struct Cursor {
    /// `db.collection` for replies.
    pub ns: String,
    /// Database.
    pub db: String,
    /// Collection.
    pub coll: String,
    /// What it reads.
    pub kind: CursorKind,
    /// Last time a client used it.
    pub last_used: Instant,
}

/// The state behind a cursor.
#[derive(Debug)]
pub enum CursorKind {
    /// A resumable scan.
    Find(Box<FindCursor>),
    /// Results computed up front (sorted in memory, aggregations, listings).
    Buffered(VecDeque<Document>),
    /// A change stream.
    Change(Box<ChangeCursor>),
}

/// A find's scan.
#[derive(Debug)]
pub struct FindCursor {
    /// Access path.
    pub plan: Plan,
    /// Full filter.
    pub filter: Filter,
    /// Projection.
    pub projection: Option<Projection>,
    /// Documents still allowed by `limit`.
    pub limit_left: Option<u64>,
    /// Matches still to skip.
    pub skip_left: u64,
    /// Scan position.
    pub pos: ScanPosition,
}

/// Exact BSON size of a document, without serializing it.
pub fn bson_size(doc: &Document) -> usize {
    5 + doc.iter().map(|(k, v)| 2 + k.len() + value_size(v)).sum::<usize>()
}

fn value_size(v: &Bson) -> usize {
    match v {
        Bson::Double(_) | Bson::Int64(_) | Bson::DateTime(_) | Bson::Timestamp(_) => 8,
        Bson::Int32(_) => 4,
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => 5 + s.len(),
        Bson::Document(d) => bson_size(d),
        Bson::Array(a) => 5 + a.iter().enumerate().map(|(i, v)| 2 + decimal_len(i) + value_size(v)).sum::<usize>(),
        Bson::Binary(b) => 5 + b.bytes.len(),
        Bson::ObjectId(_) => 12,
        Bson::Boolean(_) => 1,
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => 0,
        Bson::RegularExpression(r) => r.pattern.len() + r.options.len() + 2,
        Bson::Decimal128(_) => 16,
        Bson::DbPointer(_) => 5 + 12 + 32,
        Bson::JavaScriptCodeWithScope(c) => 4 + 5 + c.code.len() + bson_size(&c.scope),
    }
}

fn decimal_len(mut i: usize) -> usize {
    let mut n = 1;
    while i >= 10 {
        i /= 10;
        n += 1;
    }
    n
}

impl FindCursor {
    /// Fills a batch of at most `max_docs` documents; returns whether the cursor is exhausted.
    pub fn fill(&mut self, coll: Option<&Collection>, max_docs: usize, out: &mut Vec<Document>) -> CmdResult<bool> {
        let Some(coll) = coll else { return Ok(true) };
        let mut bytes = 0;
        let max_docs = match self.limit_left {
            Some(l) => max_docs.min(l as usize),
            None => max_docs,
        };
        if max_docs == 0 {
            return Ok(self.limit_left == Some(0));
        }
        let (projection, skip_left) = (&self.projection, &mut self.skip_left);
        let start = out.len();
        scan(coll, &self.plan, &self.filter, &mut self.pos, SCAN_BUDGET, |doc| {
            if *skip_left > 0 {
                *skip_left -= 1;
                return true;
            }
            let d = match projection {
                Some(p) => p.apply(doc),
                None => (**doc).clone(),
            };
            bytes += bson_size(&d);
            out.push(d);
            out.len() - start < max_docs && bytes < MAX_BATCH_BYTES
        })?;
        if let Some(l) = &mut self.limit_left {
            *l -= (out.len() - start) as u64;
            if *l == 0 {
                return Ok(true);
            }
        }
        Ok(self.pos.is_done())
    }
}

/// Takes up to `max_docs` (and 16 MiB) from a buffered cursor.
pub fn drain_buffered(buf: &mut VecDeque<Document>, max_docs: usize, out: &mut Vec<Document>) {
    let mut bytes = 0;
    while out.len() < max_docs && bytes < MAX_BATCH_BYTES {
        match buf.pop_front() {
            Some(d) => {
                bytes += bson_size(&d);
                out.push(d);
            }
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId};

    #[test]
    fn size_is_exact() {
        let d = doc! {"_id": ObjectId::new(), "a": [1, "x", {"b": null}], "t": true, "f": 1.5, "l": 5_i64};
        assert_eq!(bson_size(&d), mongodb::bson::to_vec(&d).unwrap().len());
    }
}
