//! Status: how far the embedding of a collection is, from MongoDB's two indexes and the run's
//! checkpoint: embedded (`<mark>: true`), rejected (`<mark>: false`), remaining (the work queue),
//! percent done, rate, ETA and GPU cost so far and to go. `tweet-embed status` maps its flags onto
//! [`Settings`], and draws and repeats what [`Monitor::measure`] returns.
//!
//! It owns the counting and its rate history ([`history`], `status-history.jsonl` in the state
//! directory); it never draws or prints. It must never scan the collection: every count is hinted
//! to an index (`processed_monitor_idx` for the marks, `embedding_work_queue` for the queue), and a
//! missing or different index is an error saying to run `tweet-embed indexes`, because on billions
//! of tweets an unhinted count would run for hours on the production database. It only reads
//! MongoDB and the checkpoint; it never writes either.
//!
//! A [`Status`] serializes (`tweet-embed status --json`) as one object with these fields (stable;
//! `null` when unknown):
//!
//! | field | meaning |
//! | --- | --- |
//! | `db`, `collection`, `mark_field` | what was measured |
//! | `measured_at_ms` | when, ms since the Unix epoch |
//! | `embedded`, `rejected` | documents with `<mark>: true` / `<mark>: false` |
//! | `processed` | `embedded + rejected` |
//! | `remaining` | documents in the work queue |
//! | `total` | `processed + remaining` (retweets are in neither) |
//! | `outside_queue` | about how many unmarked documents the work queue does not take (`retweeted` set): the estimated document count less processed and remaining; `null` when not measured |
//! | `percent_done` | `100 × processed / total` (100 when both are 0) |
//! | `rate_docs_per_s` | processed documents per second; `null` while measuring (fewer than two samples, or none 5 s before the newest: a run that took a second has no rate) |
//! | `rate_span_s`, `rate_samples` | the span of the samples the rate is over, and how many |
//! | `eta_s` | `remaining / rate`; 0 when nothing remains; `null` without a rate or when it is under 0.01 docs/s |
//! | `gpu_hour_cost`, `gpus` | the flags, `null` without them |
//! | `cost_so_far` | `processed / rate` hours × `gpus` × `gpu_hour_cost` |
//! | `cost_to_go` | `eta_s` hours × `gpus` × `gpu_hour_cost` |
//! | `checkpoint_committed`, `checkpoint_marked` | the checkpoint's epochs (with `--state-dir`) |
//! | `checkpoint_age_s` | seconds since the checkpoint was written |
//! | `staged_files`, `staged_bytes` | committed epoch files waiting in the staging directory for compaction |
//! | `compacted_files` | files compaction wrote into `--out`, all runs together |
//! | `deletions_pending` | recorded deletions (`_deletions/`) not yet applied to the files in `--out` |
//! | `identity` | how the vectors are made: `model_id`, `model_sha`, `dim`, `prompt_name`, `normalize`, `truncation_direction`, `text_field`, `mark_field` |
//!
//! While a pipeline commits into `--state-dir`, the rate is over its own recent commits (kept in
//! the checkpoint), so the first look already has one. Otherwise
//! the rate is the processed count's change over the samples of the last `--rate-window` (10 min):
//! the GPUs' throughput. In continuous mode new tweets join the queue meanwhile, so the ETA is
//! when today's queue would be done. `cost_so_far` prices the processed documents at that rate,
//! because status cannot see when the run began (and documents marked by earlier tools count as
//! processed): a projection, not a bill.

pub mod history;

use crate::clock::wall_ms;
use crate::mongo::error::describe;
use crate::mongo::work_queue::{
    find_index, index_mismatch, monitor_index, monitor_index_name, work_queue_index, WorkQueue,
};
use crate::run::MongoTarget;
use crate::table::checkpoint::CheckpointStore;
use crate::tei::redact;
use anyhow::{anyhow, bail, Result};
use history::{History, Rate, Sample};
use mongodb::bson::{doc, Document};
use mongodb::options::Hint;
use mongodb::Collection;
use serde::Serialize;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::time::Duration;

/// What status measures and how: the CLI's `status` flags, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The tweets.
    pub mongo: MongoTarget,
    /// Field set when a document is done (`true` embedded, `false` rejected).
    pub mark_field: String,
    /// The run's state directory: its checkpoint is shown, and the rate history is kept there.
    pub state_dir: Option<PathBuf>,
    /// Price of one GPU hour, for the cost so far and to go (with `gpus`).
    pub gpu_hour_cost: Option<f64>,
    /// GPUs the run uses.
    pub gpus: Option<u32>,
    /// The rate is over the samples of this last span.
    pub rate_window: Duration,
}

