//! The Mongo work queue: the documents still to embed, as the partial index
//! `embedding_work_queue` on `{lang, classified, _id}` with `{retweeted: null, <mark>: null}`
//! holds them. Owns the queue's filter, its index check and creation, its partitions, the scan
//! plan (the `_id` ranges workers scan) and counting what remains. The scan itself is the
//! source operator's (`crate::dataflow::work_queue_source`); reading a document is `crate::mongo::candidate`'s.
//!
//! It only reads, besides creating its two indexes ([`create_indexes`], for `tweet-embed indexes`
//! and the dev stack); marking is [`crate::mongo::marker`]'s job.

use crate::mongo::document_id::DocId;
use mongodb::bson::serde_helpers::Utf8LossyDeserialization;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::Hint;
use mongodb::Collection;

/// Name of the work-queue index of the default mark field (the seed's name).
pub const WORK_QUEUE_INDEX: &str = "embedding_work_queue";
/// Name of the monitoring index of the default mark field (the seed's name).
pub const MONITOR_INDEX: &str = "processed_monitor_idx";
/// The mark field of the seed's setup, whose indexes keep the seed's names.
pub const DEFAULT_MARK_FIELD: &str = "gemma_embedded_768";

/// Name of the work-queue index for `mark_field`: the seed's name for the default field, else
/// the name with the field appended, so one collection can carry the queues of several outputs
/// (another model or width, each with its own mark field).
pub fn work_queue_index_name(mark_field: &str) -> String {
    named(WORK_QUEUE_INDEX, mark_field)
}

/// Name of the monitoring index for `mark_field` (as [`work_queue_index_name`]).
pub fn monitor_index_name(mark_field: &str) -> String {
    named(MONITOR_INDEX, mark_field)
}

fn named(base: &str, mark_field: &str) -> String {
    if mark_field == DEFAULT_MARK_FIELD {
        base.to_string()
    } else {
        format!("{base}_{mark_field}")
    }
}

/// The index of `coll` named `name`, if any. Errors: listing the indexes failed (a collection
/// that does not exist has none).
pub async fn find_index(
    coll: &Collection<Document>,
    name: &str,
) -> Result<Option<mongodb::IndexModel>, mongodb::error::Error> {
    let mut cursor = match coll.list_indexes().await {
        Ok(c) => c,
        Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => return Ok(None),
        Err(e) => return Err(e),
    };
    while cursor.advance().await? {
        let model: mongodb::IndexModel = cursor.deserialize_current()?;
        if model.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name) {
            return Ok(Some(model));
        }
    }
    Ok(None)
}

/// How `found` differs from `wanted` in what the pipeline relies on (keys, partial filter,
/// sparseness), in words; None when it does not. A hint to an index whose partial filter is
/// narrower than the query's silently returns part of the answer on a real mongod
/// (SERVER-26413), so the filter is compared, not only the name.
pub fn index_mismatch(found: &mongodb::IndexModel, wanted: &mongodb::IndexModel) -> Option<String> {
    let partial = |m: &mongodb::IndexModel| m.options.as_ref().and_then(|o| o.partial_filter_expression.clone());
    let sparse = |m: &mongodb::IndexModel| m.options.as_ref().and_then(|o| o.sparse).unwrap_or(false);
    let same_doc = |a: &Document, b: &Document| a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v));
    let filters_agree = match (partial(found), partial(wanted)) {
        (Some(a), Some(b)) => same_doc(&a, &b),
        (None, None) => true,
        _ => false,
    };
    if found.keys == wanted.keys && filters_agree && sparse(found) == sparse(wanted) {
        return None;
    }
    let describe = |m: &mongodb::IndexModel| {
        let filter = partial(m).map_or("no partial filter".to_string(), |f| format!("partial filter {f}"));
        format!("on {} with {filter}{}", m.keys, if sparse(m) { ", sparse" } else { "" })
    };
    Some(format!("is {}, but this run needs it {}", describe(found), describe(wanted)))
}

/// The one-line refusal for an index named like ours but made otherwise (`mismatch` from
/// [`index_mismatch`]), with the fix.
pub fn index_conflict(coll: &Collection<Document>, name: &str, mismatch: &str, mark_field: &str) -> String {
    let ns = coll.namespace();
    format!(
        "the index `{name}` of {ns} {mismatch} (made by another job or another --mark-field?); a hint to it could \
         read only part of the work queue. Drop it (`db.{}.dropIndex(\"{name}\")`) and run `tweet-embed indexes \
         --db {} --collection {} --mark-field {mark_field}`, or use another --mark-field (its indexes get their own names)",
        ns.coll, ns.db, ns.coll
    )
}

