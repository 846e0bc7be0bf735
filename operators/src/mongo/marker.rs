//! The Mongo marker: after an epoch's files are durable, sets `<mark>: true` on its embedded
//! documents and `<mark>: false, <mark>_error: <reason>` on its rejected ones, which takes them
//! out of the work queue (the partial index requires the mark to be null).
//!
//! Marking is idempotent, so re-marking an epoch after a crash is always safe, and so is trying
//! again: an update that fails with an error that heals (an election, a dropped connection) is
//! retried with backoff for as long as it lasts (`crate::mongo::error`); one that cannot heal is
//! returned. It never marks a document whose row or rejection is not durable: callers run it only
//! after a commit.
//!
//! A document deleted between its read and its marking is found here: the update matches fewer
//! documents than it was given. The marker names them ([`Marked::vanished`], one `_id` lookup
//! for the chunk) so the committer records them as deletions of the epoch: their rows, already
//! durable, leave the output by the deletion rule (`crate::table::output::DeletionSet`), even when no
//! change stream saw the delete (a backfill) or saw it in an earlier epoch than the row's.
//!
//! A rejection also records when it was marked (`<mark>_rejected_at`), so [`Marker::requeue`] can
//! clear the marks of rejections that a setting caused (`tweet-embed requeue`), putting those
//! documents back in the work queue.