impl Settings {
    /// The CLI's defaults for `mongo`: mark field `gemma_embedded_768`, no state directory, no
    /// pricing, a 10-minute rate window.
    pub fn with_defaults(mongo: MongoTarget) -> Settings {
        Settings {
            mongo,
            mark_field: "gemma_embedded_768".into(),
            state_dir: None,
            gpu_hour_cost: None,
            gpus: None,
            rate_window: Duration::from_secs(600),
        }
    }
}

/// What the collection's indexes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// `<mark>: true`.
    pub embedded: u64,
    /// `<mark>: false`.
    pub rejected: u64,
    /// In the work queue.
    pub remaining: u64,
}

/// One measurement; serialized as the `--json` object (field table in the module doc).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// The database measured.
    pub db: String,
    /// The collection measured.
    pub collection: String,
    /// The mark field counted.
    pub mark_field: String,
    /// When, in ms since the Unix epoch.
    pub measured_at_ms: i64,
    /// Documents with `<mark>: true`.
    pub embedded: u64,
    /// Documents with `<mark>: false`.
    pub rejected: u64,
    /// `embedded + rejected`.
    pub processed: u64,
    /// Documents in the work queue.
    pub remaining: u64,
    /// `processed + remaining` (retweets are in neither).
    pub total: u64,
    /// `100 × processed / total`, in percent (100 when both are 0).
    pub percent_done: f64,
    /// Processed documents per second; `None` while measuring.
    pub rate_docs_per_s: Option<f64>,
    /// Seconds spanned by the samples the rate is over.
    pub rate_span_s: Option<f64>,
    /// How many samples the rate is over.
    pub rate_samples: Option<usize>,
    /// Seconds until the work queue is done at the rate (0 when nothing remains).
    pub eta_s: Option<f64>,
    /// Price of one GPU hour, with `gpus`.
    pub gpu_hour_cost: Option<f64>,
    /// GPUs priced, with `gpu_hour_cost`.
    pub gpus: Option<u32>,
    /// The processed documents at the rate, priced: hours × `gpus` × `gpu_hour_cost`.
    pub cost_so_far: Option<f64>,
    /// `eta_s` priced: hours × `gpus` × `gpu_hour_cost`.
    pub cost_to_go: Option<f64>,
    /// The checkpoint's committed epoch.
    pub checkpoint_committed: Option<u64>,
    /// The checkpoint's marked epoch.
    pub checkpoint_marked: Option<u64>,
    /// Seconds since the checkpoint was written.
    pub checkpoint_age_s: Option<f64>,
    /// Committed files waiting in the staging directory for compaction.
    pub staged_files: Option<u64>,
    /// Bytes of `staged_files`.
    pub staged_bytes: Option<u64>,
    /// Files compaction wrote into the output directory, all runs together.
    pub compacted_files: Option<u64>,
    /// Recorded deletions not yet applied to the output directory's files.
    pub deletions_pending: Option<u64>,
    /// How the dataset's vectors are made, as the checkpoint records it.
    pub identity: Option<crate::table::identity::DatasetIdentity>,
    /// About how many unmarked documents the work queue does not take (their `retweeted` is
    /// set): the collection's estimated count less processed and remaining.
    pub outside_queue: Option<u64>,
}

/// A connection to one collection plus its rate history: what `--watch` measures with.
pub struct Monitor {
    settings: Settings,
    coll: Collection<Document>,
    history: History,
    checkpoints: Option<CheckpointStore>,
    history_warned: bool,
}

impl Monitor {
    /// Connects (lazily: the first count reaches the server) and opens the state directory.
    /// Takes [`Settings`] or anything that resolves into them (the CLI's flags).
    pub async fn open(settings: impl Into<Settings>) -> Result<Monitor> {
        let args = settings.into();
        if let Some(cost) = args.gpu_hour_cost {
            if !(cost.is_finite() && cost >= 0.0) {
                bail!("--gpu-hour-cost must be a price of 0 or more, not {cost}");
            }
        }
        if args.gpus == Some(0) {
            bail!("--gpus must be at least 1");
        }
        let (history, checkpoints) = match &args.state_dir {
            None => (History::in_memory(), None),
            Some(dir) => {
                // Never create it: a mistyped --state-dir would otherwise show "no checkpoint".
                if !dir.is_dir() {
                    bail!("--state-dir {} is not a directory: give the --state-dir of the run", dir.display());
                }
                let store = CheckpointStore::open(dir)
                    .map_err(|e| anyhow!("--state-dir {}: {e} (status keeps its rate history there)", dir.display()))?;
                (History::open(dir)?, Some(store))
            }
        };
        let uri = &args.mongo.uri;
        let client = mongodb::Client::with_uri_str(uri)
            .await
            .map_err(|e| anyhow!("bad --mongo-uri {}: {}", redact(uri), scrub(&describe(&e), uri)))?;
        let coll = client.database(&args.mongo.db).collection::<Document>(&args.mongo.collection);
        Ok(Monitor { settings: args, coll, history, checkpoints, history_warned: false })
    }

