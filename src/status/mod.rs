//! `tweet-embed status`: the flags of a measurement, mapped onto the engine's [`Settings`]
//! (`tweet_embed_operators::run::status`, which counts through the two indexes, reads the
//! checkpoint and keeps the rate history), and the terminal side: one measurement as text or
//! `--json`, or `--watch` redrawing until Ctrl-C ([`render`]). It never counts anything itself.
//! The `--json` fields are the engine's [`Status`], documented there.

mod render;

use crate::config::{parse_duration, MongoArgs};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;
use tweet_embed_operators::run::status::{Monitor, Settings, Status};

pub use render::{line, text};

/// Flags of `tweet-embed status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The tweets.
    #[command(flatten)]
    pub mongo: MongoArgs,
    /// Field set when a document is done (`true` embedded, `false` rejected).
    #[arg(long, default_value = "gemma_embedded_768")]
    pub mark_field: String,
    /// The run's state directory: its checkpoint is shown, and the rate history is kept there.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Price of one GPU hour, for the cost so far and to go.
    #[arg(long, requires = "gpus")]
    pub gpu_hour_cost: Option<f64>,
    /// GPUs the run uses.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// One JSON object per measurement (fields in the README).
    #[arg(long)]
    pub json: bool,
    /// Measures again every INTERVAL (default 5s) until Ctrl-C.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "5s", value_parser = parse_duration)]
    pub watch: Option<Duration>,
    /// Stops `--watch` after N measurements (for tests and scripts).
    #[arg(long, hide = true, requires = "watch")]
    pub watch_count: Option<u64>,
    /// The rate is over the samples of this last span.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub rate_window: Duration,
}

impl StatusArgs {
    /// The defaults of every flag, for `mongo`.
    pub fn with_defaults(mongo: MongoArgs) -> StatusArgs {
        StatusArgs {
            mongo,
            mark_field: "gemma_embedded_768".into(),
            state_dir: None,
            gpu_hour_cost: None,
            gpus: None,
            json: false,
            watch: None,
            watch_count: None,
            rate_window: Duration::from_secs(600),
        }
    }
}

impl From<&StatusArgs> for Settings {
    fn from(a: &StatusArgs) -> Settings {
        Settings {
            mongo: a.mongo.target(),
            mark_field: a.mark_field.clone(),
            state_dir: a.state_dir.clone(),
            gpu_hour_cost: a.gpu_hour_cost,
            gpus: a.gpus,
            rate_window: a.rate_window,
        }
    }
}

/// Measures once, as `tweet-embed status` without `--watch` does. With `--state-dir`, the sample
/// is added to the rate history there.
pub async fn measure(args: &StatusArgs) -> Result<Status> {
    tweet_embed_operators::run::status::measure(&args.into()).await
}

/// Runs `tweet-embed status`.
pub fn run(args: StatusArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: StatusArgs) -> Result<()> {
    use std::io::IsTerminal;
    let mut monitor = Monitor::open(&args).await?;
    let Some(interval) = args.watch else {
        let status = monitor.measure().await?;
        crate::say!("{}", if args.json { json(&status)? } else { text(&status) });
        return Ok(());
    };
    let redraw = !args.json && std::io::stdout().is_terminal();
    let mut taken = 0u64;
    loop {
        match monitor.measure().await {
            Ok(s) if args.json => crate::say!("{}", json(&s)?),
            // Clear the screen and home the cursor, then draw the block again.
            Ok(s) if redraw => crate::say_raw!("\x1b[2J\x1b[H{}\n(every {:?}; Ctrl-C stops)\n", text(&s), interval),
            Ok(s) => crate::say!("{}", line(&s)),
            // The first failure is a setup problem (no index, bad URI): stop with it.
            Err(e) if taken == 0 => return Err(e),
            // Later ones are a network blip in a multi-day watch: say so and try again.
            Err(e) => tweet_embed_operators::run::failure::to_stderr(&format!(
                "tweet-embed status: {e:#} (trying again in {interval:?})"
            )),
        }
        taken += 1;
        // Its reader went away (`| head`): nobody is watching.
        if args.watch_count.is_some_and(|n| taken >= n) || crate::stdout::closed() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The `--json` object of a status, on one line.
pub fn json(status: &Status) -> Result<String> {
    serde_json::to_string(status).context("encoding the status as JSON")
}
