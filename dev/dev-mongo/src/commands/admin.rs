//! Administration: indexes (`createIndexes`, `listIndexes`, `dropIndexes`), collections and
//! databases (`create`, `drop`, `dropDatabase`, `listCollections`, `listDatabases`), and the
//! `failCommand` fail point.

use super::super::cursor::{drain_buffered, CursorKind, DEFAULT_FIRST_BATCH};
use super::super::error::{code, CmdResult, CommandError};
use super::super::faults::{configured_reply, FailPoint};
use super::super::index::{IndexSpec, ID_INDEX};
use super::super::matcher::{truthy, Filter};
use super::super::store::Store;
use super::{coll_name, count_opt, cursor_reply, doc_opt, Ctx};
use mongodb::bson::{doc, Bson, Document};
use std::collections::VecDeque;

/// `createIndexes`
pub fn create_indexes(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "createIndexes")?;
    let specs = match cmd.get("indexes") {
        Some(Bson::Array(a)) if !a.is_empty() => a,
        _ => return Err(CommandError::parse("createIndexes needs a non-empty indexes array")),
    };
    let parsed = specs
        .iter()
        .map(|s| match s {
            Bson::Document(d) => IndexSpec::parse(d),
            other => Err(CommandError::type_mismatch("indexes", "object", other)),
        })
        .collect::<CmdResult<Vec<_>>>()?;
    let created_collection = store.coll(&ctx.db, &coll).is_none();
    let c = store.coll_mut(&ctx.db, &coll);
    let before = c.indexes.len() as i32 + 1;
    let mut created = 0;
    for spec in parsed {
        if c.create_index(spec)? {
            created += 1;
        }
    }
    let mut reply = doc! {
        "numIndexesBefore": before,
        "numIndexesAfter": before + created,
        "createdCollectionAutomatically": created_collection,
        "ok": 1.0,
    };
    if created == 0 {
        reply.insert("note", "all indexes already exist");
    }
    Ok(reply)
}

/// `listIndexes`
pub fn list_indexes(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "listIndexes")?;
    let Some(c) = store.coll(&ctx.db, &coll) else {
        return Err(CommandError::new(code::NAMESPACE_NOT_FOUND, format!("ns does not exist: {}.{coll}", ctx.db)));
    };
    let mut all: VecDeque<Document> = std::iter::once(doc! {"v": 2, "key": {"_id": 1}, "name": ID_INDEX})
        .chain(c.indexes.iter().map(|i| i.spec.to_document()))
        .collect();
    buffered_reply(store, ctx, &coll, cmd, &mut all)
}

fn buffered_reply(
    store: &mut Store,
    ctx: &Ctx,
    coll: &str,
    cmd: &Document,
    all: &mut VecDeque<Document>,
) -> CmdResult<Document> {
    let batch = match cmd.get_document("cursor") {
        Ok(c) => count_opt(c, "batchSize")?.map_or(DEFAULT_FIRST_BATCH, |b| b as usize),
        Err(_) => DEFAULT_FIRST_BATCH,
    };
    let mut out = Vec::new();
    drain_buffered(all, batch, &mut out);
    let rest = (!all.is_empty()).then(|| CursorKind::Buffered(std::mem::take(all)));
    Ok(cursor_reply(store, ctx, coll, out, rest))
}

/// `dropIndexes`: by name, by key, a list of names, or `"*"`.
pub fn drop_indexes(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let name = cmd.keys().next().cloned().unwrap_or_default();
    let coll = coll_name(cmd, &name)?;
    let Some(c) = store.dbs.get_mut(&ctx.db).and_then(|d| d.get_mut(&coll)) else {
        return Err(CommandError::new(code::NAMESPACE_NOT_FOUND, format!("ns not found {}.{coll}", ctx.db)));
    };
    let before = c.indexes.len() as i32 + 1;
    match cmd.get("index") {
        Some(Bson::String(s)) if s == "*" => c.indexes.clear(),
        Some(Bson::String(s)) => c.drop_index(s)?,
        Some(Bson::Array(names)) => {
            for n in names {
                c.drop_index(n.as_str().unwrap_or_default())?;
            }
        }
        Some(Bson::Document(key)) => {
            let name =
                c.indexes.iter().find(|i| &i.spec.key == key).map(|i| i.spec.name.clone()).ok_or_else(|| {
                    CommandError::new(code::INDEX_NOT_FOUND, format!("can't find index with key: {key}"))
                })?;
            c.drop_index(&name)?;
        }
        _ => return Err(CommandError::parse("dropIndexes needs index: name, key, [names] or \"*\"")),
    }
    Ok(doc! {"nIndexesWas": before, "ok": 1.0})
}

