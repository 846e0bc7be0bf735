//! Index bounds: turns a filter's top-level conjuncts on an index's fields into key ranges
//! (points for equality and `$in`, one interval for comparisons), and says whether the ranges
//! capture the filter exactly, so a count can skip fetching documents.
//!
//! Bounds only ever over-approximate the matches; when unsure they widen, never narrow.

use super::keystring::{bracket_of, encode, prefix_successor};
use super::matcher::{CmpOp, Filter, Pred};
use mongodb::bson::Bson;
use std::ops::Bound;

/// A range of keys, ascending.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// One end of an interval: bytes, and whether keys starting with them are included.
type End = Option<(Vec<u8>, bool)>;

/// Ranges over an index's keys and what they capture.
pub struct Ranges {
    /// Ranges, ascending and disjoint.
    pub ranges: Vec<KeyRange>,
    /// Leading fields bounded to a single point (their order is fixed).
    pub single_points: usize,
    /// Fields that got bounds.
    pub bounded_fields: usize,
    /// The ranges are exactly the filter.
    pub exact: bool,
}

/// One field's bounds in ascending key-string space: points, or an interval whose ends mean
/// "keys starting with these bytes" (inclusive) or not (exclusive).
#[derive(Debug, Clone)]
pub enum FieldBounds {
    Points(Vec<Vec<u8>>),
    Interval(Option<(Vec<u8>, bool)>, Option<(Vec<u8>, bool)>),
    All,
}

/// Bounds for one path from the conjuncts on it, and whether they capture them exactly.
pub fn field_bounds(filter: &Filter, path: &str, multikey: bool, sparse_single: bool) -> (FieldBounds, bool) {
    let preds: Vec<&Pred> = filter.conjuncts().into_iter().filter(|(p, _)| *p == path).map(|(_, p)| p).collect();
    if preds.is_empty() {
        return (FieldBounds::All, true);
    }
    // A sparse single-field index holds exactly the documents that have the field.
    if sparse_single && preds.len() == 1 && matches!(preds[0], Pred::Exists(true)) {
        return (FieldBounds::All, true);
    }
    if multikey && preds.len() > 1 {
        return (FieldBounds::All, false);
    }
    let scalar = |v: &Bson| !matches!(v, Bson::Array(_) | Bson::Document(_) | Bson::MinKey | Bson::MaxKey);
    // Equality first: the tightest bound; other conjuncts on the field are left to the filter.
    if let Some(Pred::Eq(v)) = preds.iter().find(|p| matches!(p, Pred::Eq(v) if scalar(v))) {
        return (FieldBounds::Points(vec![encode(v)]), preds.len() == 1);
    }
    if let Some(Pred::In(vs)) = preds.iter().find(|p| matches!(p, Pred::In(vs) if vs.iter().all(scalar))) {
        let mut pts: Vec<Vec<u8>> = vs.iter().map(encode).collect();
        pts.sort();
        pts.dedup();
        return (FieldBounds::Points(pts), preds.len() == 1);
    }
    let mut lo: Option<(Vec<u8>, bool)> = None;
    let mut hi: Option<(Vec<u8>, bool)> = None;
    let mut exact = true;
    for pred in &preds {
        let Pred::Cmp(op, v) = pred else {
            exact = false;
            continue;
        };
        if !scalar(v) || matches!(v, Bson::Null) {
            exact = false;
            continue;
        }
        let b = bracket_of(v);
        let (l, h) = match op {
            CmpOp::Gt => ((encode(v), false), (vec![b + 1], false)),
            CmpOp::Gte => ((encode(v), true), (vec![b + 1], false)),
            CmpOp::Lt => ((vec![b], true), (encode(v), false)),
            CmpOp::Lte => ((vec![b], true), (encode(v), true)),
        };
        // Tighten: the larger lower end and the smaller upper end; on a tie, exclusive wins.
        lo = Some(match lo {
            Some(cur) if (cur.0.as_slice(), !cur.1) >= (l.0.as_slice(), !l.1) => cur,
            _ => l,
        });
        hi = Some(match hi {
            Some(cur) if (cur.0.as_slice(), cur.1) <= (h.0.as_slice(), h.1) => cur,
            _ => h,
        });
    }
    if lo.is_none() && hi.is_none() {
        return (FieldBounds::All, false);
    }
    (FieldBounds::Interval(lo, hi), exact && (!multikey || preds.len() == 1))
}

