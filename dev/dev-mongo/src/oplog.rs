//! The oplog: every write as an entry with a unique, increasing cluster time, kept for a bounded
//! number of entries. Change streams read it; resume tokens are positions in it.
//!
//! The oplog knows how far history has been truncated, so a position older than what is kept is
//! reported as lost (ChangeStreamHistoryLost) instead of silently skipping events.

use mongodb::bson::{Bson, DateTime, Document, Timestamp};
use std::collections::VecDeque;
use std::sync::Arc;

/// Kinds of oplog entries that change streams report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A new document.
    Insert,
    /// An operator update.
    Update,
    /// A replacement.
    Replace,
    /// A deletion.
    Delete,
    /// The collection was dropped.
    Drop,
    /// The collection was renamed; the entry's `doc` is the new namespace `{db, coll}`.
    Rename,
}

impl OpKind {
    /// The change event's `operationType`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Insert => "insert",
            OpKind::Update => "update",
            OpKind::Replace => "replace",
            OpKind::Delete => "delete",
            OpKind::Drop => "drop",
            OpKind::Rename => "rename",
        }
    }

    /// Parses a persisted name.
    pub fn from_name(s: &str) -> Option<OpKind> {
        Some(match s {
            "insert" => OpKind::Insert,
            "update" => OpKind::Update,
            "replace" => OpKind::Replace,
            "delete" => OpKind::Delete,
            "drop" => OpKind::Drop,
            "rename" => OpKind::Rename,
            _ => return None,
        })
    }
}

/// One write.
#[derive(Debug, Clone)]
pub struct OplogEntry {
    /// Cluster time, unique per entry.
    pub ts: Timestamp,
    /// Wall-clock time of the write.
    pub wall: DateTime,
    /// Database.
    pub db: String,
    /// Collection.
    pub coll: String,
    /// What happened.
    pub kind: OpKind,
    /// `_id` of the document.
    pub id: Bson,
    /// The document as written (insert, replace).
    pub doc: Option<Arc<Document>>,
    /// `updateDescription` (update).
    pub update: Option<Document>,
}

/// The bounded oplog.
#[derive(Debug)]
pub struct Oplog {
    entries: VecDeque<OplogEntry>,
    capacity: usize,
    /// Entries at or before this time have been discarded.
    truncated_upto: Timestamp,
    last: Timestamp,
}

/// Orders timestamps (bson's `Timestamp` has no `Ord`).
pub fn ts_key(t: Timestamp) -> u64 {
    ((t.time as u64) << 32) | t.increment as u64
}

fn from_key(k: u64) -> Timestamp {
    Timestamp { time: (k >> 32) as u32, increment: k as u32 }
}

fn now_secs() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

impl Oplog {
    /// An empty oplog keeping at most `capacity` entries. History before now is unknown.
    pub fn new(capacity: usize) -> Oplog {
        let start = Timestamp { time: now_secs(), increment: 0 };
        Oplog { entries: VecDeque::new(), capacity: capacity.max(1), truncated_upto: start, last: start }
    }

    /// Restores an oplog (from a snapshot).
    pub fn restore(capacity: usize, truncated_upto: Timestamp, last: Timestamp, entries: Vec<OplogEntry>) -> Oplog {
        let mut log = Oplog { entries: entries.into(), capacity: capacity.max(1), truncated_upto, last };
        log.trim();
        log
    }

    /// The next cluster time: increasing, and at least the wall clock.
    pub fn next_ts(&mut self) -> Timestamp {
        let now = now_secs();
        let next = if now > self.last.time {
            Timestamp { time: now, increment: 1 }
        } else {
            Timestamp { time: self.last.time, increment: self.last.increment + 1 }
        };
        self.last = next;
        next
    }

    /// Appends an entry (its `ts` from [`Oplog::next_ts`]).
    pub fn push(&mut self, entry: OplogEntry) {
        self.entries.push_back(entry);
        self.trim();
    }

    fn trim(&mut self) {
        while self.entries.len() > self.capacity {
            if let Some(e) = self.entries.pop_front() {
                self.truncated_upto = e.ts;
            }
        }
    }

    /// Changes the number of entries kept (a test hook for history loss).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.trim();
    }

    /// Discards all history up to now.
    pub fn truncate_all(&mut self) {
        self.entries.clear();
        self.truncated_upto = self.last;
    }

    /// The latest cluster time handed out.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// The high-water mark an idle stream may report: the later of the last write and now, so a
    /// quiet collection's token still advances (as mongod's periodic no-op writes make it).
    pub fn high_water(&mut self) -> Timestamp {
        let now = Timestamp { time: now_secs(), increment: 0 };
        if ts_key(now) > ts_key(self.last) {
            self.last = now;
        }
        self.last
    }

    /// Whether events after `pos` are still all retained.
    pub fn retains_after(&self, pos: Timestamp) -> bool {
        ts_key(pos) >= ts_key(self.truncated_upto)
    }

    /// Entries strictly after `pos`, oldest first.
    pub fn after(&self, pos: Timestamp) -> impl Iterator<Item = &OplogEntry> {
        let k = ts_key(pos);
        let start = self.entries.partition_point(|e| ts_key(e.ts) <= k);
        self.entries.range(start..)
    }

    /// Snapshot parts: (capacity, truncated_upto, last, entries).
    pub fn parts(&self) -> (usize, Timestamp, Timestamp, &VecDeque<OplogEntry>) {
        (self.capacity, self.truncated_upto, self.last, &self.entries)
    }

    /// The time just before `t`, so "after it" means "at or after `t`".
    pub fn just_before(t: Timestamp) -> Timestamp {
        from_key(ts_key(t).saturating_sub(1))
    }
}

/// Encodes a position as a resume token `{_data: "82<time><inc>"}` (hex, like mongod's prefix).
pub fn token_for(pos: Timestamp) -> Document {
    mongodb::bson::doc! { "_data": format!("82{:08X}{:08X}", pos.time, pos.increment) }
}

/// Decodes a resume token produced by [`token_for`].
pub fn position_of(token: &Bson) -> Option<Timestamp> {
    let data = match token {
        Bson::Document(d) => d.get_str("_data").ok()?,
        _ => return None,
    };
    let hex = data.strip_prefix("82")?;
    if hex.len() != 16 {
        return None;
    }
    let time = u32::from_str_radix(&hex[..8], 16).ok()?;
    let increment = u32::from_str_radix(&hex[8..], 16).ok()?;
    Some(Timestamp { time, increment })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log: &mut Oplog) -> Timestamp {
        let ts = log.next_ts();
        log.push(OplogEntry {
            ts,
            wall: DateTime::now(),
            db: "d".into(),
            coll: "c".into(),
            kind: OpKind::Insert,
            id: Bson::Int32(1),
            doc: None,
            update: None,
        });
        ts
    }

    #[test]
    fn bounded_history_reports_loss() {
        let mut log = Oplog::new(2);
        let start = log.last();
        let a = entry(&mut log);
        assert!(log.retains_after(start));
        let _b = entry(&mut log);
        let c = entry(&mut log);
        assert!(!log.retains_after(start));
        assert!(log.retains_after(a));
        assert_eq!(log.after(a).count(), 2);
        assert_eq!(log.after(c).count(), 0);
        assert_eq!(position_of(&Bson::Document(token_for(c))), Some(c));
        let hw = log.high_water();
        assert!(ts_key(hw) >= ts_key(c));
        assert!(ts_key(log.next_ts()) > ts_key(hw));
    }
}
