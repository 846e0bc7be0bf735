//! The query language: parses a filter document into a [`Filter`] and decides whether a document
//! matches it, with MongoDB's semantics for null and missing fields, arrays (a predicate holds if
//! it holds for the array or any element), and comparison within a type bracket.
//!
//! Matching never consults indexes: the planner narrows candidates, this module decides.

use super::error::{CmdResult, CommandError};
use super::keystring::{bracket_of, compare, encode, equal};
use super::path::reach;
use mongodb::bson::{Bson, Document};
use std::cmp::Ordering;
use std::collections::HashSet;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every branch matches (also the empty filter).
    And(Vec<Filter>),
    /// Some branch matches.
    Or(Vec<Filter>),
    /// No branch matches.
    Nor(Vec<Filter>),
    /// A predicate on the values at a path.
    Field(String, Pred),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
}

/// A predicate on the values reached by a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// Equality (`{f: v}` or `$eq`); `null` also matches a missing field.
    Eq(Bson),
    /// `$ne`
    Ne(Bson),
    /// `$gt $gte $lt $lte`
    Cmp(CmpOp, Bson),
    /// `$in`
    In(ValueSet),
    /// `$nin`
    Nin(ValueSet),
    /// `$exists`
    Exists(bool),
    /// `$not`: none of the inner predicates' conjunction.
    Not(Vec<Pred>),
    /// `$type`: canonical brackets or exact type names.
    Type(Vec<String>),
    /// Conjunction of several operators on one path (`{f: {$gt: 1, $lt: 5}}`).
    All(Vec<Pred>),
}

/// The values of `$in`/`$nin`, with their key strings hashed: the marker sends `$in` lists of
/// thousands of ids, and testing each document against each value would be quadratic.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueSet {
    values: Vec<Bson>,
    keys: HashSet<Vec<u8>>,
    has_null: bool,
}

impl ValueSet {
    /// A set of values (equal under MongoDB's rules when their key strings are equal).
    pub fn new(values: Vec<Bson>) -> ValueSet {
        let keys = values.iter().map(encode).collect();
        let has_null = values.iter().any(|v| matches!(v, Bson::Null));
        ValueSet { values, keys, has_null }
    }

    /// Whether some reached value, or an element of a reached array, is in the set (or the field
    /// is missing and the set holds null).
    fn matches(&self, values: &[&Bson], missing: bool) -> bool {
        (self.has_null && missing)
            || values.iter().any(|v| {
                self.keys.contains(&encode(v))
                    || matches!(v, Bson::Array(items) if items.iter().any(|i| self.keys.contains(&encode(i))))
            })
    }
}

impl std::ops::Deref for ValueSet {
    type Target = [Bson];
    fn deref(&self) -> &[Bson] {
        &self.values
    }
}

impl Filter {
    /// Parses a filter document.
    pub fn parse(doc: &Document) -> CmdResult<Filter> {
        let mut parts = Vec::with_capacity(doc.len());
        for (key, value) in doc {
            parts.push(match key.as_str() {
                "$and" | "$or" | "$nor" => {
                    let branches = match value {
                        Bson::Array(items) if !items.is_empty() => items
                            .iter()
                            .map(|b| match b {
                                Bson::Document(d) => Filter::parse(d),
                                _ => Err(CommandError::bad_value(format!("{key} argument's entries must be objects"))),
                            })
                            .collect::<CmdResult<Vec<_>>>()?,
                        _ => return Err(CommandError::bad_value(format!("{key} argument must be a non-empty array"))),
                    };
                    match key.as_str() {
                        "$and" => Filter::And(branches),
                        "$or" => Filter::Or(branches),
                        _ => Filter::Nor(branches),
                    }
                }
                "$comment" => continue,
                k if k.starts_with('$') => {
                    return Err(CommandError::bad_value(format!("unknown top level operator: {k}")));
                }
                path => Filter::Field(path.to_string(), parse_field_value(value)?),
            });
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Filter::And(parts) })
    }

    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Document) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(doc)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(doc)),
            Filter::Nor(fs) => !fs.iter().any(|f| f.matches(doc)),
            Filter::Field(path, pred) => pred_matches(pred, doc, path),
        }
    }

    /// The top-level conjunction as `(path, predicate)` pairs, flattening `$and` and multi-operator
    /// predicates; what the planner may turn into index bounds.
    pub fn conjuncts(&self) -> Vec<(&str, &Pred)> {
        let mut out = Vec::new();
        self.collect_conjuncts(&mut out);
        out
    }

    fn collect_conjuncts<'a>(&'a self, out: &mut Vec<(&'a str, &'a Pred)>) {
        match self {
            Filter::And(fs) => fs.iter().for_each(|f| f.collect_conjuncts(out)),
            Filter::Field(path, Pred::All(preds)) => preds.iter().for_each(|p| out.push((path, p))),
            Filter::Field(path, pred) => out.push((path, pred)),
            _ => {}
        }
    }

    /// Whether this filter contains every conjunct of `other` verbatim: the test for a query
    /// that may use a partial index whose filter is `other`.
    pub fn implies(&self, other: &Filter) -> bool {
        let mine = self.conjuncts();
        other.conjuncts().iter().all(|c| mine.iter().any(|m| m.0 == c.0 && preds_equivalent(m.1, c.1)))
    }
}

