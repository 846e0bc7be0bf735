//! Reads: `find` (filter, sort, projection, hint, limit, skip, batchSize, singleBatch),
//! `getMore` (blocking for change streams), `killCursors`, `count` and `distinct`.

use super::super::cursor::{drain_buffered, CursorKind, FindCursor, DEFAULT_FIRST_BATCH};
use super::super::error::{code, CmdResult, CommandError};
use super::super::keystring::encode;
use super::super::matcher::{truthy, Filter};
use super::super::path::reach;
use super::super::planner::{parse_sort, plan, sort_key};
use super::super::projection::Projection;
use super::super::scan::{count_covered, scan, ScanPosition};
use super::super::store::Store;
use super::{coll_name, count_opt, cursor_reply, doc_opt, Ctx, Outcome};
use mongodb::bson::{doc, Bson, Document};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

fn parse_filter(cmd: &Document, key: &str) -> CmdResult<Filter> {
    Filter::parse(doc_opt(cmd, key)?.unwrap_or(&Document::new()))
}

/// `find`
pub fn find(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "find")?;
    let filter = parse_filter(cmd, "filter")?;
    let sort = doc_opt(cmd, "sort")?.filter(|s| !s.is_empty());
    let projection = match doc_opt(cmd, "projection")? {
        Some(p) => Projection::parse(p, false)?,
        None => None,
    };
    let limit = count_opt(cmd, "limit")?.filter(|l| *l > 0);
    let skip = count_opt(cmd, "skip")?.unwrap_or(0);
    let batch = count_opt(cmd, "batchSize")?.map_or(DEFAULT_FIRST_BATCH, |b| b as usize);
    let single = cmd.get("singleBatch").is_some_and(truthy);
    let hint = cmd.get("hint").filter(|h| !matches!(h, Bson::Null));
    let Some(c) = store.coll(&ctx.db, &coll) else {
        return Ok(cursor_reply(store, ctx, &coll, Vec::new(), None));
    };
    let plan = plan(c, &filter, sort, hint)?;
    let mut out = Vec::new();
    if let (Some(sort), false) = (sort, plan.provides_sort) {
        // No index gives this order: collect the matches and sort them in memory.
        let spec = parse_sort(Some(sort))?;
        let mut all: Vec<(Vec<u8>, Document)> = Vec::new();
        let mut pos = ScanPosition::default();
        while !pos.is_done() {
            scan(c, &plan, &filter, &mut pos, usize::MAX, |d| {
                all.push((sort_key(d, &spec), (**d).clone()));
                true
            })?;
        }
        store.scanned.add(&pos);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let it = all.into_iter().skip(skip as usize).take(limit.map_or(usize::MAX, |l| l as usize));
        let mut rest: VecDeque<Document> =
            it.map(|(_, d)| projection.as_ref().map_or_else(|| d.clone(), |p| p.apply(&d))).collect();
        drain_buffered(&mut rest, batch, &mut out);
        let more = (!rest.is_empty() && !single).then_some(CursorKind::Buffered(rest));
        return Ok(cursor_reply(store, ctx, &coll, out, more));
    }
    let mut cursor =
        FindCursor { plan, filter, projection, limit_left: limit, skip_left: skip, pos: ScanPosition::default() };
    let done = cursor.fill(Some(c), batch, &mut out)?;
    store.scanned.take_from(&mut cursor.pos);
    let more = (!done && !single).then_some(CursorKind::Find(Box::new(cursor)));
    Ok(cursor_reply(store, ctx, &coll, out, more))
}

