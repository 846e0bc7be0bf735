//! The CLI's side of the dev stack, shared by the pipeline tests (`#[path]`): the stack and the
//! exactly-once check are `test_support`'s; what needs the `tweet-embed` crate — its
//! `PipelineArgs`, its binary, this crate's `tests/py` — is here.

use std::path::Path;
use test_support::{Seeded, Stack};
use tweet_embed::config::{MongoTarget, PipelineArgs};

/// `PipelineArgs` for a [`Stack`].
pub trait StackArgs {
    /// The pipeline against the stack: output in `dir`, `workers` workers, a 300 ms checkpoint
    /// interval.
    fn args(&self, dir: &Path, workers: usize) -> PipelineArgs;
}

impl StackArgs for Stack {
    fn args(&self, dir: &Path, workers: usize) -> PipelineArgs {
        let mut args = PipelineArgs::with_defaults(MongoTarget::tweets_at(self.mongo.uri()), self.tei_urls(), dir);
        args.tmp_dir = Some(dir.join("tmp"));
        args.workers = workers;
        args.checkpoint_interval = std::time::Duration::from_millis(300);
        args
    }
}

/// The exactly-once check of `args`' output against the in-process dev-mongo.
pub fn check_run(stack: &Stack, seeded: &Seeded, args: &PipelineArgs) {
    test_support::expect::check_run(stack, seeded, &args.out)
}

/// The exactly-once check of `args`' output against the collection `coll`.
pub fn check_run_in(
    stack: &Stack,
    coll: mongodb::Collection<mongodb::bson::Document>,
    seeded: &Seeded,
    args: &PipelineArgs,
) {
    test_support::expect::check_run_in(stack, coll, seeded, &args.out)
}

/// pyarrow, a reader nobody here wrote, checks the output: schema, row counts, unique ids.
pub fn pyarrow_check(out: &Path, rows: u64, rejects: u64) {
    let py = std::env::var("TWEET_EMBED_PYTHON").unwrap_or_else(|_| "python3".to_string());
    match std::process::Command::new(&py).args(["-c", "import pyarrow"]).output() {
        Ok(o) if o.status.success() => {}
        _ => panic!("{py} cannot import pyarrow: run `scripts/test` (it installs it) or `pip install pyarrow`"),
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/check_parquet.py");
    let o = std::process::Command::new(&py)
        .arg(script)
        .arg(out)
        .args(["--rows", &rows.to_string(), "--dim", "768", "--rejects", &rejects.to_string()])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "pyarrow check failed:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
}

/// `tweet-embed <command>` (`backfill` or `run`) with `args`' connection, paths and workers, a
/// 200 ms checkpoint interval, output discarded.
pub fn pipeline_cmd(command: &str, args: &PipelineArgs) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tweet-embed"));
    c.arg(command)
        .args(["--mongo-uri", &args.mongo.mongo_uri, "--db", &args.mongo.db, "--collection", &args.mongo.collection])
        .args(["--tei-urls", &args.tei_urls.join(",")])
        .arg("--out")
        .arg(&args.out)
        .arg("--state-dir")
        .arg(&args.state_dir)
        .args(["--workers", &args.workers.to_string(), "--checkpoint-interval", "200ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}
