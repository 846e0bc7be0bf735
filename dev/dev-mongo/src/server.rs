//! The network side: accepts loopback connections, reads requests, runs commands against the
//! shared store, writes replies, and waits (without holding the lock) when a change-stream
//! getMore has nothing yet. Dropping every connection at once is a fault hook.

use super::commands::{self, Ctx, Outcome};
use super::store::Store;
use super::wire::{encode_reply, read_request, Request, OP_QUERY};
use mongodb::bson::Document;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The data.
    pub store: Mutex<Store>,
    /// Bumped after every command that wrote: wakes blocked change-stream getMores.
    pub changes: watch::Sender<u64>,
    /// Bumped to close every open connection.
    pub drops: watch::Sender<u64>,
    /// `host:port` presented in `hello`.
    pub me: String,
    /// Replica-set name.
    pub set_name: String,
    next_connection: AtomicI64,
}

impl Shared {
    /// Shared state around a store.
    pub fn new(store: Store, me: String, set_name: String) -> Shared {
        Shared {
            store: Mutex::new(store),
            changes: watch::channel(0).0,
            drops: watch::channel(0).0,
            me,
            set_name,
            next_connection: AtomicI64::new(1),
        }
    }
}

/// Accepts connections until `shutdown` changes.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dev-mongo: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let connection_id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let mut drops = shared.drops.subscribe();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut response_id = 0i32;
    loop {
        let request = tokio::select! {
            r = read_request(&mut rd) => r,
            _ = drops.changed() => return,
            _ = shutdown.changed() => return,
        };
        let request = match request {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e @ super::wire::WireError::BadDocument { .. }) => {
                tracing::warn!(connection_id, error = %e, "dev-mongo: refusing a request");
                if let Some((request, reply)) = e.reply() {
                    response_id = response_id.wrapping_add(1);
                    encode_reply(&request, response_id, &reply, &mut buf);
                    if wr.write_all(&buf).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(connection_id, error = %e, "dev-mongo: closing connection");
                return;
            }
        };
        let reply = tokio::select! {
            r = handle(&shared, &request, connection_id) => r,
            _ = drops.changed() => return,
            _ = shutdown.changed() => return,
        };
        let Some(reply) = reply else { return };
        if request.more_to_come {
            continue;
        }
        response_id = response_id.wrapping_add(1);
        encode_reply(&request, response_id, &reply, &mut buf);
        if wr.write_all(&buf).await.is_err() {
            return;
        }
        if buf.capacity() > 4 * 1024 * 1024 {
            buf = Vec::with_capacity(64 * 1024); // do not keep a 16 MiB batch buffer per idle connection
        }
    }
}

/// Runs one request; `None` closes the connection.
async fn handle(shared: &Shared, request: &Request, connection_id: i64) -> Option<Document> {
    let db = if request.op_code == OP_QUERY {
        request.query_namespace.as_deref().and_then(|ns| ns.split('.').next()).unwrap_or("admin").to_string()
    } else {
        request.command.get_str("$db").unwrap_or("admin").to_string()
    };
    let mut ctx =
        Ctx { db, me: shared.me.clone(), set_name: shared.set_name.clone(), connection_id, final_attempt: false };
    let mut deadline: Option<Instant> = None;
    loop {
        let mut changes = shared.changes.subscribe();
        let (result, wrote, op_time) = {
            let mut store = shared.store.lock();
            let before = store.writes;
            let r = commands::execute(&mut store, &ctx, &request.command);
            (r, store.writes != before, store.oplog.last())
        };
        if wrote {
            shared.changes.send_modify(|v| *v += 1);
        }
        match result {
            Ok(Outcome::Reply(mut reply)) => {
                reply.insert("operationTime", op_time);
                return Some(reply);
            }
            Ok(Outcome::Close) => return None,
            Ok(Outcome::Await(wait)) => {
                let until = *deadline.get_or_insert_with(|| Instant::now() + wait);
                if Instant::now() < until {
                    let _ = tokio::time::timeout_at(until, changes.changed()).await;
                }
                ctx.final_attempt = Instant::now() >= until;
            }
            Err(e) => {
                let mut reply = e.to_document();
                reply.insert("operationTime", op_time);
                return Some(reply);
            }
        }
    }
}
