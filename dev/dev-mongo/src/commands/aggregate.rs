//! `aggregate`: change streams (`$changeStream` first), and the counting and reporting stages
//! this project uses: `$match` (planned on indexes, with a covered count fast path), `$group`
//! (`$sum $avg $min $max $first $last $push $count`), `$sort`, `$limit`, `$skip`, `$project`,
//! `$count`. Unsupported stages are refused by name, never ignored.

use super::super::changestream::ChangeCursor;
use super::super::collection::Collection;
use super::super::cursor::{drain_buffered, CursorKind, DEFAULT_FIRST_BATCH};
use super::super::error::{CmdResult, CommandError};
use super::super::keystring::{compare, encode};
use super::super::matcher::Filter;
use super::super::path;
use super::super::planner::{parse_sort, plan, sort_key};
use super::super::projection::Projection;
use super::super::scan::{count_covered, scan, ScanPosition};
use super::super::store::{ScanTotals, Store};
use super::{count_opt, cursor_reply, Ctx};
use mongodb::bson::{doc, Bson, Document};
use std::collections::{BTreeMap, VecDeque};

/// `aggregate`
pub fn aggregate(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = match cmd.get("aggregate") {
        Some(Bson::String(s)) => Some(s.clone()),
        Some(Bson::Int32(1)) | Some(Bson::Int64(1)) | Some(Bson::Double(_)) => None,
        Some(other) => return Err(CommandError::type_mismatch("aggregate", "string or 1", other)),
        None => return Err(CommandError::parse("missing aggregate")),
    };
    let stages: Vec<Document> = match cmd.get("pipeline") {
        Some(Bson::Array(a)) => a
            .iter()
            .map(|s| match s {
                Bson::Document(d) if d.len() == 1 => Ok(d.clone()),
                _ => Err(CommandError::new(
                    40323,
                    "A pipeline stage specification object must contain exactly one field.",
                )),
            })
            .collect::<CmdResult<_>>()?,
        _ => return Err(CommandError::type_mismatch("pipeline", "array", cmd.get("pipeline").unwrap_or(&Bson::Null))),
    };
    let cursor_opts = match cmd.get("cursor") {
        Some(Bson::Document(c)) => c.clone(),
        _ => {
            return Err(CommandError::parse(
                "The 'cursor' option is required, except for aggregate with the explain argument",
            ))
        }
    };
    let batch = count_opt(&cursor_opts, "batchSize")?.map_or(DEFAULT_FIRST_BATCH, |b| b as usize);
    let ns_coll = coll.clone().unwrap_or_else(|| "$cmd.aggregate".to_string());

    if let Some(Ok(spec)) = stages.first().map(|s| s.get_document("$changeStream")) {
        let rest: Vec<Bson> = stages[1..].iter().cloned().map(Bson::Document).collect();
        let mut cc =
            ChangeCursor::open(&ctx.db, coll.as_deref(), spec, &rest, &mut store.oplog, store.max_event_bytes)?;
        let first = cc.poll(&mut store.oplog, &store.dbs, batch)?;
        let token = cc.resume_token();
        let mut reply = cursor_reply(store, ctx, &ns_coll, first, Some(CursorKind::Change(Box::new(cc))));
        if let Ok(c) = reply.get_document_mut("cursor") {
            c.insert("postBatchResumeToken", token);
        }
        return Ok(reply);
    }
    if stages.iter().any(|s| s.contains_key("$changeStream")) {
        return Err(CommandError::new(40602, "$changeStream is only valid as the first stage in a pipeline."));
    }
    let Some(coll) = coll else {
        return Err(CommandError::bad_value("database-level aggregate supports only $changeStream here"));
    };
    let hint = cmd.get("hint").filter(|h| !matches!(h, Bson::Null));
    let empty = Collection::default();
    let c = store.coll(&ctx.db, &coll).unwrap_or(&empty);
    let (results, totals) = run_pipeline(c, &stages, hint)?;
    store.scanned.keys += totals.keys;
    store.scanned.docs += totals.docs;
    let mut rest: VecDeque<Document> = results.into();
    let mut out = Vec::new();
    drain_buffered(&mut rest, batch, &mut out);
    let more = (!rest.is_empty()).then_some(CursorKind::Buffered(rest));
    Ok(cursor_reply(store, ctx, &coll, out, more))
}