/// What the queue is made of.
#[derive(Clone, Debug)]
pub struct WorkQueue {
    /// The tweets.
    pub coll: Collection<Document>,
    /// Field holding the text (`text`).
    pub text_field: String,
    /// Field marking done documents (`gemma_embedded_768`).
    pub mark_field: String,
    /// Only these languages, if given.
    pub langs: Option<Vec<String>>,
    /// Only this `classified` value, if given.
    pub classified: Option<bool>,
    /// How reads that fail with an error that heals are retried, and where their waits show.
    pub retry: crate::mongo::error::MongoRetry,
}

/// One `(lang, classified)` pair of the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// `lang` value (null when missing).
    pub lang: Bson,
    /// `classified` value (null when missing).
    pub classified: Bson,
}

impl Partition {
    /// A stable, readable key for checkpoints and logs.
    pub fn key(&self) -> String {
        format!("lang={},classified={}", self.lang, self.classified)
    }
}

/// A part of one partition one worker scans: `_id` in `(after, upto]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanRange {
    /// Partition.
    pub partition: Partition,
    /// Exclusive lower bound on `_id`.
    pub after: Option<Bson>,
    /// Inclusive upper bound on `_id`.
    pub upto: Option<Bson>,
}

/// The work-queue index's key and options for a mark field.
pub fn work_queue_index(mark_field: &str) -> mongodb::IndexModel {
    mongodb::IndexModel::builder()
        .keys(doc! {"lang": 1, "classified": 1, "_id": 1})
        .options(
            mongodb::options::IndexOptions::builder()
                .name(work_queue_index_name(mark_field))
                .partial_filter_expression(doc! {"retweeted": null, mark_field: null})
                .build(),
        )
        .build()
}

/// The monitoring index: sparse on the mark field, so it counts what is done.
pub fn monitor_index(mark_field: &str) -> mongodb::IndexModel {
    mongodb::IndexModel::builder()
        .keys(doc! {mark_field: 1})
        .options(mongodb::options::IndexOptions::builder().name(monitor_index_name(mark_field)).sparse(true).build())
        .build()
}

/// Creates the work-queue and monitoring indexes for `mark_field` on `coll`; returns their names.
/// Idempotent: existing identical indexes are left as they are. An index of the same name made
/// otherwise is refused with [`index_conflict`]'s words (Err(Ok(line))), before MongoDB answers
/// `IndexKeySpecsConflict`; a failure of MongoDB is Err(Err(error)).
pub async fn create_indexes(
    coll: &Collection<Document>,
    mark_field: &str,
) -> Result<Vec<String>, Result<String, mongodb::error::Error>> {
    for wanted in [work_queue_index(mark_field), monitor_index(mark_field)] {
        let name = wanted.options.as_ref().and_then(|o| o.name.clone()).unwrap_or_default();
        if let Some(found) = find_index(coll, &name).await.map_err(Err)? {
            if let Some(mismatch) = index_mismatch(&found, &wanted) {
                return Err(Ok(index_conflict(coll, &name, &mismatch, mark_field)));
            }
        }
    }
    let created =
        coll.create_indexes(vec![work_queue_index(mark_field), monitor_index(mark_field)]).await.map_err(Err)?;
    Ok(created.index_names)
}

impl WorkQueue {
    /// The name of its index (see [`work_queue_index_name`]).
    pub fn index_name(&self) -> String {
        work_queue_index_name(&self.mark_field)
    }

    /// The filter of documents still to embed (the index's partial filter), optionally for one
    /// partition.
    pub fn filter(&self, partition: Option<&Partition>) -> Document {
        let mut f = doc! {"retweeted": null, &self.mark_field: null};
        match partition {
            Some(p) => {
                f.insert("lang", p.lang.clone());
                f.insert("classified", p.classified.clone());
            }
            None => {
                if let Some(langs) = &self.langs {
                    f.insert("lang", doc! {"$in": langs.clone()});
                }
                if let Some(c) = self.classified {
                    f.insert("classified", c);
                }
            }
        }
        f
    }

