//! Update documents: `$set`, `$unset`, `$inc`, `$setOnInsert`, or a whole replacement, applied to
//! one document, reporting what changed for change-stream `updateDescription`s. Also the seed of
//! an upserted document from a query's equality conjuncts.
//!
//! Never changes `_id`: an update that would is refused with ImmutableField (66).

use super::error::{code, CmdResult, CommandError};
use super::keystring::equal;
use super::matcher::{Filter, Pred};
use super::path;
use mongodb::bson::{Bson, Document};

/// A parsed update.
#[derive(Debug, Clone)]
pub enum Update {
    /// Operator updates in the order given.
    Operators(Vec<(Op, String, Bson)>),
    /// A replacement document.
    Replacement(Document),
}

/// Update operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `$set`
    Set,
    /// `$unset`
    Unset,
    /// `$inc`
    Inc,
    /// `$setOnInsert`
    SetOnInsert,
}

/// What an update changed, as a change stream reports it.
#[derive(Debug, Default)]
pub struct Changes {
    /// Paths set, with their new values.
    pub updated: Document,
    /// Paths removed.
    pub removed: Vec<String>,
}

impl Update {
    /// Parses the `u` of an update statement.
    pub fn parse(u: &Bson) -> CmdResult<Update> {
        let u =
            match u {
                Bson::Document(d) => d,
                Bson::Array(_) => return Err(CommandError::bad_value(
                    "pipeline-style updates are not supported by tweet-embed dev-mongo (a dev server, not a database)",
                )),
                other => return Err(CommandError::type_mismatch("u", "object", other)),
            };
        if !u.keys().next().is_some_and(|k| k.starts_with('$')) {
            if let Some(k) = u.keys().find(|k| k.starts_with('$')) {
                return Err(CommandError::bad_value(format!(
                    "the replacement document must not contain operators, found {k}"
                )));
            }
            return Ok(Update::Replacement(u.clone()));
        }
        let mut ops = Vec::new();
        for (name, fields) in u {
            let op = match name.as_str() {
                "$set" => Op::Set,
                "$unset" => Op::Unset,
                "$inc" => Op::Inc,
                "$setOnInsert" => Op::SetOnInsert,
                k if k.starts_with('$') => {
                    return Err(CommandError::new(
                        code::FAILED_TO_PARSE,
                        format!(
                            "Unknown modifier: {k}. tweet-embed dev-mongo supports $set, $unset, $inc and $setOnInsert"
                        ),
                    ))
                }
                k => return Err(CommandError::bad_value(format!("the update mixes operators and the field {k}"))),
            };
            let Bson::Document(fields) = fields else {
                return Err(CommandError::new(
                    code::FAILED_TO_PARSE,
                    format!(
                        "Modifiers operate on fields but we found type {} instead",
                        super::error::type_name(fields)
                    ),
                ));
            };
            for (path, value) in fields {
                if op == Op::Inc && !is_number(value) {
                    return Err(CommandError::new(
                        code::TYPE_MISMATCH,
                        format!("Cannot increment with non-numeric argument: {{{path}: {value}}}"),
                    ));
                }
                ops.push((op, path.clone(), value.clone()));
            }
        }
        Ok(Update::Operators(ops))
    }

    /// Applies the update to `doc` (whose `_id` must not change). `inserting` enables
    /// `$setOnInsert`.
    pub fn apply(&self, doc: &mut Document, inserting: bool) -> CmdResult<Changes> {
        let id = doc.get("_id").cloned();
        let mut changes = Changes::default();
        match self {
            Update::Replacement(r) => {
                if let (Some(old), Some(new)) = (&id, r.get("_id")) {
                    if !equal(old, new) {
                        return Err(immutable_id());
                    }
                }
                let mut next = Document::new();
                if let Some(id) = &id {
                    next.insert("_id", id.clone());
                }
                for (k, v) in r {
                    if k != "_id" {
                        next.insert(k.clone(), v.clone());
                    }
                }
                *doc = next;
            }
            Update::Operators(ops) => {
                for (op, p, value) in ops {
                    if p == "_id" || p.starts_with("_id.") {
                        let same =
                            matches!(op, Op::Set | Op::SetOnInsert) && id.as_ref().is_some_and(|i| equal(i, value));
                        if !(same || inserting && id.is_none()) {
                            return Err(immutable_id());
                        }
                    }
                    match op {
                        Op::Set => set(doc, p, value.clone(), &mut changes)?,
                        Op::SetOnInsert if inserting => set(doc, p, value.clone(), &mut changes)?,
                        Op::SetOnInsert => {}
                        Op::Unset => {
                            if path::unset(doc, p) {
                                changes.removed.push(p.clone());
                            }
                        }
                        Op::Inc => {
                            let next = match path::get(doc, p) {
                                None => value.clone(),
                                Some(cur) => add(cur, value).ok_or_else(|| {
                                    CommandError::new(
                                        code::TYPE_MISMATCH,
                                        format!("Cannot apply $inc to a value of non-numeric type. {{_id: {}}} has the field '{p}' of non-numeric type {}", id.clone().unwrap_or(Bson::Null), super::error::type_name(cur)),
                                    )
                                })?,
                            };
                            set(doc, p, next, &mut changes)?;
                        }
                    }
                }
            }
        }
        Ok(changes)
    }
}

