//! Scanning a plan's key ranges from a saved position: the primary `_id` order or an index,
//! forwards or backwards, deduplicating multikey entries, with a budget per call so one batch
//! never holds the lock for long. A cursor resumes strictly after the last key it returned.

use super::bounds::KeyRange;
use super::collection::Collection;
use super::error::{CmdResult, CommandError};
use super::matcher::Filter;
use super::planner::{Plan, Source};
use mongodb::bson::Document;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

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
    range: &KeyRange,
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
    if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) = (&start, &end) {
        if s > e || (s == e && !(matches!(start, Bound::Included(_)) && matches!(end, Bound::Included(_)))) {
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

/// A key and the document it points to (none if an index entry outlived its document).
type Candidate<'a> = (&'a Vec<u8>, Option<&'a Arc<Document>>);

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
            CommandError::new(super::error::code::QUERY_PLAN_KILLED, format!("index '{name}' dropped"))
        })?),
    };
    if plan.dedupe && pos.seen.is_none() {
        pos.seen = Some(HashSet::new());
    }
    let mut examined = 0;
    let order: Vec<usize> =
        if plan.reverse { (0..plan.ranges.len()).rev().collect() } else { (0..plan.ranges.len()).collect() };
    for ri in order {
        let range = &plan.ranges[ri];
        let doc_iter: Box<dyn Iterator<Item = Candidate>> = match index {
            None => {
                Box::new(range_after(&coll.docs, range, pos.last.as_ref(), plan.reverse).map(|(k, d)| (k, Some(d))))
            }
            Some(ix) => Box::new(
                range_after(&ix.entries, range, pos.last.as_ref(), plan.reverse).map(|(k, id)| (k, coll.docs.get(id))),
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
        Source::Primary => plan.ranges.iter().map(|r| coll.docs.range::<Vec<u8>, _>(r.clone()).count()).sum::<usize>(),
        Source::Index(name) => {
            let ix = coll.index(name)?;
            plan.ranges.iter().map(|r| ix.entries.range::<Vec<u8>, _>(r.clone()).count()).sum()
        }
    };
    Some(n as u64)
}