use crate::mongo::document_id::DocId;
use crate::mongo::error::{retry, MongoRetry};
use mongodb::bson::{doc, Bson, DateTime, Document};
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marked {
    /// Documents set to `true`.
    pub embedded: u64,
    /// Documents set to `false` with a reason.
    pub rejected: u64,
    /// Ids given to mark that are no longer in the collection (deleted since they were read).
    pub vanished: Vec<String>,
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
            let ids: Vec<Bson> = chunk.iter().filter_map(|s| DocId::decode(s)).collect();
            let given = ids.len() as u64;
            let (filter, set) = (doc! {"_id": {"$in": ids}}, doc! {"$set": {&self.mark_field: true}});
            let r = retry(&self.retry, "marking documents embedded", || {
                self.coll.update_many(filter.clone(), set.clone()).into_future()
            })
            .await?;
            out.embedded += r.matched_count;
            if r.matched_count < given {
                // Rare: the ids again, rather than a copy of every chunk's on the way.
                out.vanished.extend(self.missing(chunk.iter().filter_map(|s| DocId::decode(s)).collect()).await?);
            }
        }
        let mut by_reason: BTreeMap<&str, Vec<Bson>> = BTreeMap::new();
        for (id, reason) in rejected {
            if let Some(b) = DocId::decode(id) {
                by_reason.entry(reason.as_str()).or_default().push(b);
            }
        }
        let (error_field, at_field) = (self.error_field(), self.rejected_at_field());
        let now = DateTime::now();
        for (reason, ids) in by_reason {
            for chunk in ids.chunks(CHUNK) {
                let filter = doc! {"_id": {"$in": chunk.to_vec()}};
                let set = doc! {"$set": {&self.mark_field: false, &error_field: reason, &at_field: now}};
                let r = retry(&self.retry, "marking documents rejected", || {
                    self.coll.update_many(filter.clone(), set.clone()).into_future()
                })
                .await?;
                out.rejected += r.matched_count;
                if r.matched_count < chunk.len() as u64 {
                    out.vanished.extend(self.missing(chunk.to_vec()).await?);
                }
            }
        }
        Ok(out)
    }

    /// Which of `ids` are not in the collection, in the engine's form
    /// (`crate::mongo::document_id::DocId`): one `$in` lookup through the `_id` index.
    async fn missing(&self, ids: Vec<Bson>) -> Result<Vec<String>, mongodb::error::Error> {
        let filter = doc! {"_id": {"$in": ids.clone()}};
        let found: Option<Vec<Bson>> = retry(&self.retry, "looking up documents that vanished", || {
            let filter = filter.clone();
            async move {
                let mut cursor = self.coll.find(filter).projection(doc! {"_id": 1}).await?;
                let mut found = Vec::new();
                while cursor.advance().await? {
                    // Raw: an `_id` this build cannot decode leaves the answer unknown.
                    let id = cursor.current().get("_id").ok().flatten().map(|raw| Bson::try_from(raw.to_raw_bson()));
                    match id {
                        Some(Ok(id)) => found.push(id),
                        _ => return Ok(None),
                    }
                }
                Ok(Some(found))
            }
        })
        .await?;
        // Unknown: better no deletion than one of a document that is there.
        let Some(found) = found else { return Ok(Vec::new()) };
        let present: std::collections::HashSet<String> = found.iter().map(|id| DocId::of(id).into_string()).collect();
        Ok(ids.iter().map(|id| DocId::of(id).into_string()).filter(|id| !present.contains(id)).collect())
    }

    /// `<mark>_error`: why a document was rejected.
    pub fn error_field(&self) -> String {
        format!("{}_error", self.mark_field)
    }

    /// `<mark>_rejected_at`: when a rejection was marked (rejections marked before this field
    /// existed have none).
    pub fn rejected_at_field(&self) -> String {
        format!("{}_rejected_at", self.mark_field)
    }

    /// Finds the rejected documents (`<mark>: false`, read through the sparse monitor index)
    /// whose reason `matches` and, with `since`, that were rejected at or after it; with `apply`,
    /// clears their marks so the next run embeds them again. Each clear is conditional on the
    /// document still being rejected for that reason, so a run marking at the same time is never
    /// overwritten, and a second call finds nothing left to do. Returns the matches per reason.
    pub async fn requeue(
        &self,
        matches: impl Fn(&str) -> bool,
        since: Option<DateTime>,
        apply: bool,
    ) -> Result<Requeued, mongodb::error::Error> {
        let (error_field, at_field) = (self.error_field(), self.rejected_at_field());
        let mut filter = doc! {&self.mark_field: false};
        if let Some(since) = since {
            filter.insert(&at_field, doc! {"$gte": since});
        }
        let projection = doc! {"_id": 1, &error_field: 1};
        let mut cursor = self
            .coll
            .find(filter.clone())
            .projection(projection)
            .hint(mongodb::options::Hint::Name(crate::mongo::work_queue::monitor_index_name(&self.mark_field)))
            .await?;
        let mut by_reason: BTreeMap<String, Vec<Bson>> = BTreeMap::new();
        while cursor.advance().await? {
            let d = cursor.current();
            let reason = d.get_str(&error_field).unwrap_or("").to_string();
            if matches(&reason) {
                if let Ok(Some(id)) = d.get("_id") {
                    if let Ok(id) = Bson::try_from(id) {
                        by_reason.entry(reason).or_default().push(id);
                    }
                }
            }
        }
        let mut out = Requeued::default();
        for (reason, ids) in by_reason {
            let mut cleared = 0;
            if apply {
                for chunk in ids.chunks(CHUNK) {
                    let mut f = filter.clone();
                    f.insert("_id", doc! {"$in": chunk.to_vec()});
                    f.insert(&error_field, &reason);
                    let unset = doc! {"$unset": {&self.mark_field: "", &error_field: "", &at_field: ""}};
                    cleared += self.coll.update_many(f, unset).await?.modified_count;
                }
            }
            out.by_reason.insert(reason, (ids.len() as u64, cleared));
        }
        Ok(out)
    }
}

/// What [`Marker::requeue`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Per reason: rejected documents matching, and marks cleared (0 on a dry run).
    pub by_reason: BTreeMap<String, (u64, u64)>,
}

impl Requeued {
    /// Matching documents, all reasons together.
    pub fn matched(&self) -> u64 {
        self.by_reason.values().map(|(m, _)| m).sum()
    }

    /// Marks cleared, all reasons together.
    pub fn cleared(&self) -> u64 {
        self.by_reason.values().map(|(_, c)| c).sum()
    }
}
