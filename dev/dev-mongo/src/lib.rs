//! `tweet-embed dev-mongo`: a MongoDB wire-protocol dev server, enough of MongoDB 7.0 for the
//! official drivers (the Rust `mongodb` crate, pymongo) to run this project's pipeline and tests:
//! a one-member replica set (`rs0`) on loopback with CRUD, indexes (partial, sparse, unique,
//! compound, descending), counting aggregations, and change streams with resume tokens and
//! bounded history. Like mongod it stores strings that are not valid UTF-8 and returns them
//! byte-for-byte ([`invalid_utf8`] says how). It is a dev server, not a database: no auth, no
//! TLS, no journaling beyond an optional snapshot file.
//!
//! It owns its data and the socket; it never reaches outside loopback. It is a crate of its own
//! so that the pipeline's crates never depend on it: the `tweet-embed` binary serves it, and the
//! tests, benches and demo run against it.
//!
//! ```no_run
//! use dev_mongo::{DevMongo, DevMongoConfig};
//! let server = DevMongo::start(DevMongoConfig::default()).expect("start dev-mongo");
//! println!("connect with {}", server.uri());
//! ```

pub mod bounds;
pub mod changestream;
pub mod collection;
mod commands;
pub mod cursor;
pub mod error;
pub mod faults;
pub mod index;
pub mod invalid_utf8;
pub mod keystring;
pub mod matcher;
pub mod oplog;
pub mod path;
pub mod persist;
pub mod planner;
pub mod projection;
pub mod scan;
mod server;
pub mod store;
pub mod update;
pub mod wire;

use anyhow::{Context, Result};
use faults::FailPoint;
use server::Shared;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::Store;

/// Oplog entries kept by default: about a million writes of history.
pub const DEFAULT_HISTORY: usize = 1_000_000;

/// Flags of `tweet-embed dev-mongo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevMongoArgs {
    /// Port to listen on, on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 27017)]
    pub port: u16,
    /// Keep the database in this file: loaded at start, saved periodically and on shutdown.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Oplog entries kept for change streams; older resume tokens get ChangeStreamHistoryLost.
    #[arg(long, default_value_t = DEFAULT_HISTORY)]
    pub history: usize,
    /// Seconds between snapshots of `--data` (only when something changed).
    #[arg(long, default_value_t = 5)]
    pub save_every: u64,
}

/// Configuration of an in-process server.
#[derive(Debug, Clone)]
pub struct DevMongoConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Snapshot file (see [`DevMongoArgs::data`]).
    pub data: Option<PathBuf>,
    /// Oplog entries kept.
    pub history: usize,
    /// Interval between snapshots when `data` is set.
    pub save_every: Duration,
    /// Replica-set name presented to clients.
    pub set_name: String,
}

impl Default for DevMongoConfig {
    fn default() -> Self {
        DevMongoConfig {
            port: 0,
            data: None,
            history: DEFAULT_HISTORY,
            save_every: Duration::from_secs(5),
            set_name: "rs0".into(),
        }
    }
}

impl From<&DevMongoArgs> for DevMongoConfig {
    fn from(a: &DevMongoArgs) -> Self {
        DevMongoConfig {
            port: a.port,
            data: a.data.clone(),
            history: a.history,
            save_every: Duration::from_secs(a.save_every.max(1)),
            ..DevMongoConfig::default()
        }
    }
}