/// `getMore`
pub fn get_more(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Outcome> {
    let id = match cmd.get("getMore") {
        Some(Bson::Int64(id)) => *id,
        Some(Bson::Int32(id)) => *id as i64,
        Some(other) => return Err(CommandError::type_mismatch("getMore", "long", other)),
        None => return Err(CommandError::parse("missing getMore")),
    };
    let coll = coll_name(cmd, "collection")?;
    let Some(mut cursor) = store.cursors.remove(&id) else {
        return Err(CommandError::new(code::CURSOR_NOT_FOUND, format!("cursor id {id} not found")));
    };
    if cursor.db != ctx.db || cursor.coll != coll {
        let msg = format!(
            "Requested getMore on namespace '{}.{coll}', but cursor belongs to a different namespace {}",
            ctx.db, cursor.ns
        );
        store.cursors.insert(id, cursor);
        return Err(CommandError::new(13, msg));
    }
    let batch = count_opt(cmd, "batchSize")?.filter(|b| *b > 0).map_or(usize::MAX, |b| b as usize);
    let mut out = Vec::new();
    let mut token = None;
    let done = match &mut cursor.kind {
        CursorKind::Find(fc) => {
            let c = store.dbs.get(&cursor.db).and_then(|d| d.get(&cursor.coll));
            // On an error the cursor is dead: it is not put back.
            let done = fc.fill(c, batch, &mut out)?;
            store.scanned.take_from(&mut fc.pos);
            done
        }
        CursorKind::Buffered(buf) => {
            drain_buffered(buf, batch, &mut out);
            buf.is_empty()
        }
        CursorKind::Change(cc) => {
            // The limit as it is now: a test may lower it under an open stream.
            cc.max_event_bytes = store.max_event_bytes;
            out = cc.poll(&mut store.oplog, &store.dbs, batch)?;
            token = Some(cc.resume_token());
            if out.is_empty() && !ctx.final_attempt && !cc.invalidated {
                let wait = match cmd.get("maxTimeMS") {
                    Some(Bson::Int32(ms)) => *ms as u64,
                    Some(Bson::Int64(ms)) => *ms as u64,
                    _ => 1000,
                };
                cursor.last_used = std::time::Instant::now();
                store.cursors.insert(id, cursor);
                return Ok(Outcome::Await(Duration::from_millis(wait)));
            }
            cc.invalidated
        }
    };
    let ns = cursor.ns.clone();
    let reply_id = if done {
        0
    } else {
        cursor.last_used = std::time::Instant::now();
        store.cursors.insert(id, cursor);
        id
    };
    let mut c = doc! {"nextBatch": out, "id": reply_id, "ns": ns};
    if let Some(t) = token {
        c.insert("postBatchResumeToken", t);
    }
    Ok(Outcome::Reply(doc! {"cursor": c, "ok": 1.0}))
}

/// `killCursors`
pub fn kill_cursors(store: &mut Store, cmd: &Document) -> CmdResult<Document> {
    let ids = match cmd.get("cursors") {
        Some(Bson::Array(a)) => a.clone(),
        _ => return Err(CommandError::parse("killCursors needs a cursors array")),
    };
    let (mut killed, mut not_found) = (Vec::new(), Vec::new());
    for id in ids {
        let key = match id {
            Bson::Int64(i) => i,
            Bson::Int32(i) => i as i64,
            _ => continue,
        };
        if store.cursors.remove(&key).is_some() {
            killed.push(Bson::Int64(key));
        } else {
            not_found.push(Bson::Int64(key));
        }
    }
    Ok(
        doc! {"cursorsKilled": killed, "cursorsNotFound": not_found, "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0},
    )
}

/// `count`: counts index entries without fetching documents when the bounds are the filter.
pub fn count(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "count")?;
    let filter = parse_filter(cmd, "query")?;
    let limit = count_opt(cmd, "limit")?.filter(|l| *l > 0);
    let skip = count_opt(cmd, "skip")?.unwrap_or(0);
    let Some(c) = store.coll(&ctx.db, &coll) else {
        return Ok(doc! {"n": 0, "ok": 1.0});
    };
    let hint = cmd.get("hint").filter(|h| !matches!(h, Bson::Null));
    // As mongod: a count without a predicate (the driver's estimatedDocumentCount) is answered
    // from the collection's metadata, reading neither keys nor documents.
    if filter_is_empty(cmd) && hint.is_none() {
        let n = (c.docs.len() as u64).saturating_sub(skip).min(limit.unwrap_or(u64::MAX));
        return Ok(doc! {"n": n as i64, "ok": 1.0});
    }
    let plan = plan(c, &filter, None, hint)?;
    let total = match count_covered(c, &plan) {
        Some(n) => {
            store.scanned.keys += n;
            n
        }
        None => {
            let mut n = 0u64;
            let mut pos = ScanPosition::default();
            while !pos.is_done() {
                scan(c, &plan, &filter, &mut pos, usize::MAX, |_| {
                    n += 1;
                    true
                })?;
            }
            store.scanned.add(&pos);
            n
        }
    };
    let n = total.saturating_sub(skip).min(limit.unwrap_or(u64::MAX));
    Ok(doc! {"n": n as i64, "ok": 1.0})
}

/// Whether `cmd`'s `query` is missing, null or `{}`.
fn filter_is_empty(cmd: &Document) -> bool {
    match cmd.get("query") {
        None | Some(Bson::Null) => true,
        Some(Bson::Document(d)) => d.is_empty(),
        Some(_) => false,
    }
}

/// `distinct`
pub fn distinct(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "distinct")?;
    let key = cmd.get_str("key").map_err(|_| CommandError::parse("distinct needs a string key"))?.to_string();
    let filter = parse_filter(cmd, "query")?;
    let Some(c) = store.coll(&ctx.db, &coll) else {
        return Ok(doc! {"values": [], "ok": 1.0});
    };
    let plan = plan(c, &filter, None, cmd.get("hint").filter(|h| !matches!(h, Bson::Null)))?;
    let mut values: BTreeMap<Vec<u8>, Bson> = BTreeMap::new();
    let mut pos = ScanPosition::default();
    while !pos.is_done() {
        scan(c, &plan, &filter, &mut pos, usize::MAX, |d| {
            for v in reach(d, &key).values {
                match v {
                    Bson::Array(items) => items.iter().for_each(|i| {
                        values.entry(encode(i)).or_insert_with(|| i.clone());
                    }),
                    other => {
                        values.entry(encode(other)).or_insert_with(|| other.clone());
                    }
                }
            }
            true
        })?;
    }
    store.scanned.add(&pos);
    Ok(doc! {"values": values.into_values().collect::<Vec<_>>(), "ok": 1.0})
}