    /// Refuses to run without the work-queue index, or with an index of its name made otherwise
    /// (another filter: a hint to it could read part of the queue), saying how to fix it.
    pub async fn check_index(&self) -> Result<(), String> {
        let ns = self.coll.namespace();
        let name = self.index_name();
        let found = find_index(&self.coll, &name)
            .await
            .map_err(|e| format!("cannot list the indexes of {ns}: {}", crate::mongo::error::describe(&e)))?;
        let Some(found) = found else {
            if let Some(missing) = self.missing_collection().await {
                return Err(missing);
            }
            let flag = if self.mark_field == DEFAULT_MARK_FIELD {
                String::new()
            } else {
                format!(" --mark-field {}", self.mark_field)
            };
            return Err(format!(
                "{ns} has no `{name}` index, so the work queue cannot be scanned without reading the whole \
                 collection; create it with `tweet-embed indexes --db {} --collection {}{flag}`",
                ns.db, ns.coll
            ));
        };
        match index_mismatch(&found, &work_queue_index(&self.mark_field)) {
            None => Ok(()),
            Some(mismatch) => Err(index_conflict(&self.coll, &name, &mismatch, &self.mark_field)),
        }
    }

    /// When the collection does not exist (a typo in `--db` or `--collection`), the line that says
    /// so and names the databases and collections that do; None when it exists or the names
    /// cannot be listed.
    async fn missing_collection(&self) -> Option<String> {
        let ns = self.coll.namespace();
        let client = self.coll.client();
        let here = client.database(&ns.db).list_collection_names().await.ok()?;
        if here.contains(&ns.coll) {
            return None;
        }
        let mut dbs = client.list_database_names().await.unwrap_or_default();
        dbs.retain(|d| !matches!(d.as_str(), "admin" | "local" | "config"));
        dbs.sort();
        let mut here = here;
        here.sort();
        let list = |names: &[String]| if names.is_empty() { "none".to_string() } else { names.join(", ") };
        Some(format!(
            "no collection {ns}: the collections of {} are {}; the databases are {}. Check --db and --collection; \
             for a new collection not written yet, `tweet-embed indexes --db {} --collection {} --create-missing` \
             creates it with its `{}` index",
            ns.db,
            list(&here),
            list(&dbs),
            ns.db,
            ns.coll,
            self.index_name()
        ))
    }

    /// The partitions present in the queue (or those the flags name).
    pub async fn partitions(&self) -> Result<Vec<Partition>, mongodb::error::Error> {
        let pipeline = vec![
            doc! {"$match": self.filter(None)},
            doc! {"$group": {"_id": {"lang": "$lang", "classified": "$classified"}}},
            doc! {"$sort": {"_id.lang": 1, "_id.classified": 1}},
        ];
        let mut cursor = self.coll.aggregate(pipeline).hint(Hint::Name(self.index_name())).await?;
        let (mut parts, mut unreadable) = (Vec::new(), Vec::new());
        while cursor.advance().await? {
            // Raw: a `lang` stored as a string that is not UTF-8 must not fail the whole plan.
            let group = match Document::try_from(cursor.current()) {
                Ok(g) => g,
                Err(_) => {
                    let lossy =
                        mongodb::bson::from_slice::<Utf8LossyDeserialization<Document>>(cursor.current().as_bytes());
                    let classified = lossy.ok().and_then(|g| g.0.get_document("_id").ok()?.get("classified").cloned());
                    unreadable.push(classified.unwrap_or(Bson::Null));
                    continue;
                }
            };
            let Ok(id) = group.get_document("_id") else { continue };
            parts.push(Partition {
                lang: id.get("lang").cloned().unwrap_or(Bson::Null),
                classified: id.get("classified").cloned().unwrap_or(Bson::Null),
            });
        }
        // Such a `lang` cannot be sent back in a filter (the driver's filters are UTF-8), so
        // those partitions are scanned as one per `classified`: every `lang` but the readable
        // ones. It costs a wider index scan, only when the queue holds such documents.
        let readable: Vec<Bson> = parts.iter().map(|p| p.lang.clone()).collect();
        unreadable.sort_by_key(|c| c.to_string());
        unreadable.dedup();
        for classified in unreadable {
            parts.push(Partition { lang: Bson::Document(doc! {"$nin": readable.clone()}), classified });
        }
        Ok(parts)
    }

    /// An unmarked document the queue leaves out because its `retweeted` is `false` (its `_id`),
    /// if one is found within 2 s: raw Twitter API v1.1 JSON sets `retweeted: false` on every
    /// tweet (it says whether the *authenticated user* retweeted it), and the queue's filter
    /// takes only `retweeted` null or missing, so such a collection is never embedded. Unindexed:
    /// on a collection without such documents it reads for 2 s and answers None.
    pub async fn left_out_as_retweeted_false(&self) -> Option<Bson> {
        let filter = doc! {&self.mark_field: null, "retweeted": false};
        let found =
            self.coll.find_one(filter).projection(doc! {"_id": 1}).max_time(std::time::Duration::from_secs(2)).await;
        found.ok().flatten().and_then(|d| d.get("_id").cloned())
    }