    /// Measures now.
    pub async fn measure(&mut self) -> Result<Status> {
        let counts = count(&self.coll, &self.settings.mark_field).await.map_err(|e| {
            let uri = &self.settings.mongo.uri;
            anyhow!("{} (MongoDB at {})", scrub(&format!("{e:#}"), uri), redact(uri))
        })?;
        let mut status = self.record(counts, wall_ms())?;
        status.outside_queue = outside_queue(&self.coll, &counts).await;
        Ok(status)
    }

    /// Turns counts taken at `at_ms` into a status: records them in the history, then reads the
    /// rate and the checkpoint. Public so tests can place samples in time without sleeping.
    pub fn record(&mut self, counts: Counts, at_ms: i64) -> Result<Status> {
        let a = &self.settings;
        let ns = format!("{}.{}:{}", a.mongo.db, a.mongo.collection, a.mark_field);
        let processed = counts.embedded + counts.rejected;
        let sample = Sample { at_ms, ns: ns.clone(), processed, remaining: counts.remaining };
        if let Err(e) = self.history.record(sample) {
            // The history is a convenience: a full or read-only state directory must not take the
            // counts away. Said once, not at every refresh.
            if !self.history_warned {
                self.history_warned = true;
                tracing::warn!(error = %format!("{e:#}"), "the rate history is not saved: the rate covers this process's samples only");
            }
        }
        let (checkpoint, commits) = match &self.checkpoints {
            Some(store) => store.load_with_history().map_err(|e| anyhow!("reading the checkpoint: {e}"))?.unzip(),
            None => (None, None),
        };
        // The pipeline's own recent commits give the rate at once while it runs; when its last
        // commit is older than the window (stopped), status's own samples tell the truth.
        let window_ms = i64::try_from(a.rate_window.as_millis()).unwrap_or(i64::MAX);
        let from_commits = commits
            .as_ref()
            .filter(|h| h.recent().last().is_some_and(|(t, _)| at_ms.saturating_sub(*t) <= window_ms))
            .and_then(|h| history::rate_over(h.recent(), a.rate_window));
        let rate = from_commits.or_else(|| self.history.rate(&ns, a.rate_window)).filter(|r| r.docs_per_s.is_finite());
        Ok(compose(a, counts, at_ms, rate, checkpoint.as_ref()))
    }
}

fn compose(
    a: &Settings,
    c: Counts,
    at_ms: i64,
    rate: Option<Rate>,
    checkpoint: Option<&crate::table::checkpoint::Checkpoint>,
) -> Status {
    let processed = c.embedded + c.rejected;
    let total = processed + c.remaining;
    let percent_done = if total == 0 { 100.0 } else { 100.0 * processed as f64 / total as f64 };
    let per_s = rate.as_ref().map(|r| r.docs_per_s);
    // A rate of (nearly) nothing is no ETA: unknown, not 20,000,000,000,000 s.
    let eta_s = match per_s {
        Some(r) => eta_seconds(c.remaining, r),
        None if c.remaining == 0 => Some(0.0),
        None => None,
    };
    let pricing = a.gpu_hour_cost.zip(a.gpus);
    let cost_of = |secs: f64| pricing.map(|(price, gpus)| secs / 3600.0 * f64::from(gpus) * price);
    let so_far_s = match per_s {
        _ if processed == 0 => Some(0.0),
        Some(r) if r > 0.0 => Some(processed as f64 / r),
        _ => None,
    };
    Status {
        db: a.mongo.db.clone(),
        collection: a.mongo.collection.clone(),
        mark_field: a.mark_field.clone(),
        measured_at_ms: at_ms,
        embedded: c.embedded,
        rejected: c.rejected,
        processed,
        remaining: c.remaining,
        total,
        percent_done,
        rate_docs_per_s: per_s,
        rate_span_s: rate.as_ref().map(|r| r.span_s),
        rate_samples: rate.as_ref().map(|r| r.samples),
        eta_s,
        gpu_hour_cost: pricing.map(|p| p.0),
        gpus: pricing.map(|p| p.1),
        cost_so_far: so_far_s.and_then(cost_of),
        cost_to_go: eta_s.and_then(cost_of),
        checkpoint_committed: checkpoint.map(|c| c.committed()),
        checkpoint_marked: checkpoint.map(|c| c.marked()),
        checkpoint_age_s: checkpoint.map(|c| (at_ms - c.updated_at_ms()).max(0) as f64 / 1000.0),
        staged_files: checkpoint.map(|c| c.staged_size().0),
        staged_bytes: checkpoint.map(|c| c.staged_size().1),
        compacted_files: checkpoint.map(|c| c.compactions()),
        deletions_pending: checkpoint.map(|c| c.deletions_recorded().saturating_sub(c.deletions_done())),
        outside_queue: None,
        identity: checkpoint.and_then(|c| c.identity()),
    }
}

