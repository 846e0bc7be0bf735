//! Change streams: opening one from a `$changeStream` stage (`resumeAfter`, `startAfter`,
//! `startAtOperationTime`, `fullDocument: updateLookup`), turning oplog entries into change
//! events, the stages that may follow (`$match`, `$project`), and the post-batch resume token.
//!
//! A change stream never skips history silently: a start point older than the retained oplog is
//! refused with ChangeStreamHistoryLost (286).

use super::collection::Collection;
use super::error::{code, CmdResult, CommandError};
use super::keystring::encode;
use super::matcher::Filter;
use super::oplog::{position_of, token_for, OpKind, Oplog, OplogEntry};
use super::projection::Projection;
use mongodb::bson::{doc, Bson, Document, Timestamp};
use std::collections::BTreeMap;

/// mongod's `BSONObjMaxInternalSize`: the largest change event it returns (16 MB + 16 KB).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024 + 16 * 1024;

/// An open change stream.
#[derive(Debug)]
pub struct ChangeCursor {
    /// Database watched.
    pub db: String,
    /// Collection watched (`None`: the whole database).
    pub coll: Option<String>,
    /// Events strictly after this cluster time are still to be returned.
    pub pos: Timestamp,
    /// `fullDocument: "updateLookup"`.
    pub lookup: bool,
    /// Stages after `$changeStream`.
    pub stages: Vec<EventStage>,
    /// The stream was invalidated (its collection dropped).
    pub invalidated: bool,
    /// The largest event it returns (`Store::max_event_bytes`).
    pub max_event_bytes: usize,
}

/// A stage applied to change events.
#[derive(Debug)]
pub enum EventStage {
    /// `$match`
    Match(Filter),
    /// `$project`
    Project(Projection),
}

impl ChangeCursor {
    /// Opens a stream from the `$changeStream` stage and the stages after it.
    pub fn open(
        db: &str,
        coll: Option<&str>,
        spec: &Document,
        rest: &[Bson],
        oplog: &mut Oplog,
        max_event_bytes: usize,
    ) -> CmdResult<ChangeCursor> {
        let lookup = match spec.get("fullDocument") {
            None => false,
            Some(Bson::String(s)) if s == "default" => false,
            Some(Bson::String(s)) if s == "updateLookup" => true,
            Some(other) => {
                return Err(CommandError::bad_value(format!(
                "fullDocument {other} is not supported by tweet-embed dev-mongo (use \"default\" or \"updateLookup\")"
            )))
            }
        };
        let token = spec.get("resumeAfter").or_else(|| spec.get("startAfter"));
        let pos = match (token, spec.get("startAtOperationTime")) {
            (Some(_), Some(_)) => {
                return Err(CommandError::new(
                    40674,
                    "Only one type of resume option is allowed, but multiple were found.",
                ))
            }
            (Some(tok), None) => position_of(tok).ok_or_else(|| {
                CommandError::new(code::INVALID_RESUME_TOKEN, format!("The resume token is invalid: {tok}"))
            })?,
            (None, Some(Bson::Timestamp(t))) => Oplog::just_before(*t),
            (None, Some(other)) => return Err(CommandError::type_mismatch("startAtOperationTime", "timestamp", other)),
            (None, None) => oplog.high_water(),
        };
        if !oplog.retains_after(pos) {
            return Err(history_lost());
        }
        let mut stages = Vec::new();
        for stage in rest {
            let Bson::Document(stage) = stage else {
                return Err(CommandError::bad_value("each pipeline stage must be an object"));
            };
            let Some((name, arg)) = stage.iter().next() else {
                return Err(CommandError::bad_value("empty pipeline stage"));
            };
            match (name.as_str(), arg) {
                ("$match", Bson::Document(f)) => stages.push(EventStage::Match(Filter::parse(f)?)),
                ("$project", Bson::Document(p)) => {
                    if let Some(p) = Projection::parse(p, true)? {
                        stages.push(EventStage::Project(p))
                    }
                }
                (other, _) => {
                    return Err(CommandError::bad_value(format!(
                    "{other} after $changeStream is not supported by tweet-embed dev-mongo ($match and $project are)"
                )))
                }
            }
        }
        Ok(ChangeCursor {
            db: db.to_string(),
            coll: coll.map(str::to_string),
            pos,
            lookup,
            stages,
            invalidated: false,
            max_event_bytes,
        })
    }