fn preds_equivalent(a: &Pred, b: &Pred) -> bool {
    match (a, b) {
        (Pred::Eq(x), Pred::Eq(y)) | (Pred::Ne(x), Pred::Ne(y)) => equal(x, y),
        (Pred::Cmp(o1, x), Pred::Cmp(o2, y)) => o1 == o2 && equal(x, y),
        _ => a == b,
    }
}

fn parse_field_value(value: &Bson) -> CmdResult<Pred> {
    if let Bson::Document(d) = value {
        if d.keys().next().is_some_and(|k| k.starts_with('$')) {
            let mut preds = d.iter().map(|(op, arg)| parse_operator(op, arg)).collect::<CmdResult<Vec<_>>>()?;
            return Ok(if preds.len() == 1 { preds.remove(0) } else { Pred::All(preds) });
        }
    }
    if let Bson::RegularExpression(_) = value {
        return Err(unsupported("regular expressions"));
    }
    Ok(Pred::Eq(value.clone()))
}

fn unsupported(what: &str) -> CommandError {
    CommandError::bad_value(format!("{what} are not supported by tweet-embed dev-mongo (a dev server, not a database)"))
}

fn parse_operator(op: &str, arg: &Bson) -> CmdResult<Pred> {
    let list = |arg: &Bson| match arg {
        Bson::Array(items) => {
            if items.iter().any(|i| matches!(i, Bson::RegularExpression(_))) {
                return Err(unsupported("regular expressions"));
            }
            Ok(items.clone())
        }
        _ => Err(CommandError::bad_value(format!("{op} needs an array"))),
    };
    Ok(match op {
        "$eq" => Pred::Eq(arg.clone()),
        "$ne" => Pred::Ne(arg.clone()),
        "$gt" => Pred::Cmp(CmpOp::Gt, arg.clone()),
        "$gte" => Pred::Cmp(CmpOp::Gte, arg.clone()),
        "$lt" => Pred::Cmp(CmpOp::Lt, arg.clone()),
        "$lte" => Pred::Cmp(CmpOp::Lte, arg.clone()),
        "$in" => Pred::In(ValueSet::new(list(arg)?)),
        "$nin" => Pred::Nin(ValueSet::new(list(arg)?)),
        "$exists" => Pred::Exists(truthy(arg)),
        "$not" => match arg {
            Bson::Document(d) if d.keys().all(|k| k.starts_with('$')) && !d.is_empty() => {
                Pred::Not(d.iter().map(|(o, a)| parse_operator(o, a)).collect::<CmdResult<Vec<_>>>()?)
            }
            Bson::RegularExpression(_) => return Err(unsupported("regular expressions")),
            _ => return Err(CommandError::bad_value("$not needs a regex or a document")),
        },
        "$type" => Pred::Type(match arg {
            Bson::Array(items) => items.iter().map(type_alias).collect::<CmdResult<Vec<_>>>()?,
            other => vec![type_alias(other)?],
        }),
        "$regex" | "$options" => return Err(unsupported("regular expressions")),
        other => return Err(CommandError::bad_value(format!("unknown operator: {other}"))),
    })
}

fn type_alias(v: &Bson) -> CmdResult<String> {
    let by_number = |n: i64| -> Option<&'static str> {
        Some(match n {
            1 => "double",
            2 => "string",
            3 => "object",
            4 => "array",
            5 => "binData",
            7 => "objectId",
            8 => "bool",
            9 => "date",
            10 => "null",
            16 => "int",
            17 => "timestamp",
            18 => "long",
            19 => "decimal",
            _ => return None,
        })
    };
    match v {
        Bson::String(s) => Some(s.clone()),
        Bson::Int32(n) => by_number(*n as i64).map(str::to_string),
        Bson::Int64(n) => by_number(*n).map(str::to_string),
        Bson::Double(n) => by_number(*n as i64).map(str::to_string),
        _ => None,
    }
    .ok_or_else(|| CommandError::bad_value(format!("unknown type name alias: {v}")))
}