/// Measures once. With a state directory, the sample is added to the rate history there.
pub async fn measure(settings: &Settings) -> Result<Status> {
    Monitor::open(settings.clone()).await?.measure().await
}

/// Seconds until `remaining` documents are done at `docs_per_s`; `None` (shown as unknown) while
/// nothing moves, rather than a count of seconds longer than the universe is old.
pub fn eta_seconds(remaining: u64, docs_per_s: f64) -> Option<f64> {
    if remaining == 0 {
        return Some(0.0);
    }
    // Under one document every 100 s is not a rate to extrapolate from.
    if !docs_per_s.is_finite() || docs_per_s < 0.01 {
        return None;
    }
    Some(remaining as f64 / docs_per_s)
}

/// Checks that both indexes exist as `tweet-embed indexes` makes them for `mark_field` (their
/// names derive from it: `work_queue::work_queue_index_name`).
pub async fn check_indexes(coll: &Collection<Document>, mark_field: &str) -> Result<()> {
    let ns = coll.namespace();
    let fix = format!("run `tweet-embed indexes --db {} --collection {} --mark-field {mark_field}`", ns.db, ns.coll);
    match coll.list_index_names().await {
        Ok(_) => {}
        Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => {
            bail!("{ns} does not exist (no collection, so no indexes to count with): check --db and --collection")
        }
        Err(e) => return Err(anyhow!("cannot list the indexes of {ns}: {}", describe(&e))),
    }
    let mut problems = Vec::new();
    for wanted in [work_queue_index(mark_field), monitor_index(mark_field)] {
        let name = wanted.options.as_ref().and_then(|o| o.name.clone()).unwrap_or_default();
        let found =
            find_index(coll, &name).await.map_err(|e| anyhow!("cannot list the indexes of {ns}: {}", describe(&e)))?;
        match found {
            None => problems.push(format!("no `{name}` index")),
            Some(found) => {
                if let Some(mismatch) = index_mismatch(&found, &wanted) {
                    problems.push(format!("`{name}` {mismatch} (made for another --mark-field?)"));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let problems = problems.join("; ");
    bail!("{ns}: {problems}. status counts only through these two indexes, never by scanning the collection: {fix}")
}

/// The three hinted counts, after [`check_indexes`]. None of them reads a document: each is
/// answered from the index's keys.
pub async fn count(coll: &Collection<Document>, mark_field: &str) -> Result<Counts> {
    check_indexes(coll, mark_field).await?;
    let ns = coll.namespace();
    let marked = |value: bool| {
        coll.count_documents(doc! {mark_field: value}).hint(Hint::Name(monitor_index_name(mark_field))).into_future()
    };
    let queue = WorkQueue {
        coll: coll.clone(),
        text_field: String::new(),
        mark_field: mark_field.to_string(),
        langs: None,
        classified: None,
        retry: Default::default(),
    };
    let (embedded, rejected, remaining) = tokio::try_join!(marked(true), marked(false), queue.remaining())
        .map_err(|e| anyhow!("counting {ns} through its indexes: {}", describe(&e)))?;
    Ok(Counts { embedded, rejected, remaining })
}

/// About how many unmarked documents are outside the work queue: the estimated document count
/// (collection metadata, no scan) less what the indexes counted. None when the estimate is not
/// available. Which ones, and why, would take a scan: status never scans (the run names the
/// cause at its start).
async fn outside_queue(coll: &Collection<Document>, c: &Counts) -> Option<u64> {
    let estimated = coll.estimated_document_count().await.ok()?;
    Some(estimated.saturating_sub(c.embedded + c.rejected + c.remaining))
}

/// Removes the URI's password from a message, should a driver error ever quote it.
fn scrub(message: &str, uri: &str) -> String {
    let password = uri
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => message.replace(p, "***"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_is_an_unknown_eta_not_a_huge_one() {
        assert_eq!(eta_seconds(20_000, 0.0), None);
        assert_eq!(eta_seconds(20_000, 1e-9), None);
        assert_eq!(eta_seconds(20_000, f64::NAN), None);
        assert_eq!(eta_seconds(0, 0.0), Some(0.0));
        assert_eq!(eta_seconds(20_000, 100.0), Some(200.0));
    }

    #[test]
    fn a_password_in_a_message_is_hidden() {
        let uri = "mongodb://user:s3cret@db.example:27017/?replicaSet=rs0";
        assert_eq!(scrub("auth failed for user:s3cret", uri), "auth failed for user:***");
        assert_eq!(scrub("no password here", "mongodb://db.example:27017"), "no password here");
    }
}
