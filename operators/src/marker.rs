//! The Mongo marker: after an epoch's files are durable, sets `<mark>: true` on its embedded
//! documents and `<mark>: false, <mark>_error: <reason>` on its rejected ones, which takes them
//! out of the work queue (the partial index requires the mark to be null).
//!
//! Marking is idempotent, so re-marking an epoch after a crash is always safe, and so is trying
//! again: an update that fails with an error that heals (an election, a dropped connection) is
//! retried with backoff for as long as it lasts (`crate::mongo_error`); one that cannot heal is
//! returned. It never marks a
//! document whose row or rejection is not durable: callers run it only after a commit.

use crate::mongo_error::{retry, MongoRetry};
use crate::work_queue::id_from_string;
use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;
use std::collections::BTreeMap;
use std::future::IntoFuture;

/// Documents set per `update_many`: large enough to amortize round trips, small enough to keep
/// one command well under the 16 MiB limit.
const CHUNK: usize = 2_000;

/// Marks documents done.
#[derive(Clone, Debug)]
pub struct Marker {
    /// The tweets.
    pub coll: Collection<Document>,
    /// The mark field.
    pub mark_field: String,
    /// How failed updates are retried, and where their waits show.
    pub retry: MongoRetry,
}

/// Counts of what a marking call changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marked {
    /// Documents set to `true`.
    pub embedded: u64,
    /// Documents set to `false` with a reason.
    pub rejected: u64,
}

impl Marker {
    /// Marks `embedded` ids `true` and `rejected` (id, reason) `false` with the reason.
    pub async fn mark(
        &self,
        embedded: &[String],
        rejected: &[(String, String)],
    ) -> Result<Marked, mongodb::error::Error> {
        let mut out = Marked::default();
        for chunk in embedded.chunks(CHUNK) {
            let ids: Vec<Bson> = chunk.iter().filter_map(|s| id_from_string(s)).collect();
            let (filter, set) = (doc! {"_id": {"$in": ids}}, doc! {"$set": {&self.mark_field: true}});
            let r = retry(&self.retry, "marking documents embedded", || {
                self.coll.update_many(filter.clone(), set.clone()).into_future()
            })
            .await?;
            out.embedded += r.matched_count;
        }
        let mut by_reason: BTreeMap<&str, Vec<Bson>> = BTreeMap::new();
        for (id, reason) in rejected {
            if let Some(b) = id_from_string(id) {
                by_reason.entry(reason.as_str()).or_default().push(b);
            }
        }
        let error_field = format!("{}_error", self.mark_field);
        for (reason, ids) in by_reason {
            for chunk in ids.chunks(CHUNK) {
                let filter = doc! {"_id": {"$in": chunk.to_vec()}};
                let set = doc! {"$set": {&self.mark_field: false, &error_field: reason}};
                let r = retry(&self.retry, "marking documents rejected", || {
                    self.coll.update_many(filter.clone(), set.clone()).into_future()
                })
                .await?;
                out.rejected += r.matched_count;
            }
        }
        Ok(out)
    }
}