/// `listCollections`
pub fn list_collections(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let filter = Filter::parse(doc_opt(cmd, "filter")?.unwrap_or(&Document::new()))?;
    let name_only = cmd.get("nameOnly").is_some_and(truthy);
    let mut all: VecDeque<Document> = store
        .dbs
        .get(&ctx.db)
        .map(|d| {
            d.keys()
                .map(|name| {
                    if name_only {
                        doc! {"name": name.clone(), "type": "collection"}
                    } else {
                        doc! {
                            "name": name.clone(),
                            "type": "collection",
                            "options": {},
                            "info": {"readOnly": false},
                            "idIndex": {"v": 2, "key": {"_id": 1}, "name": ID_INDEX},
                        }
                    }
                })
                .filter(|d| filter.matches(d))
                .collect()
        })
        .unwrap_or_default();
    buffered_reply(store, ctx, "$cmd.listCollections", cmd, &mut all)
}

/// `listDatabases`
pub fn list_databases(store: &mut Store, cmd: &Document) -> CmdResult<Document> {
    let name_only = cmd.get("nameOnly").is_some_and(truthy);
    let dbs: Vec<Bson> = store
        .dbs
        .iter()
        .filter(|(_, colls)| !colls.is_empty())
        .map(|(name, colls)| {
            let docs: usize = colls.values().map(|c| c.docs.len()).sum();
            Bson::Document(if name_only {
                doc! {"name": name.clone()}
            } else {
                doc! {"name": name.clone(), "sizeOnDisk": (docs * 256) as i64, "empty": docs == 0}
            })
        })
        .collect();
    Ok(doc! {"databases": dbs, "totalSize": 0_i64, "ok": 1.0})
}

/// `create`
pub fn create(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "create")?;
    if store.coll(&ctx.db, &coll).is_some() {
        return Err(CommandError::new(48, format!("Collection {}.{coll} already exists.", ctx.db)));
    }
    store.coll_mut(&ctx.db, &coll);
    Ok(doc! {"ok": 1.0})
}

/// `drop`: like mongod 7.0, dropping a missing collection succeeds.
pub fn drop(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Document> {
    let coll = coll_name(cmd, "drop")?;
    let n = store.coll(&ctx.db, &coll).map_or(0, |c| c.indexes.len() as i32 + 1);
    store.drop_collection(&ctx.db, &coll);
    Ok(doc! {"nIndexesWas": n, "ns": format!("{}.{coll}", ctx.db), "ok": 1.0})
}

/// `dropDatabase`
pub fn drop_database(store: &mut Store, ctx: &Ctx) -> CmdResult<Document> {
    let names: Vec<String> = store.dbs.get(&ctx.db).map(|d| d.keys().cloned().collect()).unwrap_or_default();
    for name in names {
        store.drop_collection(&ctx.db, &name);
    }
    store.dbs.remove(&ctx.db);
    Ok(doc! {"dropped": ctx.db.clone(), "ok": 1.0})
}

/// `renameCollection: "db.from", to: "db.to", dropTarget?` (run on `admin`): moves the
/// collection with its indexes; a stream on the source ends with `rename` and `invalidate`.
pub fn rename_collection(store: &mut Store, cmd: &Document) -> CmdResult<Document> {
    let split = |key: &str| -> CmdResult<(String, String)> {
        let ns = cmd.get_str(key).map_err(|_| CommandError::new(2, format!("{key} must be a namespace string")))?;
        ns.split_once('.')
            .filter(|(db, coll)| !db.is_empty() && !coll.is_empty())
            .map(|(db, coll)| (db.to_string(), coll.to_string()))
            .ok_or_else(|| CommandError::new(73, format!("Invalid namespace specified '{ns}'")))
    };
    let (from, to) = (split("renameCollection")?, split("to")?);
    if store.coll(&from.0, &from.1).is_none() {
        return Err(CommandError::new(code::NAMESPACE_NOT_FOUND, "Source collection does not exist"));
    }
    if store.coll(&to.0, &to.1).is_some() {
        if !cmd.get_bool("dropTarget").unwrap_or(false) {
            return Err(CommandError::new(48, "target namespace exists"));
        }
        store.drop_collection(&to.0, &to.1);
    }
    store.rename_collection((&from.0, &from.1), (&to.0, &to.1));
    Ok(doc! {"ok": 1.0})
}

/// `configureFailPoint: "failCommand"`
pub fn configure_fail_point(store: &mut Store, cmd: &Document) -> CmdResult<Document> {
    let previous = store.fail.as_ref().map_or(0, |f| f.times);
    store.fail = FailPoint::from_command(cmd)?;
    Ok(configured_reply(previous))
}
