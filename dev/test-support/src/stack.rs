//! The dev stack of the pipeline's tests: in-process dev-mongo plus simulated TEI GPUs on a tokio
//! runtime of their own, so that a test (or the pipeline it runs) can block.

use dev_mongo::{DevMongo, DevMongoConfig};
use dev_tei::{DevTei, FaultConfig, SimConfig};
use mongodb::bson::Document;

use crate::seed::{COLLECTION, DB};
use std::path::Path;
use tweet_embed_operators::run::{MongoTarget, RunConfig};

/// dev-mongo plus simulated GPUs on their own runtime.
pub struct Stack {
    pub mongo: DevMongo,
    pub tei: Option<DevTei>,
    pub rt: tokio::runtime::Runtime,
}

impl Stack {
    /// dev-mongo on a free port and `gpus` instant simulated GPUs (seed 7) with `faults`.
    pub fn start(gpus: usize, faults: FaultConfig) -> Stack {
        Self::start_with(SimConfig { gpus, instant: true, faults, seed: 7, ..SimConfig::default() })
    }

    /// dev-mongo on a free port and simulated GPUs as `sim` says (limits, faults, speed).
    pub fn start_with(sim: SimConfig) -> Stack {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let mongo = DevMongo::start(DevMongoConfig::default()).expect("dev-mongo");
        let tei = rt.block_on(DevTei::start(sim)).expect("dev-tei");
        Stack { mongo, tei: Some(tei), rt }
    }

    /// The run's settings against this stack: output, state and temporary files in `dir`,
    /// `workers` workers, a 300 ms checkpoint interval.
    pub fn args(&self, dir: &Path, workers: usize) -> RunConfig {
        let mut args = RunConfig::new(MongoTarget::tweets_at(self.mongo.uri()), self.tei_urls(), dir);
        args.tmp_dir = dir.join("tmp");
        args.workers = workers;
        args.checkpoint_interval = std::time::Duration::from_millis(300);
        args
    }

    /// The simulated GPUs' base URLs (none once a test took `tei`).
    pub fn tei_urls(&self) -> Vec<String> {
        self.tei.as_ref().map(|t| t.urls()).unwrap_or_default()
    }

    /// Inputs the simulated GPUs embedded, all together.
    pub fn gpu_inputs(&self) -> u64 {
        self.tei.as_ref().map(|t| t.stats().iter().map(|s| s.inputs).sum()).unwrap_or(0)
    }

    /// The tweets in the in-process dev-mongo, through the driver.
    pub fn coll(&self) -> mongodb::Collection<Document> {
        self.coll_at(&self.mongo.uri())
    }

    /// The tweets at `uri`, through the driver.
    pub fn coll_at(&self, uri: &str) -> mongodb::Collection<Document> {
        let uri = uri.to_string();
        self.rt
            .block_on(async move { mongodb::Client::with_uri_str(uri).await.expect("client") })
            .database(DB)
            .collection(COLLECTION)
    }
}
