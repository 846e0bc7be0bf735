//! The server's whole state behind one lock: databases of collections, the oplog, open cursors
//! and fail points. Every write goes through the methods here so that the documents, their
//! indexes and the oplog change together.

use super::collection::{id_key_of, Collection};
use super::cursor::Cursor;
use super::error::{CmdResult, CommandError};
use super::faults::FailPoint;
use super::oplog::{OpKind, Oplog, OplogEntry};
use super::update::Update;
use mongodb::bson::{doc, Bson, DateTime, Document};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Keys and documents examined by all scans, as mongod's `serverStatus` reports them; tests use
/// them to prove a query used its index instead of scanning the collection.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanTotals {
    /// Index keys examined (`metrics.queryExecutor.scanned`).
    pub keys: u64,
    /// Documents examined (`metrics.queryExecutor.scannedObjects`).
    pub docs: u64,
}

impl ScanTotals {
    /// Adds a scan's work.
    pub fn add(&mut self, pos: &super::scan::ScanPosition) {
        self.keys += pos.keys_examined;
        self.docs += pos.docs_examined;
    }

    /// Adds a long-lived scan's work since the last call, and resets its counters.
    pub fn take_from(&mut self, pos: &mut super::scan::ScanPosition) {
        self.add(pos);
        pos.keys_examined = 0;
        pos.docs_examined = 0;
    }
}

/// Everything the server holds.
#[derive(Debug)]
pub struct Store {
    /// Database name → collection name → collection.
    pub dbs: BTreeMap<String, BTreeMap<String, Collection>>,
    /// All writes, bounded.
    pub oplog: Oplog,
    /// Open cursors by id.
    pub cursors: HashMap<i64, Cursor>,
    /// Armed fail point, if any.
    pub fail: Option<FailPoint>,
    /// Count of writes, to know when a snapshot is stale.
    pub writes: u64,
    /// Scan work done so far (`serverStatus.metrics.queryExecutor`).
    pub scanned: ScanTotals,
    /// The largest change event a change stream returns, in BSON bytes (mongod's
    /// `BSONObjMaxInternalSize`, 16 MB + 16 KB); a larger one fails the command with
    /// BSONObjectTooLarge (10334).
    pub max_event_bytes: usize,
    next_cursor: i64,
}

impl Store {
    /// An empty store keeping `history` oplog entries.
    pub fn new(history: usize) -> Store {
        Store::with_parts(BTreeMap::new(), Oplog::new(history))
    }

    /// A store from restored parts.
    pub fn with_parts(dbs: BTreeMap<String, BTreeMap<String, Collection>>, oplog: Oplog) -> Store {
        Store {
            dbs,
            oplog,
            cursors: HashMap::new(),
            fail: None,
            writes: 0,
            scanned: ScanTotals::default(),
            max_event_bytes: super::changestream::MAX_EVENT_BYTES,
            next_cursor: 0,
        }
    }

    /// A collection, if it exists.
    pub fn coll(&self, db: &str, coll: &str) -> Option<&Collection> {
        self.dbs.get(db)?.get(coll)
    }

    /// A collection, created if missing (as writes and `createIndexes` do).
    pub fn coll_mut(&mut self, db: &str, coll: &str) -> &mut Collection {
        self.dbs.entry(db.to_string()).or_default().entry(coll.to_string()).or_default()
    }

    /// Registers a cursor and returns its id (never 0).
    pub fn add_cursor(&mut self, cursor: Cursor) -> i64 {
        // Ids look random to clients but stay unique within this process.
        self.next_cursor += 1;
        let id = (self.next_cursor << 16) ^ (fastrand::i64(1..0xffff));
        self.cursors.insert(id, cursor);
        id
    }

    /// Drops cursors idle for longer than `max_idle` (mongod's cursor timeout).
    pub fn reap_cursors(&mut self, max_idle: std::time::Duration) {
        self.cursors.retain(|_, c| c.last_used.elapsed() < max_idle);
    }

    fn log(
        &mut self,
        db: &str,
        coll: &str,
        kind: OpKind,
        id: Bson,
        doc: Option<Arc<Document>>,
        update: Option<Document>,
    ) {
        let ts = self.oplog.next_ts();
        self.oplog.push(OplogEntry {
            ts,
            wall: DateTime::now(),
            db: db.into(),
            coll: coll.into(),
            kind,
            id,
            doc,
            update,
        });
        self.writes += 1;
    }

    /// Inserts one document (adding an ObjectId `_id` if it has none).
    pub fn insert(&mut self, db: &str, coll: &str, mut doc: Document) -> CmdResult<()> {
        if !doc.contains_key("_id") {
            let mut with_id = doc! {"_id": mongodb::bson::oid::ObjectId::new()};
            with_id.extend(doc);
            doc = with_id;
        }
        if let Some(Bson::Array(_)) = doc.get("_id") {
            return Err(CommandError::new(2, "can't use an array for _id"));
        }
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        let stored = self.coll_mut(db, coll).insert(doc)?;
        self.log(db, coll, OpKind::Insert, id, Some(stored), None);
        Ok(())
    }