fn run_pipeline(c: &Collection, stages: &[Document], hint: Option<&Bson>) -> CmdResult<(Vec<Document>, ScanTotals)> {
    let (filter, rest) = match stages.first().and_then(|s| s.get("$match")) {
        Some(Bson::Document(m)) => (Filter::parse(m)?, &stages[1..]),
        Some(_) => return Err(CommandError::bad_value("the match filter must be an expression in an object")),
        None => (Filter::And(Vec::new()), stages),
    };
    let plan = plan(c, &filter, None, hint)?;
    // Counting pipelines on covered index bounds never fetch documents.
    if let Some((out, keys)) = rest.first().and_then(|s| covered_count(c, &plan, s)) {
        return Ok((apply_stages(out, &rest[1..])?, ScanTotals { keys, docs: 0 }));
    }
    let mut docs = Vec::new();
    let mut pos = ScanPosition::default();
    while !pos.is_done() {
        scan(c, &plan, &filter, &mut pos, usize::MAX, |d| {
            docs.push((**d).clone());
            true
        })?;
    }
    let mut totals = ScanTotals::default();
    totals.add(&pos);
    Ok((apply_stages(docs, rest)?, totals))
}

/// A counting stage answered from index entries alone: (results, keys counted).
fn covered_count(c: &Collection, plan: &super::super::planner::Plan, stage: &Document) -> Option<(Vec<Document>, u64)> {
    let (name, arg) = stage.iter().next()?;
    match (name.as_str(), arg) {
        ("$count", Bson::String(field)) => {
            let n = count_covered(c, plan)?;
            Some((if n == 0 { vec![] } else { vec![doc! {field.clone(): n as i64}] }, n))
        }
        ("$group", Bson::Document(g)) => {
            let id = g.get("_id")?;
            if matches!(id, Bson::String(s) if s.starts_with('$')) || matches!(id, Bson::Document(_)) {
                return None;
            }
            let mut out = doc! {"_id": id.clone()};
            for (k, v) in g.iter().filter(|(k, _)| *k != "_id") {
                match v {
                    Bson::Document(acc) if matches!(acc.get("$sum"), Some(Bson::Int32(1) | Bson::Int64(1))) => {}
                    Bson::Document(acc) if acc.get("$count").is_some() => {}
                    _ => return None,
                }
                out.insert(k.clone(), Bson::Null);
            }
            let n = count_covered(c, plan)?;
            if n == 0 {
                return Some((vec![], 0));
            }
            for (k, _) in g.iter().filter(|(k, _)| *k != "_id") {
                out.insert(k.clone(), num_out(Num::Int(n as i64)));
            }
            Some((vec![out], n))
        }
        _ => None,
    }
}

fn apply_stages(mut docs: Vec<Document>, stages: &[Document]) -> CmdResult<Vec<Document>> {
    for stage in stages {
        let Some((name, arg)) = stage.iter().next() else {
            continue;
        };
        docs = match (name.as_str(), arg) {
            ("$match", Bson::Document(m)) => {
                let f = Filter::parse(m)?;
                docs.into_iter().filter(|d| f.matches(d)).collect()
            }
            ("$group", Bson::Document(g)) => group(docs, g)?,
            ("$sort", Bson::Document(s)) => {
                let spec = parse_sort(Some(s))?;
                let mut keyed: Vec<(Vec<u8>, Document)> = docs.into_iter().map(|d| (sort_key(&d, &spec), d)).collect();
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
                keyed.into_iter().map(|(_, d)| d).collect()
            }
            ("$limit", n) => {
                let n = as_count(name, n)?;
                docs.truncate(n);
                docs
            }
            ("$skip", n) => {
                let n = as_count(name, n)?;
                docs.into_iter().skip(n).collect()
            }
            ("$project", Bson::Document(p)) => match Projection::parse(p, true)? {
                Some(p) => docs.iter().map(|d| p.apply(d)).collect(),
                None => docs,
            },
            ("$count", Bson::String(field)) => {
                if docs.is_empty() {
                    vec![]
                } else {
                    vec![doc! {field.clone(): docs.len() as i32}]
                }
            }
            (other, _) => {
                return Err(CommandError::new(
                    40324,
                    format!("Unrecognized pipeline stage name: '{other}' (tweet-embed dev-mongo supports $match, $group, $sort, $limit, $skip, $project, $count)"),
                ))
            }
        };
    }
    Ok(docs)
}

fn as_count(stage: &str, v: &Bson) -> CmdResult<usize> {
    match v {
        Bson::Int32(n) if *n >= 0 => Ok(*n as usize),
        Bson::Int64(n) if *n >= 0 => Ok(*n as usize),
        Bson::Double(n) if *n >= 0.0 => Ok(*n as usize),
        _ => Err(CommandError::bad_value(format!("invalid argument to {stage} stage: {v}"))),
    }
}

