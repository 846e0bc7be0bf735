//! Query planning: picks the `_id` order or a secondary index for a filter, sort and hint, with
//! key ranges from [`super::bounds`], so a cursor resumes in O(log n) and a range query costs
//! O(log n + k) when [`super::scan`] runs the plan.
//!
//! The planner only narrows candidates: every candidate is still checked by the full filter,
//! except in [`super::scan::count_covered`], which counts only when the ranges are exactly the filter.

use super::bounds::{build_ranges, count_leaves, field_bounds, FieldBounds, KeyRange, Ranges};
use super::collection::Collection;
use super::error::{CmdResult, CommandError};
use super::index::{push_component, Index, ID_INDEX};
use super::matcher::{Filter, Pred};
use mongodb::bson::{Bson, Document};

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
    pub ranges: Vec<KeyRange>,
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

/// The error mongod gives for a hint it cannot use.
fn bad_hint() -> CommandError {
    CommandError::bad_value("error processing query: planner returned error :: caused by :: hint provided does not correspond to an existing index")
}

/// Chooses a plan.
pub fn plan(coll: &Collection, filter: &Filter, sort: Option<&Document>, hint: Option<&Bson>) -> CmdResult<Plan> {
    let sort_fields = sort_spec(sort)?;
    if let Some(hint) = hint {
        let name = match hint {
            Bson::String(name) => name.clone(),
            Bson::Document(key) if key.contains_key("$natural") => return Ok(primary_plan(filter, &sort_fields)),
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
            _ => Err(CommandError::bad_value(format!(
                "$sort key ordering must be 1 (for ascending) or -1 (for descending), got {v} for {k}"
            ))),
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
    let Ranges { ranges, single_points: single, exact, .. } = build_ranges(filter, &fields, false, false);
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
    let Ranges { ranges, single_points: single, bounded_fields: bounded, exact } =
        build_ranges(filter, &index.spec.fields, index.multikey, index.spec.sparse);
    let order = if index.multikey { None } else { sort_order(&index.spec.fields, single, sort) };
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
    build_ranges(&residual, &index.spec.fields, index.multikey, index.spec.sparse).exact
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
    use crate::index::IndexSpec;
    use crate::scan::{count_covered, scan, ScanPosition};
    use mongodb::bson::doc;

    fn coll() -> Collection {
        let mut c = Collection::default();
        for i in 0..100 {
            c.insert(doc! {"_id": i, "lang": if i % 2 == 0 {"en"} else {"es"}, "n": i % 10, "done": if i < 50 { Bson::Boolean(true) } else { Bson::Null }})
                .unwrap();
        }
        c.create_index(
            IndexSpec::parse(
                &doc! {"key": {"lang": 1, "_id": 1}, "name": "wq", "partialFilterExpression": {"done": null}},
            )
            .unwrap(),
        )
        .unwrap();
        c.create_index(IndexSpec::parse(&doc! {"key": {"n": -1}, "name": "n_desc"}).unwrap()).unwrap();
        c
    }

    fn run(c: &Collection, f: Document, sort: Option<Document>, hint: Option<Bson>) -> (Plan, Vec<i32>) {
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
        let (p, ids) = run(&c, doc! {"lang": "en", "done": null, "_id": {"$gt": 60}}, Some(doc! {"_id": 1}), None);
        assert_eq!(p.source, Source::Index("wq".into()));
        assert!(p.provides_sort);
        assert_eq!(ids, (62..100).step_by(2).collect::<Vec<_>>());
        assert_eq!(count_covered(&c, &p), Some(19));
    }

    #[test]
    fn descending_index_and_ranges() {
        let c = coll();
        let (p, ids) = run(&c, doc! {"n": {"$gte": 3, "$lt": 5}}, None, Some(Bson::String("n_desc".into())));
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
        assert_eq!(plan(&c, &f, None, Some(&Bson::String("nope".into()))).unwrap_err().code, 2);
        assert_eq!(plan(&c, &f, None, Some(&Bson::String("wq".into()))).unwrap_err().code, 2);
    }
}