/// MongoDB's truthiness for flags like `$exists: 1`.
pub fn truthy(v: &Bson) -> bool {
    match v {
        Bson::Boolean(b) => *b,
        Bson::Int32(i) => *i != 0,
        Bson::Int64(i) => *i != 0,
        Bson::Double(f) => *f != 0.0,
        Bson::Null | Bson::Undefined => false,
        _ => true,
    }
}

fn pred_matches(pred: &Pred, doc: &Document, path: &str) -> bool {
    let reached = reach(doc, path);
    match pred {
        Pred::Ne(v) => !eq_matches(&reached.values, reached.missing, v),
        Pred::Nin(vs) => !vs.matches(&reached.values, reached.missing),
        Pred::Not(preds) => !preds.iter().all(|p| pred_matches(p, doc, path)),
        Pred::All(preds) => preds.iter().all(|p| pred_matches(p, doc, path)),
        Pred::Exists(want) => reached.values.is_empty() != *want,
        Pred::Eq(v) => eq_matches(&reached.values, reached.missing, v),
        Pred::In(vs) => vs.matches(&reached.values, reached.missing),
        Pred::Cmp(op, v) => {
            // $gte/$lte null also match missing fields, like equality to null.
            if matches!(v, Bson::Null) && matches!(op, CmpOp::Gte | CmpOp::Lte) && reached.missing {
                return true;
            }
            any_value(&reached.values, |x| cmp_matches(*op, x, v))
        }
        Pred::Type(names) => any_value(&reached.values, |x| names.iter().any(|n| type_matches(n, x))),
    }
}

/// Applies `f` to each value and, for arrays, to each element.
fn any_value(values: &[&Bson], f: impl Fn(&Bson) -> bool) -> bool {
    values.iter().any(|v| f(v) || matches!(v, Bson::Array(items) if items.iter().any(&f)))
}

fn eq_matches(values: &[&Bson], missing: bool, target: &Bson) -> bool {
    if matches!(target, Bson::Null) && missing {
        return true;
    }
    any_value(values, |x| equal(x, target))
}

fn cmp_matches(op: CmpOp, x: &Bson, v: &Bson) -> bool {
    if bracket_of(x) != bracket_of(v) {
        return false;
    }
    let ord = compare(x, v);
    match op {
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Gte => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Lte => ord != Ordering::Greater,
    }
}

fn type_matches(name: &str, v: &Bson) -> bool {
    match name {
        "number" => matches!(v, Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_)),
        other => super::error::type_name(v) == other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn m(filter: Document, d: Document) -> bool {
        Filter::parse(&filter).unwrap().matches(&d)
    }

    #[test]
    fn null_matches_missing_and_null() {
        assert!(m(doc! {"a": null}, doc! {}));
        assert!(m(doc! {"a": null}, doc! {"a": null}));
        assert!(!m(doc! {"a": null}, doc! {"a": 1}));
        assert!(m(doc! {"a": {"$ne": null}}, doc! {"a": 1}));
        assert!(!m(doc! {"a": {"$exists": true}}, doc! {}));
        assert!(m(doc! {"a": {"$exists": true}}, doc! {"a": null}));
    }

    #[test]
    fn arrays_and_brackets() {
        assert!(m(doc! {"t": "x"}, doc! {"t": ["y", "x"]}));
        assert!(m(doc! {"t": ["y", "x"]}, doc! {"t": ["y", "x"]}));
        assert!(m(doc! {"n": {"$gt": 1}}, doc! {"n": 1.5}));
        assert!(!m(doc! {"n": {"$gt": 1}}, doc! {"n": "2"}));
        assert!(m(doc! {"n": {"$gt": 1, "$lt": 3}}, doc! {"n": 2_i64}));
        assert!(!m(doc! {"n": {"$not": {"$gt": 1}}}, doc! {"n": 2}));
        assert!(m(doc! {"$or": [{"a": 1}, {"b": 2}]}, doc! {"b": 2}));
        assert!(m(doc! {"a": {"$in": [1, null]}}, doc! {}));
        assert!(!m(doc! {"a": {"$nin": [1, null]}}, doc! {}));
        assert!(m(doc! {"u.l": "en"}, doc! {"u": {"l": "en"}}));
    }

    #[test]
    fn errors_are_bad_value() {
        assert_eq!(Filter::parse(&doc! {"a": {"$foo": 1}}).unwrap_err().code, 2);
        assert_eq!(Filter::parse(&doc! {"$where": "x"}).unwrap_err().code, 2);
    }

    #[test]
    fn implication_is_verbatim_conjunct_containment() {
        let partial = Filter::parse(&doc! {"retweeted": null, "done": null}).unwrap();
        let q = Filter::parse(&doc! {"lang": "en", "retweeted": null, "done": null}).unwrap();
        assert!(q.implies(&partial));
        assert!(!Filter::parse(&doc! {"lang": "en"}).unwrap().implies(&partial));
    }
}
