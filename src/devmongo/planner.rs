//! Query planning and scanning: picks the `_id` order or a secondary index for a filter, sort
//! and hint, turns the filter's top-level conjuncts into key ranges, and scans those ranges from
//! a saved position, so a cursor resumes in O(log n) and a range query costs O(log n + k).
//!
//! The planner only narrows candidates: every candidate is still checked by the full filter,
//! except in [`count_covered`], which counts only when the ranges are exactly the filter.

use super::collection::Collection;
use super::error::{CmdResult, CommandError};
use super::index::{push_component, Index, ID_INDEX};
use super::keystring::{bracket_of, encode, prefix_successor};
use super::matcher::{CmpOp, Filter, Pred};
use mongodb::bson::{Bson, Document};
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

/// Where a plan reads candidates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The documents in `_id` order.
    Primary,
    /// A secondary index by name.
    Index(String),
}

/// A chosen access path.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What is scanned.
    pub source: Source,
    /// Key ranges, ascending and disjoint.
    pub ranges: Vec<(Bound<Vec<u8>>, Bound<Vec<u8>>)>,
    /// Scan ranges backwards (a sort opposite to the key order).
    pub reverse: bool,
    /// The scan order satisfies the requested sort.
    pub provides_sort: bool,
    /// The index is multikey: one document may appear under several keys.
    pub dedupe: bool,
    /// Every conjunct of the filter became an exact range bound: counting entries is counting
    /// matches.
    pub covered: bool,
}

/// One field's bounds in ascending key-string space: points, or an interval whose ends mean
/// "keys starting with these bytes" (inclusive) or not (exclusive).
#[derive(Debug, Clone)]
enum FieldBounds {
    Points(Vec<Vec<u8>>),
    Interval(Option<(Vec<u8>, bool)>, Option<(Vec<u8>, bool)>),
    All,
}

/// The error mongod gives for a hint it cannot use.
fn bad_hint() -> CommandError {
    CommandError::bad_value("error processing query: planner returned error :: caused by :: hint provided does not correspond to an existing index")
}

/// Chooses a plan.
pub fn plan(
    coll: &Collection,
    filter: &Filter,
    sort: Option<&Document>,
    hint: Option<&Bson>,
) -> CmdResult<Plan> {
    let sort_fields = sort_spec(sort)?;
    if let Some(hint) = hint {
        let name = match hint {
            Bson::String(name) => name.clone(),
            Bson::Document(key) if key.contains_key("$natural") => {
                return Ok(primary_plan(filter, &sort_fields))
            }
            Bson::Document(key) => {
                if key == &mongodb::bson::doc! {"_id": 1} {
                    ID_INDEX.to_string()
                } else {
                    coll.indexes
                        .iter()
                        .find(|i| &i.spec.key == key)
                        .map(|i| i.spec.name.clone())
                        .ok_or_else(bad_hint)?
                }
            }
            _ => return Err(bad_hint()),
        };
        if name == ID_INDEX {
            return Ok(primary_plan(filter, &sort_fields));
        }
        let index = coll.index(&name).ok_or_else(bad_hint)?;
        if let Some((_, partial)) = &index.spec.partial {
            if !filter.implies(partial) {
                return Err(bad_hint());
            }
        }
        return Ok(index_plan(index, filter, &sort_fields).0);
    }
    let mut best = primary_plan(filter, &sort_fields);
    let mut best_score = primary_score(filter, &best);
    for index in &coll.indexes {
        if let Some((_, partial)) = &index.spec.partial {
            if !filter.implies(partial) {
                continue;
            }
        }
        if index.spec.sparse && !first_field_excludes_missing(index, filter) {
            continue;
        }
        let (p, score) = index_plan(index, filter, &sort_fields);
        if score > best_score || (score == best_score && p.provides_sort && !best.provides_sort) {
            best = p;
            best_score = score;
        }
    }
    Ok(best)
}