/// Evaluates a `$group` expression: `"$path"`, a document of expressions, or a literal.
fn eval(doc: &Document, expr: &Bson) -> Bson {
    match expr {
        Bson::String(s) if s.starts_with('$') => path::get(doc, &s[1..]).cloned().unwrap_or(Bson::Null),
        Bson::Document(d) => Bson::Document(d.iter().map(|(k, v)| (k.clone(), eval(doc, v))).collect()),
        other => other.clone(),
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Double(f64),
}

fn num_of(v: &Bson) -> Option<Num> {
    match v {
        Bson::Int32(i) => Some(Num::Int(*i as i64)),
        Bson::Int64(i) => Some(Num::Int(*i)),
        Bson::Double(f) => Some(Num::Double(*f)),
        _ => None,
    }
}

fn num_add(a: Num, b: Num) -> Num {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.checked_add(y).map_or(Num::Double(x as f64 + y as f64), Num::Int),
        (Num::Int(x), Num::Double(y)) | (Num::Double(y), Num::Int(x)) => Num::Double(x as f64 + y),
        (Num::Double(x), Num::Double(y)) => Num::Double(x + y),
    }
}

fn num_out(n: Num) -> Bson {
    match n {
        Num::Int(i) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
        Num::Double(f) => Bson::Double(f),
    }
}

enum Acc {
    Sum(Num),
    Avg(f64, u64),
    Min(Option<Bson>),
    Max(Option<Bson>),
    First(Option<Bson>),
    Last(Bson),
    Push(Vec<Bson>),
}

fn group(docs: Vec<Document>, spec: &Document) -> CmdResult<Vec<Document>> {
    let id_expr =
        spec.get("_id").ok_or_else(|| CommandError::new(15955, "a group specification must include an _id"))?;
    let mut accs_spec: Vec<(String, String, Bson)> = Vec::new();
    for (field, acc) in spec.iter().filter(|(k, _)| *k != "_id") {
        let Bson::Document(acc) = acc else {
            return Err(CommandError::new(40234, format!("The field '{field}' must be an accumulator object")));
        };
        let Some((op, arg)) = acc.iter().next() else {
            return Err(CommandError::new(40234, format!("The field '{field}' must specify one accumulator")));
        };
        let (op, arg) = if op == "$count" { ("$sum".to_string(), Bson::Int32(1)) } else { (op.clone(), arg.clone()) };
        if !["$sum", "$avg", "$min", "$max", "$first", "$last", "$push"].contains(&op.as_str()) {
            return Err(CommandError::new(15952, format!("unknown group operator '{op}' (tweet-embed dev-mongo supports $sum $avg $min $max $first $last $push $count)")));
        }
        accs_spec.push((field.clone(), op, arg));
    }
    let mut groups: BTreeMap<Vec<u8>, (Bson, Vec<Acc>)> = BTreeMap::new();
    for d in &docs {
        let key = eval(d, id_expr);
        let entry = groups.entry(encode(&key)).or_insert_with(|| {
            let accs = accs_spec
                .iter()
                .map(|(_, op, _)| match op.as_str() {
                    "$sum" => Acc::Sum(Num::Int(0)),
                    "$avg" => Acc::Avg(0.0, 0),
                    "$min" => Acc::Min(None),
                    "$max" => Acc::Max(None),
                    "$first" => Acc::First(None),
                    "$last" => Acc::Last(Bson::Null),
                    _ => Acc::Push(Vec::new()),
                })
                .collect();
            (key.clone(), accs)
        });
        for (acc, (_, _, arg)) in entry.1.iter_mut().zip(&accs_spec) {
            let v = eval(d, arg);
            match acc {
                Acc::Sum(s) => {
                    if let Some(n) = num_of(&v) {
                        *s = num_add(*s, n);
                    }
                }
                Acc::Avg(total, n) => {
                    if let Some(x) = num_of(&v) {
                        *total += match x {
                            Num::Int(i) => i as f64,
                            Num::Double(f) => f,
                        };
                        *n += 1;
                    }
                }
                Acc::Min(m) if !matches!(v, Bson::Null) => {
                    if m.as_ref().is_none_or(|cur| compare(&v, cur).is_lt()) {
                        *m = Some(v);
                    }
                }
                Acc::Max(m) if !matches!(v, Bson::Null) => {
                    if m.as_ref().is_none_or(|cur| compare(&v, cur).is_gt()) {
                        *m = Some(v);
                    }
                }
                Acc::Min(_) | Acc::Max(_) => {}
                Acc::First(f) => {
                    if f.is_none() {
                        *f = Some(v);
                    }
                }
                Acc::Last(l) => *l = v,
                Acc::Push(p) => p.push(v),
            }
        }
    }
    Ok(groups
        .into_values()
        .map(|(key, accs)| {
            let mut out = doc! {"_id": key};
            for (acc, (field, _, _)) in accs.into_iter().zip(&accs_spec) {
                out.insert(
                    field.clone(),
                    match acc {
                        Acc::Sum(s) => num_out(s),
                        Acc::Avg(_, 0) => Bson::Null,
                        Acc::Avg(t, n) => Bson::Double(t / n as f64),
                        Acc::Min(m) | Acc::Max(m) | Acc::First(m) => m.unwrap_or(Bson::Null),
                        Acc::Last(l) => l,
                        Acc::Push(p) => Bson::Array(p),
                    },
                );
            }
            out
        })
        .collect())
}