    /// Applies `update` to the document under `id_key`; returns whether it changed.
    pub fn update(&mut self, db: &str, coll: &str, id_key: &[u8], update: &Update) -> CmdResult<bool> {
        let Some(c) = self.dbs.get_mut(db).and_then(|d| d.get_mut(coll)) else {
            return Ok(false);
        };
        let Some(old) = c.docs.get(id_key).cloned() else {
            return Ok(false);
        };
        let mut next = (*old).clone();
        let changes = update.apply(&mut next, false)?;
        if next == *old {
            return Ok(false);
        }
        let id = next.get("_id").cloned().unwrap_or(Bson::Null);
        let stored = c.replace(id_key, next)?;
        match update {
            Update::Replacement(_) => self.log(db, coll, OpKind::Replace, id, Some(stored), None),
            Update::Operators(_) => {
                let desc = doc! {
                    "updatedFields": changes.updated,
                    "removedFields": changes.removed,
                    "truncatedArrays": [],
                };
                self.log(db, coll, OpKind::Update, id, None, Some(desc))
            }
        }
        Ok(true)
    }

    /// Inserts the document an upsert produced; returns its `_id`.
    pub fn upsert_insert(&mut self, db: &str, coll: &str, seed: Document, update: &Update) -> CmdResult<Bson> {
        let mut doc = seed;
        if let Update::Replacement(r) = update {
            let id = doc.get("_id").cloned().or_else(|| r.get("_id").cloned());
            doc = Document::new();
            if let Some(id) = id {
                doc.insert("_id", id);
            }
        }
        update.apply(&mut doc, true)?;
        if !doc.contains_key("_id") {
            let mut with_id = doc! {"_id": mongodb::bson::oid::ObjectId::new()};
            with_id.extend(doc);
            doc = with_id;
        }
        let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
        self.insert(db, coll, doc)?;
        Ok(id)
    }

    /// Deletes the document under `id_key`.
    pub fn delete(&mut self, db: &str, coll: &str, id_key: &[u8]) -> bool {
        let Some(c) = self.dbs.get_mut(db).and_then(|d| d.get_mut(coll)) else {
            return false;
        };
        match c.remove(id_key) {
            Some(old) => {
                let id = old.get("_id").cloned().unwrap_or(Bson::Null);
                self.log(db, coll, OpKind::Delete, id, None, None);
                true
            }
            None => false,
        }
    }

    /// Drops a collection; returns whether it existed.
    /// Moves collection `from` (db, coll) to `to`, replacing a collection there; logs a `rename`
    /// entry for `from`, whose streams it ends as mongod does. False if `from` does not exist.
    pub fn rename_collection(&mut self, from: (&str, &str), to: (&str, &str)) -> bool {
        let Some(c) = self.dbs.get_mut(from.0).and_then(|d| d.remove(from.1)) else { return false };
        self.dbs.entry(to.0.to_string()).or_default().insert(to.1.to_string(), c);
        let target = Arc::new(mongodb::bson::doc! {"db": to.0, "coll": to.1});
        self.log(from.0, from.1, OpKind::Rename, Bson::Null, Some(target), None);
        true
    }

    pub fn drop_collection(&mut self, db: &str, coll: &str) -> bool {
        let existed = self.dbs.get_mut(db).and_then(|d| d.remove(coll)).is_some();
        if existed {
            self.log(db, coll, OpKind::Drop, Bson::Null, None, None);
        }
        existed
    }

    /// `_id` key strings of documents matching `filter` (for multi-document writes), with the scan
    /// totals updated by this scan (for the caller to store).
    pub fn matching_ids(
        &self,
        db: &str,
        coll: &str,
        filter: &super::matcher::Filter,
        hint: Option<&Bson>,
        limit: Option<usize>,
    ) -> CmdResult<(Vec<Vec<u8>>, ScanTotals)> {
        let Some(c) = self.coll(db, coll) else {
            return Ok((Vec::new(), self.scanned));
        };
        let plan = super::planner::plan(c, filter, None, hint)?;
        let mut pos = super::scan::ScanPosition::default();
        let mut out = Vec::new();
        while !pos.is_done() {
            super::scan::scan(c, &plan, filter, &mut pos, usize::MAX, |d| {
                out.push(id_key_of(d));
                limit.is_none_or(|l| out.len() < l)
            })?;
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        let mut totals = self.scanned;
        totals.add(&pos);
        Ok((out, totals))
    }
}
