//! Handshake and server information: `hello`/`isMaster` as a one-member replica set primary,
//! `buildInfo`, `serverStatus`.

use super::super::error::CmdResult;
use super::super::store::Store;
use super::Ctx;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};

/// `hello` / `isMaster`: a writable primary of the one-member set, wire versions 0–21 (7.0).
/// `topologyVersion` is left out on purpose: with it drivers switch to awaitable hello.
pub fn hello(store: &mut Store, ctx: &Ctx, _cmd: &Document) -> CmdResult<Document> {
    let ts = store.oplog.last();
    let now = DateTime::now();
    Ok(doc! {
        "helloOk": true,
        "ismaster": true,
        "isWritablePrimary": true,
        "setName": ctx.set_name.clone(),
        "setVersion": 1,
        "hosts": [ctx.me.clone()],
        "primary": ctx.me.clone(),
        "me": ctx.me.clone(),
        "electionId": ObjectId::from_bytes([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1]),
        "lastWrite": {
            "opTime": {"ts": ts, "t": 1_i64},
            "lastWriteDate": now,
            "majorityOpTime": {"ts": ts, "t": 1_i64},
            "majorityWriteDate": now,
        },
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "maxMessageSizeBytes": super::super::wire::MAX_MESSAGE_SIZE as i32,
        "maxWriteBatchSize": 100_000,
        "localTime": now,
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": ctx.connection_id,
        "minWireVersion": 0,
        "maxWireVersion": 21,
        "readOnly": false,
        "ok": 1.0,
    })
}

/// `buildInfo`: presents as MongoDB 7.0.
pub fn build_info() -> Document {
    doc! {
        "version": "7.0.0",
        "gitVersion": "tweet-embed-dev-mongo",
        "versionArray": [7, 0, 0, 0],
        "bits": 64,
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "storageEngines": ["tweet-embed-dev"],
        "ok": 1.0,
    }
}

/// `serverStatus`: the few figures that mean something here.
pub fn server_status(store: &Store) -> Document {
    let collections: usize = store.dbs.values().map(|d| d.len()).sum();
    doc! {
        "host": "tweet-embed-dev-mongo",
        "version": "7.0.0",
        "process": "tweet-embed dev-mongo",
        "localTime": DateTime::now(),
        "metrics": {
            "cursor": {"open": {"total": store.cursors.len() as i64}},
            "queryExecutor": {"scanned": store.scanned.keys as i64, "scannedObjects": store.scanned.docs as i64},
        },
        "devMongo": {"collections": collections as i64, "writes": store.writes as i64},
        "ok": 1.0,
    }
}