    /// Returns up to `max` events after the current position and advances it past every entry
    /// examined; when caught up, the position moves to the oplog's high-water mark. An event over
    /// `max_event_bytes` fails the whole batch with BSONObjectTooLarge, as on mongod (whose
    /// cursor then dies; the caller drops this one), and the position stays where it was.
    pub fn poll(
        &mut self,
        oplog: &mut Oplog,
        dbs: &BTreeMap<String, BTreeMap<String, Collection>>,
        max: usize,
    ) -> CmdResult<Vec<Document>> {
        if !oplog.retains_after(self.pos) {
            return Err(history_lost());
        }
        let start = self.pos;
        let mut out = Vec::new();
        let mut caught_up = true;
        let mut invalidate_at = None;
        for entry in oplog.after(self.pos) {
            if out.len() >= max || self.invalidated {
                caught_up = false;
                break;
            }
            self.pos = entry.ts;
            if entry.db != self.db || self.coll.as_ref().is_some_and(|c| *c != entry.coll) {
                continue;
            }
            let event = self.event(entry, dbs);
            if matches!(entry.kind, OpKind::Drop | OpKind::Rename) && self.coll.is_some() {
                invalidate_at = Some(entry.ts);
            }
            if let Some(event) = self.apply_stages(event) {
                let size = mongodb::bson::to_vec(&event).map_or(0, |b| b.len());
                if size > self.max_event_bytes {
                    self.pos = start;
                    let first = event.get("_id").map(|t| t.to_string()).unwrap_or_default();
                    return Err(CommandError::new(
                        code::BSON_OBJECT_TOO_LARGE,
                        format!(
                            "Executor error during getMore :: caused by :: BSONObj size: {size} (0x{size:X}) is \
                             invalid. Size must be between 0 and 16793600(16MB) First element: _id: {first}"
                        ),
                    ));
                }
                out.push(event);
            }
            if let Some(ts) = invalidate_at.take() {
                // A dropped or renamed collection ends a collection stream with an invalidate event.
                out.push(doc! {
                    "_id": token_for(ts),
                    "operationType": "invalidate",
                    "clusterTime": ts,
                    "wallTime": entry.wall,
                });
                self.invalidated = true;
            }
        }
        if caught_up && !self.invalidated {
            self.pos = oplog.high_water();
        }
        Ok(out)
    }

    /// The post-batch resume token: the current position.
    pub fn resume_token(&self) -> Document {
        token_for(self.pos)
    }

    fn event(&self, e: &OplogEntry, dbs: &BTreeMap<String, BTreeMap<String, Collection>>) -> Document {
        let mut ev = doc! {
            "_id": token_for(e.ts),
            "operationType": e.kind.name(),
            "clusterTime": e.ts,
            "wallTime": e.wall,
            "ns": {"db": e.db.clone(), "coll": e.coll.clone()},
        };
        if e.kind == OpKind::Drop {
            return ev;
        }
        if e.kind == OpKind::Rename {
            if let Some(to) = &e.doc {
                ev.insert("to", (**to).clone());
            }
            return ev;
        }
        ev.insert("documentKey", doc! {"_id": e.id.clone()});
        match e.kind {
            OpKind::Insert | OpKind::Replace => {
                if let Some(d) = &e.doc {
                    ev.insert("fullDocument", (**d).clone());
                }
            }
            OpKind::Update => {
                if let Some(u) = &e.update {
                    ev.insert("updateDescription", u.clone());
                }
                if self.lookup {
                    // updateLookup reads the document as it is now, which may be gone (null).
                    let current = dbs
                        .get(&e.db)
                        .and_then(|d| d.get(&e.coll))
                        .and_then(|c| c.docs.get(&encode(&e.id)))
                        .map(|d| Bson::Document((**d).clone()))
                        .unwrap_or(Bson::Null);
                    ev.insert("fullDocument", current);
                }
            }
            OpKind::Delete | OpKind::Drop | OpKind::Rename => {}
        }
        ev
    }

    fn apply_stages(&self, mut ev: Document) -> Option<Document> {
        for stage in &self.stages {
            match stage {
                EventStage::Match(f) => {
                    if !f.matches(&ev) {
                        return None;
                    }
                }
                EventStage::Project(p) => ev = p.apply(&ev),
            }
        }
        Some(ev)
    }
}

fn history_lost() -> CommandError {
    CommandError::new(
        code::CHANGE_STREAM_HISTORY_LOST,
        "Executor error during getMore :: caused by :: Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
    )
}
