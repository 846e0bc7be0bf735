//! `tweet-embed autotune`: the flags of a sweep, resolved into the engine's pool settings and
//! sample (`tweet_embed_operators::run::autotune`, which measures and recommends), and the
//! terminal side: the progress bar, the old `autotune_embed.py` table, the recommendation line,
//! and the recommended setting written as TOML. It measures nothing itself.
//!
//! The file it writes (`--write FILE.toml`) holds two keys, `batch_size` (texts per request, the
//! `--batch-size` flag) and `concurrency` (requests in flight per endpoint, the `--concurrency`
//! flag, which pins the otherwise adaptive limit), for the config-file loader of the other
//! commands.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tweet_embed_operators::run::autotune::{recommend, texts_from_file, texts_from_mongo, TuneRow, Watch};
use tweet_embed_operators::tei::{Api, PoolConfig};

use crate::config::{parse_api, parse_duration, MongoArgs};

/// Flags of `tweet-embed autotune`.
#[derive(Debug, Clone, clap::Args)]
pub struct AutotuneArgs {
    /// TEI endpoints, comma-separated, one per GPU (`/embed` suffix accepted).
    #[arg(long, value_delimiter = ',', required = true)]
    pub tei_urls: Vec<String>,
    /// Where the sample comes from unless `--texts-file` is given.
    #[command(flatten)]
    pub mongo: MongoArgs,
    /// Texts in the sample (each setting embeds all of them).
    #[arg(long, default_value_t = 2000)]
    pub sample: usize,
    /// Sample from this file instead, one text per line (blank lines skipped).
    #[arg(long)]
    pub texts_file: Option<PathBuf>,
    /// Batch sizes (texts per request) to try.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64")]
    pub batch_sizes: Vec<usize>,
    /// Concurrencies (requests in flight per endpoint) to try.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub concurrency: Vec<usize>,
    /// Latency a recommended setting must keep its p95 under.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub p95_slo: Duration,
    /// Write the recommended setting to this TOML file.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Field holding the tweet's text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field set when a document is done: the sample is taken from documents without it.
    #[arg(long, default_value = "gemma_embedded_768")]
    pub mark_field: String,
    /// TEI route: auto, tei or openai.
    #[arg(long, default_value = "auto", value_parser = parse_api)]
    pub api: Api,
    /// Bearer token for TEI; `TEI_API_KEY` is read too.
    #[arg(long, env = "TWEET_EMBED_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The run's embedding options: a prompt changes every request's tokens, so throughput.
    #[command(flatten)]
    pub embed: crate::config::EmbedOptionArgs,
}

/// Runs `tweet-embed autotune`.
pub fn run(args: AutotuneArgs) -> Result<()> {
    if args.batch_sizes.iter().chain(&args.concurrency).any(|&n| n == 0) || args.sample == 0 {
        bail!("--sample, --batch-sizes and --concurrency values must be at least 1");
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let texts = match &args.texts_file {
            Some(path) => texts_from_file(path, args.sample)?,
            None => texts_from_mongo(&args.mongo.target(), &args.text_field, &args.mark_field, args.sample).await?,
        };
        if texts.is_empty() {
            bail!("the sample is empty: nothing to embed (check --texts-file, or the work queue of --collection)");
        }
        let mut base = PoolConfig::new(args.tei_urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()));
        base.api = args.api;
        base.api_key = args.api_key.clone().or_else(|| std::env::var("TEI_API_KEY").ok()).filter(|k| !k.is_empty());
        base.options = args.embed.options();
        let settings: Vec<(usize, usize)> =
            args.batch_sizes.iter().flat_map(|&b| args.concurrency.iter().map(move |&c| (b, c))).collect();
        let bar = progress_bar((settings.len() * texts.len()) as u64);
        let mut out = std::io::stdout();
        let rows = sweep(&base, &texts, &settings, &bar).await?;
        bar.finish_and_clear();
        print_table(&mut out, &rows)?;
        match recommend(&rows, args.p95_slo) {
            Some(best) => {
                writeln!(
                    out,
                    "\nRecommended: batch size {}, concurrency {} per endpoint ({:.1} docs/s, p95 {:.2} s <= {:?}, no errors)",
                    best.batch_size,
                    best.concurrency,
                    best.docs_per_s,
                    best.p95.as_secs_f64(),
                    args.p95_slo
                )?;
                if let Some(path) = &args.write {
                    write_toml(path, best, args.p95_slo)?;
                    writeln!(out, "Wrote {}", path.display())?;
                }
                Ok(())
            }
            None => bail!(
                "no setting met p95 <= {:?} with zero errors; try smaller --batch-sizes or --concurrency, or a looser --p95-slo",
                args.p95_slo
            ),
        }
    })
}