/// A running dev server on its own thread and runtime; stops (and saves) when dropped.
pub struct DevMongo {
    shared: Arc<Shared>,
    addr: SocketAddr,
    data: Option<PathBuf>,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DevMongo {
    /// Starts a server; returns once it accepts connections.
    pub fn start(config: DevMongoConfig) -> Result<DevMongo> {
        let store = match &config.data {
            Some(path) if path.exists() => persist::load(path, Some(config.history))?,
            _ => Store::new(config.history),
        };
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", config.port)).with_context(|| {
            format!("cannot listen on 127.0.0.1:{}: is another server using it? choose another --port", config.port)
        })?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared::new(store, addr.to_string(), config.set_name.clone()));
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dev-mongo")
            .enable_all()
            .build()
            .context("starting the dev-mongo runtime")?;
        let (s, data, every) = (shared.clone(), config.data.clone(), config.save_every);
        let thread = std::thread::Builder::new().name("dev-mongo".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "dev-mongo: cannot use listener");
                        return;
                    }
                };
                tokio::spawn(housekeeping(s.clone(), data, every, shutdown_rx.clone()));
                server::serve(listener, s, shutdown_rx).await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(DevMongo { shared, addr, data: config.data, shutdown, thread: Some(thread) })
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true`
    pub fn uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Fault hook: closes every open client connection now.
    pub fn drop_connections(&self) {
        self.shared.drops.send_modify(|v| *v += 1);
    }

    /// Fault hook: fails the next `times` commands (not handshakes or pings) with `code` and
    /// `labels`.
    pub fn fail_next(&self, times: u32, code: i32, labels: &[&str]) {
        self.shared.store.lock().fail = Some(FailPoint::error(times, code, labels));
    }

    /// Fault hook: arms any fail point (e.g. only some commands, or closing the connection).
    pub fn set_fail_point(&self, fail: Option<FailPoint>) {
        self.shared.store.lock().fail = fail;
    }

    /// Fault hook: change events larger than `bytes` (BSON, after the stream's own stages) fail
    /// the `aggregate`/`getMore` that would return them with BSONObjectTooLarge (10334), as
    /// events over 16 MB do on mongod; a small limit stands in for a 16 MB document in tests.
    pub fn set_max_event_bytes(&self, bytes: usize) {
        self.shared.store.lock().max_event_bytes = bytes;
    }

    /// Fault hook: keeps only `entries` oplog entries from now on (older tokens become lost).
    pub fn set_history(&self, entries: usize) {
        self.shared.store.lock().oplog.set_capacity(entries);
    }

    /// Fault hook: forgets all change-stream history up to now.
    pub fn truncate_history(&self) {
        self.shared.store.lock().oplog.truncate_all();
    }

    /// Writes the `--data` snapshot now (no-op without one).
    pub fn save(&self) -> Result<()> {
        save_now(&self.shared, self.data.as_deref())
    }

    /// Runs a closure on the store under its lock (for tests and seeding at memory speed).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let r = f(&mut self.shared.store.lock());
        self.shared.changes.send_modify(|v| *v += 1);
        r
    }

    /// Stops the server and saves its snapshot.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.save()
    }
}

impl Drop for DevMongo {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(e) = self.stop() {
                tracing::error!(error = %format!("{e:#}"), "dev-mongo: saving on shutdown failed");
            }
        }
    }
}

fn save_now(shared: &Shared, data: Option<&std::path::Path>) -> Result<()> {
    let Some(path) = data else { return Ok(()) };
    let snap = persist::snapshot(&shared.store.lock());
    persist::save(&snap, path)
}

/// Periodic snapshots and cursor reaping.
async fn housekeeping(
    shared: Arc<Shared>,
    data: Option<PathBuf>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut saved_at = shared.store.lock().writes;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (writes, snap) = {
            let mut store = shared.store.lock();
            store.reap_cursors(Duration::from_secs(600));
            let w = store.writes;
            (w, (data.is_some() && w != saved_at).then(|| persist::snapshot(&store)))
        };
        if let (Some(snap), Some(path)) = (snap, &data) {
            let path = path.clone();
            match tokio::task::spawn_blocking(move || persist::save(&snap, &path)).await {
                Ok(Ok(())) => saved_at = writes,
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "dev-mongo: periodic save failed")
                }
                Err(e) => tracing::error!(error = %e, "dev-mongo: periodic save panicked"),
            }
        }
    }
}

/// Runs `tweet-embed dev-mongo` until SIGINT/SIGTERM, then saves `--data`.
pub fn run(args: DevMongoArgs) -> Result<()> {
    let server = DevMongo::start(DevMongoConfig::from(&args))?;
    println!("dev-mongo listening: {}", server.uri());
    if let Some(d) = &args.data {
        println!("data file: {} (saved every {}s and on shutdown)", d.display(), args.save_every);
    }
    println!("(a dev server, not a database: point --mongo-uri at a real replica set in production)");
    wait_for_signal()?;
    server.shutdown()?;
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
pub fn wait_for_signal() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await
    })?;
    Ok(())
}