    /// The one-line explanation of [`WorkQueue::left_out_as_retweeted_false`]'s finding.
    pub fn retweeted_false_warning(&self, example: &Bson) -> String {
        let ns = self.coll.namespace();
        format!(
            "documents without `{mark}` are left out of the work queue because their `retweeted` is false (e.g. \
             _id {example}): raw Twitter API v1.1 JSON sets `retweeted: false` on every tweet (it says whether *you* \
             retweeted it), and the queue takes only documents whose `retweeted` is null or missing (partial filter \
             {{retweeted: null, {mark}: null}}). If these are such tweets, unset it where false — \
             db.{coll}.updateMany({{retweeted: false}}, {{$unset: {{retweeted: \"\"}}}}) — and run again \
             (`tweet-embed status` counts what the queue cannot see)",
            mark = self.mark_field,
            coll = ns.coll
        )
    }

    /// Documents left in the queue (a hinted count: index entries only).
    pub async fn remaining(&self) -> Result<u64, mongodb::error::Error> {
        self.coll.count_documents(self.filter(None)).hint(Hint::Name(self.index_name())).await
    }

    async fn edge_id(&self, p: &Partition, dir: i32) -> Result<Option<Bson>, mongodb::error::Error> {
        let d = self
            .coll
            .find_one(self.filter(Some(p)))
            .sort(doc! {"_id": dir})
            .projection(doc! {"_id": 1})
            .hint(Hint::Name(self.index_name()))
            .await?;
        Ok(d.and_then(|d| d.get("_id").cloned()))
    }

    /// The smallest and the largest `_id` of the whole collection (not only the queue), `None`
    /// when it is empty: two lookups through the `_id` index, from which
    /// [`crate::table::output::IdType::of_edges`] tells the type of every `_id`.
    pub async fn collection_id_edges(&self) -> Result<(Option<Bson>, Option<Bson>), mongodb::error::Error> {
        // Raw documents: a string `_id` that is not UTF-8 must not fail the lookup.
        let raw = self.coll.clone_with_type::<mongodb::bson::RawDocumentBuf>();
        let mut edges = [None, None];
        for (edge, dir) in edges.iter_mut().zip([1, -1]) {
            let d = raw.find_one(doc! {}).sort(doc! {"_id": dir}).projection(doc! {"_id": 1}).await?;
            *edge = d.map(|d| DocId::read_bson(&d));
        }
        let [min, max] = edges;
        Ok((min, max))
    }

    /// One snapshot of the queue's partitions and their `_id` edges, for every worker of a pass
    /// to split the same way: were each worker to read the edges itself, a writer inserting in
    /// between would move them, leaving gaps (missed documents) or overlaps (read twice) between
    /// the workers' ranges.
    pub async fn plan(&self, whole: bool) -> Result<ScanPlan, mongodb::error::Error> {
        let mut parts = Vec::new();
        for p in self.partitions().await? {
            let edges = if whole { (None, None) } else { (self.edge_id(&p, 1).await?, self.edge_id(&p, -1).await?) };
            parts.push((p, edges.0, edges.1));
        }
        Ok(ScanPlan { parts, whole })
    }
}

/// The work queue's partitions and their first and last `_id`, as one pass plans its scan.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanPlan {
    parts: Vec<(Partition, Option<Bson>, Option<Bson>)>,
    whole: bool,
}

