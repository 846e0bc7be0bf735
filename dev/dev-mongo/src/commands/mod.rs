//! Command dispatch: one function per command, grouped by what they touch (handshake, reads,
//! writes, administration, aggregation). Commands run synchronously under the store lock; a
//! change-stream getMore that finds nothing asks the connection to wait and call again.

mod admin;
mod aggregate;
mod handshake;
mod read;
mod write;

use super::cursor::{Cursor, CursorKind};
use super::error::{code, CmdResult, CommandError};
use super::store::Store;
use mongodb::bson::{doc, Bson, Document};
use std::time::Duration;

/// Per-request context.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Database the command addresses (`$db`).
    pub db: String,
    /// `host:port` the server presents in `hello`.
    pub me: String,
    /// Replica-set name.
    pub set_name: String,
    /// This connection's id.
    pub connection_id: i64,
    /// A blocking getMore has waited its `maxTimeMS`: answer even if empty.
    pub final_attempt: bool,
}

/// What the connection should do with a command's outcome.
#[derive(Debug)]
pub enum Outcome {
    /// Send this reply.
    Reply(Document),
    /// Close the connection without replying (fault injection).
    Close,
    /// A change-stream getMore found nothing: wait up to this long for a write, then call again.
    Await(Duration),
}

/// Runs one command.
pub fn execute(store: &mut Store, ctx: &Ctx, cmd: &Document) -> CmdResult<Outcome> {
    let Some(name) = cmd.keys().next().cloned() else {
        return Err(CommandError::new(code::FAILED_TO_PARSE, "empty command document"));
    };
    if let Some(injected) = super::faults::FailPoint::take(&mut store.fail, &name) {
        return match injected {
            super::faults::Injected::Error(e) => Err(e),
            super::faults::Injected::Close => Ok(Outcome::Close),
        };
    }
    let reply = match name.as_str() {
        "hello" | "isMaster" | "ismaster" => handshake::hello(store, ctx, cmd),
        "ping" => Ok(doc! {"ok": 1.0}),
        "buildInfo" | "buildinfo" => Ok(handshake::build_info()),
        "endSessions" | "killSessions" | "killAllSessions" | "refreshSessions" | "startSession" => Ok(doc! {"ok": 1.0}),
        "getParameter" => Ok(doc! {"featureCompatibilityVersion": {"version": "7.0"}, "ok": 1.0}),
        "whatsmyuri" => Ok(doc! {"you": ctx.me.clone(), "ok": 1.0}),
        "connectionStatus" => {
            Ok(doc! {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}, "ok": 1.0})
        }
        "serverStatus" => Ok(handshake::server_status(store)),
        "hostInfo" => Ok(doc! {"system": {"hostname": ctx.me.clone()}, "ok": 1.0}),
        "insert" => write::insert(store, ctx, cmd),
        "update" => write::update(store, ctx, cmd),
        "delete" => write::delete(store, ctx, cmd),
        "find" => read::find(store, ctx, cmd),
        "getMore" => return read::get_more(store, ctx, cmd),
        "killCursors" => read::kill_cursors(store, cmd),
        "count" => read::count(store, ctx, cmd),
        "distinct" => read::distinct(store, ctx, cmd),
        "aggregate" => aggregate::aggregate(store, ctx, cmd),
        "createIndexes" => admin::create_indexes(store, ctx, cmd),
        "listIndexes" => admin::list_indexes(store, ctx, cmd),
        "dropIndexes" | "deleteIndexes" => admin::drop_indexes(store, ctx, cmd),
        "listCollections" => admin::list_collections(store, ctx, cmd),
        "listDatabases" => admin::list_databases(store, cmd),
        "create" => admin::create(store, ctx, cmd),
        "drop" => admin::drop(store, ctx, cmd),
        "dropDatabase" => admin::drop_database(store, ctx),
        "renameCollection" => admin::rename_collection(store, cmd),
        "configureFailPoint" => admin::configure_fail_point(store, cmd),
        other => Err(CommandError::new(code::COMMAND_NOT_FOUND, format!("no such command: '{other}'"))),
    }?;
    Ok(Outcome::Reply(reply))
}

/// The collection name a command addresses (`{find: "tweets"}`).
fn coll_name(cmd: &Document, key: &str) -> CmdResult<String> {
    match cmd.get(key) {
        Some(Bson::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(other) => Err(CommandError::new(
            code::INVALID_OPTIONS.min(73),
            format!("collection name has invalid type {}", super::error::type_name(other)),
        )),
        None => Err(CommandError::parse(format!("missing {key}"))),
    }
}

/// A non-negative count option (`batchSize`, `limit`, `skip`).
fn count_opt(cmd: &Document, key: &str) -> CmdResult<Option<u64>> {
    match cmd.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(n)) if *n >= 0 => Ok(Some(*n as u64)),
        Some(Bson::Int64(n)) if *n >= 0 => Ok(Some(*n as u64)),
        Some(Bson::Double(n)) if *n >= 0.0 && n.fract() == 0.0 => Ok(Some(*n as u64)),
        Some(Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_)) => {
            Err(CommandError::bad_value(format!("{key} value must be non-negative")))
        }
        Some(other) => Err(CommandError::type_mismatch(key, "number", other)),
    }
}

/// An optional sub-document option (`filter`, `sort`, `projection`).
fn doc_opt<'a>(cmd: &'a Document, key: &str) -> CmdResult<Option<&'a Document>> {
    match cmd.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d)),
        Some(other) => Err(CommandError::type_mismatch(key, "object", other)),
    }
}

/// Registers a cursor if results remain and builds the `{cursor: {firstBatch, id, ns}}` reply.
fn cursor_reply(store: &mut Store, ctx: &Ctx, coll: &str, batch: Vec<Document>, rest: Option<CursorKind>) -> Document {
    let ns = format!("{}.{coll}", ctx.db);
    let id = match rest {
        Some(kind) => store.add_cursor(Cursor {
            ns: ns.clone(),
            db: ctx.db.clone(),
            coll: coll.to_string(),
            kind,
            last_used: std::time::Instant::now(),
        }),
        None => 0,
    };
    doc! {"cursor": {"firstBatch": batch, "id": id, "ns": ns}, "ok": 1.0}
}