fn complement_vec(mut v: Vec<u8>) -> Vec<u8> {
    super::keystring::complement(&mut v);
    v
}

/// Builds ranges over keys made of `fields` (with `true` for descending).
pub fn build_ranges(filter: &Filter, fields: &[(String, bool)], multikey: bool, sparse: bool) -> Ranges {
    const MAX_PREFIXES: usize = 4096;
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut exact = true;
    let mut single_points = 0;
    let mut bounded_fields = 0;
    let mut all_single = true;
    let mut interval: Option<(End, End)> = None;
    let mut consumed = 0;
    for (path, desc) in fields {
        let (bounds, ex) = field_bounds(filter, path, multikey, sparse && fields.len() == 1);
        match bounds {
            FieldBounds::Points(pts) if prefixes.len() * pts.len() <= MAX_PREFIXES => {
                let mut pts: Vec<Vec<u8>> = if *desc { pts.into_iter().map(complement_vec).collect() } else { pts };
                pts.sort();
                if pts.len() == 1 && all_single {
                    single_points += 1;
                } else {
                    all_single = false;
                }
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| pts.iter().map(move |pt| [p.as_slice(), pt.as_slice()].concat()))
                    .collect();
                exact &= ex;
                bounded_fields += 1;
                consumed += 1;
            }
            FieldBounds::Interval(lo, hi) => {
                interval = Some(if *desc {
                    (hi.map(|(b, i)| (complement_vec(b), i)), lo.map(|(b, i)| (complement_vec(b), i)))
                } else {
                    (lo, hi)
                });
                exact &= ex;
                bounded_fields += 1;
                consumed += 1;
                break;
            }
            FieldBounds::All => {
                // Exact with conjuncts present: a sparse index's `$exists: true`, which the
                // index's membership captures.
                if ex && filter.conjuncts().iter().any(|(p, _)| p == path) {
                    consumed += 1;
                }
                exact &= ex;
                break;
            }
            FieldBounds::Points(_) => {
                exact = false;
                break;
            }
        }
    }
    // Exact only if every conjunct is on a field that became a bound, and the filter is a pure
    // conjunction; anything else is left to the full filter.
    let conjuncts = filter.conjuncts();
    if conjuncts.len() != count_leaves(filter)
        || conjuncts.iter().any(|(p, _)| !fields[..consumed].iter().any(|(f, _)| f == p))
    {
        exact = false;
    }
    let mut ranges = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        let (start, end) = match &interval {
            None => (
                if p.is_empty() { Bound::Unbounded } else { Bound::Included(p.clone()) },
                if p.is_empty() {
                    Bound::Unbounded
                } else {
                    prefix_successor(&p).map_or(Bound::Unbounded, Bound::Excluded)
                },
            ),
            Some((lo, hi)) => {
                let start = match lo {
                    None if p.is_empty() => Bound::Unbounded,
                    None => Bound::Included(p.clone()),
                    Some((b, true)) => Bound::Included([p.as_slice(), b].concat()),
                    Some((b, false)) => match prefix_successor(&[p.as_slice(), b].concat()) {
                        Some(s) => Bound::Included(s),
                        None => continue,
                    },
                };
                let end = match hi {
                    None if p.is_empty() => Bound::Unbounded,
                    None => prefix_successor(&p).map_or(Bound::Unbounded, Bound::Excluded),
                    Some((b, true)) => {
                        prefix_successor(&[p.as_slice(), b].concat()).map_or(Bound::Unbounded, Bound::Excluded)
                    }
                    Some((b, false)) => Bound::Excluded([p.as_slice(), b].concat()),
                };
                (start, end)
            }
        };
        if let (Bound::Included(s), Bound::Excluded(e)) = (&start, &end) {
            if s >= e {
                continue;
            }
        }
        ranges.push((start, end));
    }
    let single = if all_single { single_points } else { single_points.min(bounded_fields) };
    Ranges { ranges, single_points: single, bounded_fields, exact }
}

pub fn count_leaves(filter: &Filter) -> usize {
    match filter {
        Filter::And(fs) => fs.iter().map(count_leaves).sum(),
        Filter::Field(_, Pred::All(ps)) => ps.len(),
        Filter::Field(..) => 1,
        _ => usize::MAX / 2,
    }
}