fn immutable_id() -> CommandError {
    CommandError::new(
        code::IMMUTABLE_FIELD,
        "Performing an update on the path '_id' would modify the immutable field '_id'",
    )
}

fn set(doc: &mut Document, p: &str, value: Bson, changes: &mut Changes) -> CmdResult<()> {
    path::set(doc, p, value.clone()).map_err(|e| CommandError::new(28, e.to_string()))?;
    changes.updated.insert(p, value);
    Ok(())
}

fn is_number(v: &Bson) -> bool {
    matches!(v, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))
}

/// `$inc` arithmetic with mongod's type promotion (int32 overflow becomes int64; a double wins).
fn add(a: &Bson, b: &Bson) -> Option<Bson> {
    Some(match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => {
            x.checked_add(*y).map(Bson::Int32).unwrap_or(Bson::Int64(*x as i64 + *y as i64))
        }
        (Bson::Int32(x), Bson::Int64(y)) | (Bson::Int64(y), Bson::Int32(x)) => {
            Bson::Int64((*x as i64).checked_add(*y)?)
        }
        (Bson::Int64(x), Bson::Int64(y)) => Bson::Int64(x.checked_add(*y)?),
        (Bson::Double(x), y) | (y, Bson::Double(x)) => Bson::Double(
            x + match y {
                Bson::Double(v) => *v,
                Bson::Int32(v) => *v as f64,
                Bson::Int64(v) => *v as f64,
                _ => return None,
            },
        ),
        _ => return None,
    })
}

/// The document an upsert starts from: the query's top-level equality conjuncts.
pub fn upsert_seed(filter: &Filter) -> Document {
    let mut seed = Document::new();
    for (p, pred) in filter.conjuncts() {
        if let Pred::Eq(v) = pred {
            if !p.starts_with('$') {
                let _ = path::set(&mut seed, p, v.clone());
            }
        }
    }
    seed
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn operators_apply_and_report() {
        let mut d = doc! {"_id": 1, "n": 1, "x": "a"};
        let u = Update::parse(&Bson::Document(doc! {"$set": {"m.k": true}, "$unset": {"x": ""}, "$inc": {"n": 2}}))
            .unwrap();
        let ch = u.apply(&mut d, false).unwrap();
        assert_eq!(d, doc! {"_id": 1, "n": 3, "m": {"k": true}});
        assert_eq!(ch.removed, vec!["x".to_string()]);
        assert_eq!(ch.updated, doc! {"m.k": true, "n": 3});
    }

    #[test]
    fn refuses_id_change_and_bad_inc() {
        let mut d = doc! {"_id": 1, "s": "x"};
        let u = Update::parse(&Bson::Document(doc! {"$set": {"_id": 2}})).unwrap();
        assert_eq!(u.apply(&mut d, false).unwrap_err().code, 66);
        let u = Update::parse(&Bson::Document(doc! {"$inc": {"s": 1}})).unwrap();
        assert_eq!(u.apply(&mut d, false).unwrap_err().code, 14);
        let u = Update::parse(&Bson::Document(doc! {"a": 1})).unwrap();
        u.apply(&mut d, false).unwrap();
        assert_eq!(d, doc! {"_id": 1, "a": 1});
        assert!(Update::parse(&Bson::Document(doc! {"$push": {"a": 1}})).is_err());
    }
}