fn sort_spec(sort: Option<&Document>) -> CmdResult<Vec<(String, bool)>> {
    let Some(sort) = sort else {
        return Ok(Vec::new());
    };
    sort.iter()
        .map(|(k, v)| match v {
            Bson::Int32(1) | Bson::Int64(1) => Ok((k.clone(), false)),
            Bson::Int32(-1) | Bson::Int64(-1) => Ok((k.clone(), true)),
            Bson::Double(d) if *d == 1.0 || *d == -1.0 => Ok((k.clone(), *d < 0.0)),
            _ => Err(CommandError::bad_value(format!("$sort key ordering must be 1 (for ascending) or -1 (for descending), got {v} for {k}"))),
        })
        .collect()
}

fn first_field_excludes_missing(index: &Index, filter: &Filter) -> bool {
    let first = &index.spec.fields[0].0;
    filter.conjuncts().iter().any(|(p, pred)| {
        *p == first.as_str()
            && match pred {
                Pred::Eq(v) => !matches!(v, Bson::Null),
                Pred::In(vs) => !vs.iter().any(|v| matches!(v, Bson::Null)),
                Pred::Cmp(_, v) => !matches!(v, Bson::Null),
                Pred::Exists(true) => true,
                _ => false,
            }
    })
}

/// Bounds for one path from the conjuncts on it, and whether they capture them exactly.
fn field_bounds(
    filter: &Filter,
    path: &str,
    multikey: bool,
    sparse_single: bool,
) -> (FieldBounds, bool) {
    let preds: Vec<&Pred> = filter
        .conjuncts()
        .into_iter()
        .filter(|(p, _)| *p == path)
        .map(|(_, p)| p)
        .collect();
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
    let scalar = |v: &Bson| {
        !matches!(
            v,
            Bson::Array(_) | Bson::Document(_) | Bson::MinKey | Bson::MaxKey
        )
    };
    // Equality first: the tightest bound; other conjuncts on the field are left to the filter.
    if let Some(Pred::Eq(v)) = preds.iter().find(|p| matches!(p, Pred::Eq(v) if scalar(v))) {
        return (FieldBounds::Points(vec![encode(v)]), preds.len() == 1);
    }
    if let Some(Pred::In(vs)) = preds
        .iter()
        .find(|p| matches!(p, Pred::In(vs) if vs.iter().all(scalar)))
    {
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
    (
        FieldBounds::Interval(lo, hi),
        exact && (!multikey || preds.len() == 1),
    )
}

fn complement_vec(mut v: Vec<u8>) -> Vec<u8> {
    super::keystring::complement(&mut v);
    v
}

/// Builds ranges over keys made of `fields`; returns (ranges, single-point prefix length, exact).
fn build_ranges(
    filter: &Filter,
    fields: &[(String, bool)],
    multikey: bool,
    sparse: bool,
) -> (Vec<(Bound<Vec<u8>>, Bound<Vec<u8>>)>, usize, usize, bool) {
    const MAX_PREFIXES: usize = 4096;
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut exact = true;
    let mut single_points = 0;
    let mut bounded_fields = 0;
    let mut all_single = true;
    let mut interval: Option<(Option<(Vec<u8>, bool)>, Option<(Vec<u8>, bool)>)> = None;
    let mut consumed = 0;
    for (path, desc) in fields {
        let (bounds, ex) = field_bounds(filter, path, multikey, sparse && fields.len() == 1);
        match bounds {
            FieldBounds::Points(pts) if prefixes.len() * pts.len() <= MAX_PREFIXES => {
                let mut pts: Vec<Vec<u8>> = if *desc {
                    pts.into_iter().map(complement_vec).collect()
                } else {
                    pts
                };
                pts.sort();
                if pts.len() == 1 && all_single {
                    single_points += 1;
                } else {
                    all_single = false;
                }
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| {
                        pts.iter()
                            .map(move |pt| [p.as_slice(), pt.as_slice()].concat())
                    })
                    .collect();
                exact &= ex;
                bounded_fields += 1;
                consumed += 1;
            }
            FieldBounds::Interval(lo, hi) => {
                interval = Some(if *desc {
                    (
                        hi.map(|(b, i)| (complement_vec(b), i)),
                        lo.map(|(b, i)| (complement_vec(b), i)),
                    )
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
        || conjuncts
            .iter()
            .any(|(p, _)| !fields[..consumed].iter().any(|(f, _)| f == p))
    {
        exact = false;
    }
    let mut ranges = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        let (start, end) = match &interval {
            None => (
                if p.is_empty() {
                    Bound::Unbounded
                } else {
                    Bound::Included(p.clone())
                },
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
                    Some((b, true)) => prefix_successor(&[p.as_slice(), b].concat())
                        .map_or(Bound::Unbounded, Bound::Excluded),
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
    let single = if all_single {
        single_points
    } else {
        single_points.min(bounded_fields)
    };
    (ranges, single, bounded_fields, exact)
}

/// Whether scanning `fields` after `skip` single-point fields yields `sort`; returns
/// `Some(reverse)` if so.
fn sort_order(fields: &[(String, bool)], skip: usize, sort: &[(String, bool)]) -> Option<bool> {
    if sort.is_empty() {
        return Some(false);
    }
    let rest = &fields[skip.min(fields.len())..];
    if sort.len() > rest.len() {
        return None;
    }
    let mut reverse = None;
    for ((sf, sd), (f, d)) in sort.iter().zip(rest) {
        if sf != f {
            return None;
        }
        let r = sd != d;
        if *reverse.get_or_insert(r) != r {
            return None;
        }
    }
    reverse
}

fn primary_plan(filter: &Filter, sort: &[(String, bool)]) -> Plan {
    let fields = [("_id".to_string(), false)];
    let (ranges, single, _, exact) = build_ranges(filter, &fields, false, false);
    let order = sort_order(&fields, single, sort);
    Plan {
        source: Source::Primary,
        ranges,
        reverse: order.unwrap_or(false),
        provides_sort: order.is_some(),
        dedupe: false,
        covered: exact,
    }
}

fn primary_score(filter: &Filter, _plan: &Plan) -> usize {
    match field_bounds(filter, "_id", false, false).0 {
        FieldBounds::Points(_) => 3,
        FieldBounds::Interval(..) => 1,
        FieldBounds::All => 0,
    }
}

/// A plan on `index` and its score (bounded fields, points weighing more than an interval).
fn index_plan(index: &Index, filter: &Filter, sort: &[(String, bool)]) -> (Plan, usize) {
    let (ranges, single, bounded, exact) = build_ranges(
        filter,
        &index.spec.fields,
        index.multikey,
        index.spec.sparse,
    );
    let order = if index.multikey {
        None
    } else {
        sort_order(&index.spec.fields, single, sort)
    };
    // Conjuncts the partial filter guarantees are exact too.
    let covered = exact || covered_with_partial(index, filter);
    let plan = Plan {
        source: Source::Index(index.spec.name.clone()),
        ranges,
        reverse: order.unwrap_or(false),
        provides_sort: order.is_some(),
        dedupe: index.multikey,
        covered,
    };
    (plan, bounded * 2 + usize::from(single > 0))
}

fn covered_with_partial(index: &Index, filter: &Filter) -> bool {
    let Some((_, partial)) = &index.spec.partial else {
        return false;
    };
    let partial_conj = partial.conjuncts();
    if filter.conjuncts().len() != count_leaves(filter) {
        return false; // $or/$nor in the filter: not a pure conjunction
    }
    let rest: Vec<Filter> = filter
        .conjuncts()
        .into_iter()
        .filter(|c| !partial_conj.contains(c))
        .map(|(p, pred)| Filter::Field(p.to_string(), pred.clone()))
        .collect();
    let residual = Filter::And(rest);
    build_ranges(
        &residual,
        &index.spec.fields,
        index.multikey,
        index.spec.sparse,
    )
    .3
}

fn count_leaves(filter: &Filter) -> usize {
    match filter {
        Filter::And(fs) => fs.iter().map(count_leaves).sum(),
        Filter::Field(_, Pred::All(ps)) => ps.len(),
        Filter::Field(..) => 1,
        _ => usize::MAX / 2,
    }
}

/// Where a scan stands: the last key it returned.
#[derive(Debug, Clone, Default)]
pub struct ScanPosition {
    /// Index keys (or `_id`s) examined so far, as mongod's `keysExamined`.
    pub keys_examined: u64,
    /// Documents fetched and tested so far, as mongod's `docsExamined`.
    pub docs_examined: u64,
    last: Option<Vec<u8>>,
    seen: Option<HashSet<Vec<u8>>>,
    done: bool,
}

impl ScanPosition {
    /// Whether the scan has reached the end of its ranges.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn range_after<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
    last: Option<&Vec<u8>>,
    reverse: bool,
) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a V)> + 'a> {
    let (mut start, mut end) = (range.0.clone(), range.1.clone());
    if let Some(last) = last {
        // Resume strictly after the last key, if it lies within this range.
        if reverse {
            let within = match &start {
                Bound::Included(s) => last >= s,
                Bound::Excluded(s) => last > s,
                Bound::Unbounded => true,
            };
            if within {
                end = Bound::Excluded(last.clone());
            }
        } else {
            let within = match &end {
                Bound::Included(e) => last <= e,
                Bound::Excluded(e) => last < e,
                Bound::Unbounded => true,
            };
            if within {
                start = Bound::Excluded(last.clone());
            }
        }
    }
    if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
        (&start, &end)
    {
        if s > e
            || (s == e
                && !(matches!(start, Bound::Included(_)) && matches!(end, Bound::Included(_))))
        {
            return Box::new(std::iter::empty());
        }
    }
    let it = map.range::<Vec<u8>, _>((start, end));
    if reverse {
        Box::new(it.rev())
    } else {
        Box::new(it)
    }
}

/// Scans `plan` from `pos`, calling `visit` with each candidate document that matches `filter`
/// until it returns `false`. Stops early after examining `budget` keys (to bound one call).
pub fn scan(
    coll: &Collection,
    plan: &Plan,
    filter: &Filter,
    pos: &mut ScanPosition,
    budget: usize,
    mut visit: impl FnMut(&Arc<Document>) -> bool,
) -> CmdResult<()> {
    if pos.done {
        return Ok(());
    }
    let index = match &plan.source {
        Source::Primary => None,
        Source::Index(name) => Some(coll.index(name).ok_or_else(|| {
            CommandError::new(
                super::error::code::QUERY_PLAN_KILLED,
                format!("index '{name}' dropped"),
            )
        })?),
    };
    if plan.dedupe && pos.seen.is_none() {
        pos.seen = Some(HashSet::new());
    }
    let mut examined = 0;
    let order: Vec<usize> = if plan.reverse {
        (0..plan.ranges.len()).rev().collect()
    } else {
        (0..plan.ranges.len()).collect()
    };
    for ri in order {
        let range = &plan.ranges[ri];
        let doc_iter: Box<dyn Iterator<Item = (&Vec<u8>, Option<&Arc<Document>>)>> = match index {
            None => Box::new(
                range_after(&coll.docs, range, pos.last.as_ref(), plan.reverse)
                    .map(|(k, d)| (k, Some(d))),
            ),
            Some(ix) => Box::new(
                range_after(&ix.entries, range, pos.last.as_ref(), plan.reverse)
                    .map(|(k, id)| (k, coll.docs.get(id))),
            ),
        };
        for (key, doc) in doc_iter {
            pos.last = Some(key.clone());
            examined += 1;
            pos.keys_examined += 1;
            if let Some(doc) = doc {
                pos.docs_examined += 1;
                let fresh = match &mut pos.seen {
                    Some(seen) => seen.insert(super::collection::id_key_of(doc)),
                    None => true,
                };
                if fresh && filter.matches(doc) && !visit(doc) {
                    return Ok(());
                }
            }
            if examined >= budget {
                return Ok(());
            }
        }
    }
    pos.done = true;
    Ok(())
}

/// Counts matches without fetching documents when the plan is covered; `None` otherwise.
pub fn count_covered(coll: &Collection, plan: &Plan) -> Option<u64> {
    if !plan.covered || plan.dedupe {
        return None;
    }
    let n = match &plan.source {
        Source::Primary => plan
            .ranges
            .iter()
            .map(|r| coll.docs.range::<Vec<u8>, _>(r.clone()).count())
            .sum::<usize>(),
        Source::Index(name) => {
            let ix = coll.index(name)?;
            plan.ranges
                .iter()
                .map(|r| ix.entries.range::<Vec<u8>, _>(r.clone()).count())
                .sum()
        }
    };
    Some(n as u64)
}

/// Key encoding for sort comparisons of whole documents (used when no index provides the order).
pub fn sort_key(doc: &Document, sort: &[(String, bool)]) -> Vec<u8> {
    let mut k = Vec::new();
    for (path, desc) in sort {
        let v = super::path::get(doc, path).cloned().unwrap_or(Bson::Null);
        push_component(&mut k, &v, *desc);
    }
    k
}

/// Parses a sort document (for callers that sort in memory).
pub fn parse_sort(sort: Option<&Document>) -> CmdResult<Vec<(String, bool)>> {
    sort_spec(sort)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devmongo::index::IndexSpec;
    use mongodb::bson::doc;

    fn coll() -> Collection {
        let mut c = Collection::default();
        for i in 0..100 {
            c.insert(doc! {"_id": i, "lang": if i % 2 == 0 {"en"} else {"es"}, "n": i % 10, "done": if i < 50 { Bson::Boolean(true) } else { Bson::Null }})
                .unwrap();
        }
        c.create_index(
            IndexSpec::parse(&doc! {"key": {"lang": 1, "_id": 1}, "name": "wq", "partialFilterExpression": {"done": null}})
                .unwrap(),
        )
        .unwrap();
        c.create_index(IndexSpec::parse(&doc! {"key": {"n": -1}, "name": "n_desc"}).unwrap())
            .unwrap();
        c
    }

    fn run(
        c: &Collection,
        f: Document,
        sort: Option<Document>,
        hint: Option<Bson>,
    ) -> (Plan, Vec<i32>) {
        let filter = Filter::parse(&f).unwrap();
        let p = plan(c, &filter, sort.as_ref(), hint.as_ref()).unwrap();
        let mut out = Vec::new();
        let mut pos = ScanPosition::default();
        while !pos.is_done() {
            scan(c, &p, &filter, &mut pos, 7, |d| {
                out.push(d.get_i32("_id").unwrap());
                true
            })
            .unwrap();
        }
        (p, out)
    }

    #[test]
    fn work_queue_query_uses_partial_index_in_id_order() {
        let c = coll();
        let (p, ids) = run(
            &c,
            doc! {"lang": "en", "done": null, "_id": {"$gt": 60}},
            Some(doc! {"_id": 1}),
            None,
        );
        assert_eq!(p.source, Source::Index("wq".into()));
        assert!(p.provides_sort);
        assert_eq!(ids, (62..100).step_by(2).collect::<Vec<_>>());
        assert_eq!(count_covered(&c, &p), Some(19));
    }

    #[test]
    fn descending_index_and_ranges() {
        let c = coll();
        let (p, ids) = run(
            &c,
            doc! {"n": {"$gte": 3, "$lt": 5}},
            None,
            Some(Bson::String("n_desc".into())),
        );
        assert_eq!(p.source, Source::Index("n_desc".into()));
        let mut expect: Vec<i32> = (0..100).filter(|i| (3..5).contains(&(i % 10))).collect();
        let mut got = ids.clone();
        got.sort();
        expect.sort();
        assert_eq!(got, expect);
        assert!(c.docs.len() == 100);
        let (_, ids) = run(&c, doc! {"_id": {"$lte": 3}}, Some(doc! {"_id": -1}), None);
        assert_eq!(ids, vec![3, 2, 1, 0]);
    }

    #[test]
    fn hints_refuse_missing_and_ineligible_partial_indexes() {
        let c = coll();
        let f = Filter::parse(&doc! {"lang": "en"}).unwrap();
        assert_eq!(
            plan(&c, &f, None, Some(&Bson::String("nope".into())))
                .unwrap_err()
                .code,
            2
        );
        assert_eq!(
            plan(&c, &f, None, Some(&Bson::String("wq".into())))
                .unwrap_err()
                .code,
            2
        );
    }
}
