//! Writes: `insert`, `update` (operators, replacement, `multi`, `upsert`) and `delete`, with
//! mongod's reply shape (`n`, `nModified`, `upserted`, per-statement `writeErrors`) and its
//! `ordered` semantics (stop at the first error, or carry on).

use super::super::error::{CmdResult, CommandError};
use super::super::matcher::{truthy, Filter};
use super::super::store::Store;
use super::super::update::{upsert_seed, Update};
use super::{coll_name, Ctx};
use mongodb::bson::{doc, Bson, Document};

fn statements<'a>(cmd: &'a Document, key: &str) -> CmdResult<&'a Vec<Bson>> {
    match cmd.get(key) {
        Some(Bson::Array(a)) => Ok(a),
        Some(other) => Err(CommandError::type_mismatch(key, "array", other)),
        None => Err(CommandError::parse(format!("BSON field '{key}' is missing but a required field"))),
    }
}

fn write_error(index: usize, e: &CommandError) -> Bson {
    Bson::Document(doc! {"index": index as i32, "code": e.code, "codeName": e.code_name, "errmsg": e.message.clone()})
}

fn finish(mut reply: Document, errors: Vec<Bson>) -> Document {
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    reply.insert("ok", 1.0);
    reply
}

/// Runs `apply` on each statement of `cmd[key]` with mongod's `ordered` semantics (stop at the
/// first failure, or carry on) and returns the per-statement `writeErrors`.
fn each_statement(
    cmd: &Document,
    key: &str,
    mut apply: impl FnMut(usize, &Document) -> CmdResult<()>,
) -> CmdResult<Vec<Bson>> {
    let ordered = cmd.get("ordered").is_none_or(truthy);
    let mut errors = Vec::new();
    for (i, stmt) in statements(cmd, key)?.iter().enumerate() {
        let result = match stmt {
            Bson::Document(d) => apply(i, d),
            other => Err(CommandError::type_mismatch(key, "object", other)),
        };
        if let Err(e) = result {
            errors.push(write_error(i, &e));
            if ordered {
                break;
            }
        }
    }
    Ok(errors)
}

/// `insert`
pub fn insert(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "insert")?;
    let mut n = 0;
    let errors = each_statement(cmd, "documents", |_, d| {
        store.insert(&ctx.db, &coll, d.clone())?;
        n += 1;
        Ok(())
    })?;
    Ok(finish(doc! {"n": n}, errors))
}

/// `update`
pub fn update(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "update")?;
    let mut matched = 0i64;
    let mut modified = 0i64;
    let mut upserted = Vec::new();
    let errors = each_statement(cmd, "updates", |i, stmt| {
        let q = stmt.get_document("q").map_err(|_| CommandError::parse("update statement needs q"))?;
        let u = stmt.get("u").ok_or_else(|| CommandError::parse("update statement needs u"))?;
        if matches!(stmt.get("arrayFilters"), Some(Bson::Array(a)) if !a.is_empty()) {
            return Err(CommandError::bad_value("arrayFilters are not supported by tweet-embed dev-mongo"));
        }
        let multi = stmt.get("multi").is_some_and(truthy);
        let upsert = stmt.get("upsert").is_some_and(truthy);
        let filter = Filter::parse(q)?;
        let update = Update::parse(u)?;
        if multi && matches!(update, Update::Replacement(_)) {
            return Err(CommandError::parse("multi update is not supported for replacement-style update"));
        }
        let (ids, totals) =
            store.matching_ids(&ctx.db, &coll, &filter, stmt.get("hint"), if multi { None } else { Some(1) })?;
        store.scanned = totals;
        if ids.is_empty() && upsert {
            let id = store.upsert_insert(&ctx.db, &coll, upsert_seed(&filter), &update)?;
            upserted.push(Bson::Document(doc! {"index": i as i32, "_id": id}));
            return Ok(());
        }
        for id in ids {
            matched += 1;
            if store.update(&ctx.db, &coll, &id, &update)? {
                modified += 1;
            }
        }
        Ok(())
    })?;
    let mut reply = doc! {"n": matched + upserted.len() as i64, "nModified": modified};
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    Ok(finish(reply, errors))
}

/// `delete`
pub fn delete(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "delete")?;
    let mut n = 0i64;
    let errors = each_statement(cmd, "deletes", |_, stmt| {
        let q = stmt.get_document("q").map_err(|_| CommandError::parse("delete statement needs q"))?;
        let limit = match stmt.get("limit") {
            Some(Bson::Int32(1)) | Some(Bson::Int64(1)) => Some(1),
            Some(Bson::Double(d)) if *d == 1.0 => Some(1),
            _ => None,
        };
        let filter = Filter::parse(q)?;
        let (ids, totals) = store.matching_ids(&ctx.db, &coll, &filter, stmt.get("hint"), limit)?;
        store.scanned = totals;
        for id in ids {
            if store.delete(&ctx.db, &coll, &id) {
                n += 1;
            }
        }
        Ok(())
    })?;
    Ok(finish(doc! {"n": n}, errors))
}