impl ScanPlan {
    /// The plan as BSON bytes, for worker 0 to hand to every worker of a cluster: `_id` bounds
    /// are BSON values, which only BSON carries faithfully (see `notes/timely.md` on serde).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let parts: Vec<Bson> = self
            .parts
            .iter()
            .map(|(p, lo, hi)| {
                let mut d = doc! {"lang": p.lang.clone(), "classified": p.classified.clone()};
                if let Some(lo) = lo {
                    d.insert("lo", lo.clone());
                }
                if let Some(hi) = hi {
                    d.insert("hi", hi.clone());
                }
                Bson::Document(d)
            })
            .collect();
        let d = doc! {"whole": self.whole, "parts": parts};
        let mut out = Vec::new();
        d.to_writer(&mut out).map_err(|e| format!("encoding the scan plan: {e}"))?;
        Ok(out)
    }

    /// The inverse of [`ScanPlan::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<ScanPlan, String> {
        let bad = |e: &dyn std::fmt::Display| format!("a scan plan from worker 0 is unreadable: {e}");
        let d = Document::from_reader(bytes).map_err(|e| bad(&e))?;
        let whole = d.get_bool("whole").map_err(|e| bad(&e))?;
        let mut parts = Vec::new();
        for p in d.get_array("parts").map_err(|e| bad(&e))? {
            let Bson::Document(p) = p else { return Err(bad(&"a partition is not a document")) };
            let field = |k: &str| p.get(k).cloned();
            let partition = Partition {
                lang: field("lang").unwrap_or(Bson::Null),
                classified: field("classified").unwrap_or(Bson::Null),
            };
            parts.push((partition, field("lo"), field("hi")));
        }
        Ok(ScanPlan { parts, whole })
    }

    /// Whether the queue had nothing to scan when planned.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Splits every partition into `workers` `_id` ranges (by ObjectId time when the ids are
    /// ObjectIds and the plan is not `whole`; otherwise whole partitions are dealt out), and
    /// returns worker `index`'s share. Whole partitions catch ids of other types a split would
    /// miss. The same plan gives every worker disjoint ranges that cover the queue.
    pub fn ranges_for(&self, index: usize, workers: usize) -> Vec<ScanRange> {
        let workers = workers.max(1);
        let mut mine = Vec::new();
        for (pi, (p, lo, hi)) in self.parts.iter().enumerate() {
            if self.whole {
                if pi % workers == index {
                    mine.push(ScanRange { partition: p.clone(), after: None, upto: None });
                }
                continue;
            }
            match (lo, hi) {
                (Some(Bson::ObjectId(lo)), Some(Bson::ObjectId(hi))) if workers > 1 => {
                    let (a, b) =
                        (lo.timestamp().timestamp_millis() / 1000, hi.timestamp().timestamp_millis() / 1000 + 1);
                    let step = ((b - a) as f64 / workers as f64).max(1.0);
                    let bound = |k: usize| -> Option<Bson> {
                        (k < workers).then(|| Bson::ObjectId(DocId::oid_floor(a + (step * k as f64) as i64)))
                    };
                    // Range k is (floor(k), floor(k+1)] in ObjectId order; the first starts below
                    // all, the last has no end (documents inserted after planning included).
                    let after = if index == 0 { None } else { bound(index) };
                    let upto = bound(index + 1).map(|b| Bson::ObjectId(DocId::prev_oid(&b)));
                    mine.push(ScanRange {
                        partition: p.clone(),
                        after: after.map(|a| Bson::ObjectId(DocId::prev_oid(&a))),
                        upto,
                    });
                }
                // Partitions ending up empty are still dealt out, so nothing is skipped.
                (Some(_), Some(_)) if pi % workers == index => {
                    mine.push(ScanRange { partition: p.clone(), after: None, upto: None });
                }
                _ => {}
            }
        }
        mine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn one_plan_gives_disjoint_ranges_that_cover_every_id() {
        let oid = |secs: u32, n: u32| {
            let mut b = [0u8; 12];
            b[..4].copy_from_slice(&secs.to_be_bytes());
            b[8..].copy_from_slice(&n.to_be_bytes());
            ObjectId::from_bytes(b)
        };
        let part = Partition { lang: Bson::String("en".into()), classified: Bson::Boolean(true) };
        let plan = ScanPlan {
            parts: vec![(part, Some(Bson::ObjectId(oid(1_000, 0))), Some(Bson::ObjectId(oid(1_997, 5))))],
            whole: false,
        };
        let contains = |r: &ScanRange, o: &ObjectId| {
            let gt = |b: &Option<Bson>| b.as_ref().is_none_or(|b| matches!(b, Bson::ObjectId(x) if o > x));
            let le = r.upto.as_ref().is_none_or(|b| matches!(b, Bson::ObjectId(x) if o <= x));
            gt(&r.after) && le
        };
        // What worker 0 sends the cluster is the plan itself.
        let sent = ScanPlan::from_bytes(&plan.to_bytes().expect("encode")).expect("decode");
        assert_eq!(sent, plan);
        for workers in [1, 2, 3, 4, 7] {
            let ranges: Vec<ScanRange> = (0..workers).flat_map(|w| plan.ranges_for(w, workers)).collect();
            // Below, inside and above the planned edges (inserts after planning land above).
            for secs in (900..2_200).step_by(7) {
                for n in [0, 1, u32::MAX] {
                    let o = oid(secs, n);
                    let owners = ranges.iter().filter(|r| contains(r, &o)).count();
                    assert_eq!(owners, 1, "{workers} workers: {o} in {owners} ranges");
                }
            }
        }
    }
}
