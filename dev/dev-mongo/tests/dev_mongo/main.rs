//! dev-mongo driven over loopback by the official `mongodb` driver: every command, the query
//! language, indexes, change streams, faults and persistence. Nothing is mocked: each test starts
//! a real server on an ephemeral port and talks to it through the driver.

mod change_streams;
mod crud;
mod faults;
mod indexes;
mod invalid_utf8;
mod wire;

use dev_mongo::{DevMongo, DevMongoConfig};
use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::{Client, Collection};

/// A server and a connected client.
pub struct Fixture {
    pub server: DevMongo,
    pub client: Client,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::with(DevMongoConfig::default()).await
    }

    pub async fn with(config: DevMongoConfig) -> Fixture {
        let server = DevMongo::start(config).expect("start dev-mongo");
        let client = Client::with_uri_str(server.uri()).await.expect("client");
        Fixture { server, client }
    }

    pub fn coll(&self, name: &str) -> Collection<Document> {
        self.client.database("twitter_data").collection(name)
    }

    /// `serverStatus.metrics.queryExecutor`: (keys examined, documents examined).
    pub async fn scanned(&self) -> (i64, i64) {
        let s = self.client.database("admin").run_command(doc! {"serverStatus": 1}).await.expect("serverStatus");
        let q = s.get_document("metrics").and_then(|m| m.get_document("queryExecutor")).expect("queryExecutor");
        (q.get_i64("scanned").expect("scanned"), q.get_i64("scannedObjects").expect("scannedObjects"))
    }
}

/// The server's error code inside a driver error.
pub fn code_of(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m.write_errors.as_ref().and_then(|w| w.first()).map(|w| w.code),
        _ => None,
    }
}
