//! `tweet-embed requeue`: puts rejected documents back in the work queue when their rejection
//! came from a setting rather than from the document — "input too long" with `--api openai` on a
//! server without auto-truncate, an endpoint misconfigured for a while. It clears the marks of
//! the rejections whose reason matches `--reason` (a regular expression, Rust's `regex` syntax),
//! optionally only those rejected since `--since`, and prints what it found per reason.
//!
//! It is idempotent (cleared documents are no longer rejected, so a second call finds nothing)
//! and safe while a run is going: each clear is conditional on the document still carrying that
//! rejection, and a cleared document is just work again, which the running `run` (through its
//! change stream) or the next backfill embeds. Rows of the old rejection stay in `_rejects/`.

use anyhow::{anyhow, bail, Result};
use mongodb::bson::{DateTime, Document};
use tweet_embed_operators::mongo::error::describe;
use tweet_embed_operators::mongo::marker::Marker;

/// Flags of `tweet-embed requeue`.
#[derive(Debug, Clone, clap::Args)]
pub struct RequeueArgs {
    /// The tweets.
    #[command(flatten)]
    pub mongo: crate::config::MongoArgs,
    /// The mark field of the run that rejected them.
    #[arg(long, default_value = "gemma_embedded_768")]
    pub mark_field: String,
    /// Which rejections: a regular expression matched against the reason, e.g. `too long`.
    #[arg(long)]
    pub reason: String,
    /// Only rejections marked at or after this time: `2026-11-30` or RFC 3339
    /// (`2026-11-30T12:00:00Z`). Rejections marked by versions before `requeue` existed carry no
    /// time and never match `--since`.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime>,
    /// Print what would be requeued and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Parses `--since`: a date (midnight UTC) or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<DateTime, String> {
    let s = s.trim();
    let rfc3339 = if s.len() == 10 { format!("{s}T00:00:00Z") } else { s.to_string() };
    DateTime::parse_rfc3339_str(&rfc3339)
        .map_err(|_| format!("`{s}` is not a date (2026-11-30) or an RFC 3339 time (2026-11-30T12:00:00Z)"))
}

/// Runs `tweet-embed requeue`: prints one line per matching reason and a total.
pub fn run(args: RequeueArgs) -> Result<()> {
    let pattern = regex::Regex::new(&args.reason).map_err(|e| anyhow!("--reason is not a regular expression: {e}"))?;
    if args.mark_field.trim().is_empty() {
        bail!("--mark-field must not be empty");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let found = rt.block_on(async {
        let client =
            mongodb::Client::with_uri_str(&args.mongo.mongo_uri).await.map_err(|e| anyhow!("bad --mongo-uri: {e}"))?;
        let coll = client.database(&args.mongo.db).collection::<Document>(&args.mongo.collection);
        let marker = Marker { coll, mark_field: args.mark_field.clone(), retry: Default::default() };
        marker.requeue(|reason| pattern.is_match(reason), args.since, !args.dry_run).await.map_err(|e| {
            anyhow!(
                "requeueing rejections in {}.{}: {} (the monitor index `{}` on `{}` is needed: `tweet-embed indexes --mark-field {}` creates it)",
                args.mongo.db,
                args.mongo.collection,
                describe(&e),
                tweet_embed_operators::mongo::work_queue::monitor_index_name(&args.mark_field),
                args.mark_field,
                args.mark_field
            )
        })
    })?;
    let verb = if args.dry_run { "would requeue" } else { "requeued" };
    for (reason, (matched, cleared)) in &found.by_reason {
        let n = if args.dry_run { *matched } else { *cleared };
        crate::say!("{verb} {n:>10}  {reason}");
    }
    let n = if args.dry_run { found.matched() } else { found.cleared() };
    crate::say!("{verb} {n} rejected document{} matching `{}`", if n == 1 { "" } else { "s" }, args.reason);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_a_time() {
        assert_eq!(parse_since("2026-11-30").unwrap().timestamp_millis(), 1_795_996_800_000);
        assert_eq!(parse_since("2026-11-30T00:00:01Z").unwrap().timestamp_millis(), 1_795_996_801_000);
        assert!(parse_since("yesterday").is_err());
    }
}
