//! [`RunConfig`]: every setting of a run, resolved. The CLI builds it from flags, environment
//! and a config file; the engine reads nothing else (no flags, no environment).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::tei::PoolConfig;
use crate::timely;

/// Which collection of which MongoDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoTarget {
    /// A MongoDB connection string (a replica set for continuous mode). May hold credentials:
    /// never log it.
    pub uri: String,
    /// Database, e.g. `twitter_data`.
    pub db: String,
    /// Collection of tweets, e.g. `tweets`.
    pub collection: String,
}

impl MongoTarget {
    /// `twitter_data.tweets` at `uri`.
    pub fn tweets_at(uri: impl Into<String>) -> MongoTarget {
        MongoTarget { uri: uri.into(), db: "twitter_data".into(), collection: "tweets".into() }
    }
}

/// This process's place in a timely cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This process's index, 0 leads.
    pub process: usize,
    /// `host:port` of every process, in process order; empty when running alone.
    pub addresses: Vec<String>,
}

impl Default for ClusterConfig {
    /// One process, alone.
    fn default() -> Self {
        ClusterConfig { process: 0, addresses: Vec::new() }
    }
}

impl ClusterConfig {
    /// Whether this process leads (keeps the checkpoint and decides the passes).
    pub fn leads(&self) -> bool {
        self.process == 0
    }

    /// Whether there are other processes.
    pub fn is_cluster(&self) -> bool {
        self.addresses.len() > 1
    }

    /// timely's configuration for `workers` threads in this process.
    pub fn timely_config(&self, workers: usize) -> timely::Config {
        if !self.is_cluster() {
            return timely::Config::process(workers);
        }
        timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads: workers,
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        }
    }
}

/// Hooks that tests inject to prove the crash cases; all off by default, and absent without the
/// `test-hooks` feature.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestHooks {
    /// Abort the process right after the n-th commit is saved, before marking.
    pub crash_after_commit: Option<u64>,
    /// Pause compaction this long after writing a merged file and after recording its switch,
    /// so a crash test can kill the process while a compaction is under way.
    pub compaction_pause: Option<Duration>,
}

/// Every setting of a run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The tweets.
    pub mongo: MongoTarget,
    /// The TEI endpoints and how to use them.
    pub tei: PoolConfig,
    /// The output directory of the final Parquet files (cold storage).
    pub out: PathBuf,
    /// The directory of the checkpoint (hot storage).
    pub state_dir: PathBuf,
    /// The directory of files being written (hot storage).
    pub tmp_dir: PathBuf,
    /// Where committed epochs' small files wait for compaction; `None`: `<state-dir>/staging`
    /// on one process, `<out>/_staging` in a cluster (see [`RunConfig::staging_dir`]).
    pub staging_dir: Option<PathBuf>,
    /// In continuous mode, staged rows older than this are compacted into a file below the
    /// target size, so they become visible (`--max-file-age`, 1 h).
    pub max_file_age: Duration,
    /// A row deleted in MongoDB leaves the files of the output directory within this time
    /// (`--delete-within`, 24 h).
    pub delete_within: Duration,
    /// Worker threads in this process.
    pub workers: usize,
    /// This process's place in a cluster.
    pub cluster: ClusterConfig,
    /// Field holding the tweet's text.
    pub text_field: String,
    /// Field set when a document is done (`true` embedded, `false` rejected).
    pub mark_field: String,
    /// Only these languages, when given.
    pub langs: Option<Vec<String>>,
    /// Only documents with this `classified` value, when given.
    pub classified: Option<bool>,
    /// Epochs close at this interval (and so commits come at least this often).
    pub checkpoint_interval: Duration,
    /// Target size of output files in bytes.
    pub target_file_bytes: u64,
    /// The type of the output's `id` column (`--id-type`); `None` (`auto`): decided at the
    /// dataset's first start from its smallest and largest `_id`. Either way it is recorded in
    /// the checkpoint, and a later run asking for another type refuses.
    pub id_type: Option<crate::table::output::IdType>,
    /// How MongoDB operations that fail with an error that heals (an election, a dropped
    /// connection) back off between tries; they retry for as long as it lasts.
    pub mongo_retry: crate::mongo::error::RetryPolicy,
    /// A run that makes no progress while work remains says so at WARN this often, with its
    /// best guess why.
    pub stall_warn_every: Duration,
    /// After a stop is asked for, how long the epochs in flight get to commit before the
    /// process gives up on them (`--drain-timeout`; the checkpoint keeps that safe).
    pub drain_timeout: Duration,
    /// When the recorded dataset identity differs from this run's: delete the output and the
    /// checkpoint and clear the marks, so everything is embedded again (`--reset-output`).
    pub reset_output: bool,
    /// Commit epochs that `checkpoint::RejectionGuard` would stop (`--allow-mass-rejection`).
    pub allow_mass_rejection: bool,
    /// Test hooks.
    #[cfg(feature = "test-hooks")]
    pub hooks: TestHooks,
}

impl RunConfig {
    /// The defaults for `mongo`, `tei_urls` and a working directory `dir` (`dir/out`,
    /// `dir/state`, `dir/state/tmp`): 2 workers, text field `text`, mark field
    /// `gemma_embedded_768`, checkpoints every 5 s, 512 MiB files, MongoDB retries from 100 ms
    /// to 5 s apart, a stall warning every minute, 60 s to drain on a stop.
    pub fn new(mongo: MongoTarget, tei_urls: Vec<String>, dir: &std::path::Path) -> RunConfig {
        RunConfig {
            mongo,
            tei: PoolConfig::new(tei_urls),
            out: dir.join("out"),
            state_dir: dir.join("state"),
            tmp_dir: dir.join("state").join("tmp"),
            staging_dir: None,
            max_file_age: Duration::from_secs(3600),
            delete_within: Duration::from_secs(24 * 3600),
            workers: 2,
            cluster: ClusterConfig::default(),
            text_field: "text".into(),
            mark_field: "gemma_embedded_768".into(),
            langs: None,
            classified: None,
            checkpoint_interval: Duration::from_secs(5),
            target_file_bytes: 512 * 1024 * 1024,
            id_type: None,
            mongo_retry: crate::mongo::error::RetryPolicy::default(),
            stall_warn_every: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(60),
            reset_output: false,
            allow_mass_rejection: false,
            #[cfg(feature = "test-hooks")]
            hooks: TestHooks::default(),
        }
    }

    /// The staging directory: as given, else `<state-dir>/staging` (hot storage) on one process,
    /// `<out>/_staging` in a cluster, where the leader's compactor must see every process's files.
    pub fn staging_dir(&self) -> PathBuf {
        match &self.staging_dir {
            Some(dir) => dir.clone(),
            None if self.cluster.is_cluster() => self.out.join(crate::table::output::STAGING_DIR),
            None => self.state_dir.join("staging"),
        }
    }

    /// Checks what can be checked before connecting anywhere, and creates `out` and `state_dir`.
    pub fn validate(&self) -> Result<()> {
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if self.cluster.is_cluster() && self.cluster.process >= self.cluster.addresses.len() {
            bail!(
                "process {} is not among the cluster's {} processes",
                self.cluster.process,
                self.cluster.addresses.len()
            );
        }
        if self.tei.urls.iter().all(|u| u.trim().is_empty()) {
            bail!("--tei-urls needs at least one URL");
        }
        std::fs::create_dir_all(&self.out).with_context(|| format!("cannot create --out {}", self.out.display()))?;
        std::fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("cannot create --state-dir {}", self.state_dir.display()))?;
        Ok(())
    }
}
