//! The run session that `backfill`, `run` and `demo` share: connect the engine, serve metrics and
//! show progress while the command's engine call runs, stop them in order, and print the one-screen
//! summary. It owns no flags (each command resolves its own into a `RunConfig`) and no engine
//! logic: the run's life cycle is `tweet_embed_operators::run::Engine`'s.

use crate::metrics::{MetricSources, MetricsServer};
use crate::progress::{ProgressSources, Reporter};
use anyhow::Result;
use std::net::SocketAddr;
use tweet_embed_operators::run::{Engine, RunConfig, Summary};

/// Connects `config`'s run and hands it to `go` (the backfill, or continuous mode), with the
/// progress display on the leading process and a Prometheus exporter on `metrics_addr`.
pub fn execute(
    config: RunConfig,
    metrics_addr: Option<SocketAddr>,
    go: impl FnOnce(Engine) -> Result<Summary>,
) -> Result<Summary> {
    let leads = config.cluster.leads();
    let engine = Engine::connect(config)?;
    // Dropped last: the progress thread and the exporter count through this runtime until they stop.
    let runtime = engine.keep_runtime();
    let monitor = engine.monitor();
    let _metrics: Option<MetricsServer> = match metrics_addr {
        Some(addr) => {
            let sources = MetricSources {
                totals: monitor.totals.clone(),
                output: monitor.output.clone(),
                pool: monitor.pool.clone(),
                run: monitor.clone(),
            };
            Some(crate::metrics::serve(&monitor.runtime, addr, sources)?)
        }
        None => None,
    };
    // Progress counts commits, which only the leading process makes.
    let progress = leads.then(|| {
        Reporter::start(ProgressSources {
            totals: monitor.totals.clone(),
            pool: Some(monitor.pool.clone()),
            queue: Some((monitor.queue.clone(), monitor.runtime.clone())),
            compaction: Some(monitor.compaction.clone()),
        })
    });
    let summary = go(engine);
    if let Some(p) = progress {
        p.stop();
    }
    drop(_metrics);
    drop(monitor);
    drop(runtime);
    summary
}

/// Prints what a follower of a cluster (process `process`) did in a backfill or run (`what`).
pub fn print_follower_summary(what: &str, s: &Summary, process: usize) {
    crate::say!(
        "{what}: process {process} followed process 0 for {} pass{} in {:.1} s; its summary has the totals",
        s.passes,
        if s.passes == 1 { "" } else { "es" },
        s.elapsed.as_secs_f64()
    );
}

/// Prints the one-screen summary of a backfill or run (`what`) that wrote to `out`.
pub fn print_summary(what: &str, s: &Summary, out: &std::path::Path) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    crate::say!("{what} done in {:.1} s ({} pass{})", secs, s.passes, if s.passes == 1 { "" } else { "es" });
    crate::say!("  documents embedded : {}", s.embedded);
    crate::say!("  documents rejected : {} (see {}/_rejects)", s.rejected, out.display());
    if let Some(id_type) = s.id_type {
        let strays = match s.strays {
            0 => String::new(),
            n => format!(" ({n} rejected: their _id does not fit; see stray_id in _rejects)"),
        };
        crate::say!("  id column          : {id_type}{strays}");
    }
    crate::say!(
        "  throughput         : {:.0} docs/s, {:.0} tok/s",
        (s.embedded + s.rejected) as f64 / secs,
        s.tokens as f64 / secs
    );
    if let Some(share) = s.real_share {
        crate::say!(
            "  padding            : {:.1}% of the tokens sent were padding on a padded model (real / computed {:.2}; \
             TEI pads every batch of EmbeddingGemma to its longest input)",
            (1.0 - share) * 100.0,
            share
        );
    }
    let c = &s.compaction;
    crate::say!(
        "  files              : {} epoch files staged, {} compacted into {} ({:.1} MiB written)",
        s.files,
        c.compactions,
        out.display(),
        c.bytes_written as f64 / (1u64 << 20) as f64
    );
    if s.deletions > 0 || s.cancelled > 0 || c.deletions_applied > 0 || c.deletions_pending > 0 {
        crate::say!(
            "  deletions          : {} recorded in {}/_deletions, {} applied, {} pending, {} rows removed, {} cancelled within their epoch",
            s.deletions,
            out.display(),
            c.deletions_applied,
            c.deletions_pending,
            c.deleted_rows,
            s.cancelled
        );
    }
    if s.stale_removed > 0 || s.remarked > 0 {
        crate::say!(
            "  recovery           : {} stale files removed, {} documents re-marked",
            s.stale_removed,
            s.remarked
        );
    }
}