/// The engine's sweep ([`tweet_embed_operators::run::autotune::sweep`]) with `bar` showing the
/// setting being measured and the texts done.
pub async fn sweep(
    base: &PoolConfig,
    texts: &[String],
    settings: &[(usize, usize)],
    bar: &ProgressBar,
) -> Result<Vec<TuneRow>> {
    tweet_embed_operators::run::autotune::sweep(base, texts, settings, Arc::new(Bar(bar.clone()))).await
}

/// A progress bar watching a sweep.
struct Bar(ProgressBar);

impl Watch for Bar {
    fn setting(&self, batch_size: usize, concurrency: usize) {
        self.0.set_message(format!("batch {batch_size}, concurrency {concurrency}"));
    }

    fn embedded(&self, texts: u64) {
        self.0.inc(texts);
    }
}

/// The old script's table.
pub fn print_table(out: &mut impl Write, rows: &[TuneRow]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>10} {:>11} {:>9} {:>10} {:>8} {:>8} {:>7} {:>14} {:>13}",
        "Batch Size", "Concurrency", "Docs/s", "Tok/s", "p50 (s)", "p95 (s)", "Errors", "Total Time (s)", "Real/Padded"
    )?;
    for r in rows {
        let share = r.real_share.map_or("-".to_string(), |s| format!("{s:.2}"));
        writeln!(
            out,
            "{:>10} {:>11} {:>9.1} {:>10.0} {:>8.2} {:>8.2} {:>7} {:>14.1} {:>13}",
            r.batch_size,
            r.concurrency,
            r.docs_per_s,
            r.tokens_per_s,
            r.p50.as_secs_f64(),
            r.p95.as_secs_f64(),
            r.errors,
            r.total.as_secs_f64(),
            share
        )?;
    }
    Ok(())
}

/// Writes `best` as the config file's `batch_size` and `concurrency`.
pub fn write_toml(path: &Path, best: &TuneRow, slo: Duration) -> Result<()> {
    let text = format!(
        "# Written by `tweet-embed autotune`: the setting with the most docs/s meeting p95 <= {:?} with zero errors\n\
         # ({:.1} docs/s, {:.0} tok/s, p50 {:.2} s, p95 {:.2} s). Without `concurrency` the limit adapts per endpoint.\n\
         batch_size = {}\nconcurrency = {}\n",
        slo,
        best.docs_per_s,
        best.tokens_per_s,
        best.p50.as_secs_f64(),
        best.p95.as_secs_f64(),
        best.batch_size,
        best.concurrency
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn progress_bar(total: u64) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} texts  {msg}  [{elapsed_precise}]") {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(batch_size: usize, concurrency: usize, docs_per_s: f64, p95_s: f64) -> TuneRow {
        let p95 = Duration::from_secs_f64(p95_s);
        TuneRow {
            batch_size,
            concurrency,
            docs_per_s,
            tokens_per_s: 0.0,
            p50: p95 / 2,
            p95,
            errors: 0,
            total: p95,
            real_share: Some(0.5),
        }
    }

    #[test]
    fn the_toml_holds_the_two_keys_and_the_table_the_old_columns() {
        let rows = [row(32, 1, 150.0, 0.8), row(32, 2, 186.0, 1.6)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tune.toml");
        write_toml(&path, &rows[1], Duration::from_secs(10)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(keys, ["batch_size = 32", "concurrency = 2"]);
        let mut table = Vec::new();
        print_table(&mut table, &rows).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.starts_with("Batch Size Concurrency    Docs/s") && table.contains("Total Time (s)"), "{table}");
        assert!(table.lines().next().is_some_and(|l| l.ends_with("Real/Padded")), "{table}");
        assert!(table.lines().nth(1).is_some_and(|l| l.ends_with("0.50")), "{table}");
    }
}
