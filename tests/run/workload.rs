//! The continuous-mode workload — a writer inserting new tweets and making old ones eligible
//! while the pipeline runs — and the exactly-once check against the collection's final state.

use arrow::array::AsArray;
use dev_tei::embedding_for;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::Collection;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use test_support::synth::{kind_of, tweet, tweet_id, Kind};

/// Seeded documents, documents the writer inserts during the run, and updates that make
/// retweets or already-marked documents eligible.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub seeded: u64,
    pub inserted: u64,
    pub updates: usize,
    pub seed: u64,
}

impl Workload {
    /// The documents the writer makes eligible: the first retweets and already-marked ones.
    pub fn updated(&self) -> Vec<u64> {
        (0..self.seeded)
            .filter(|i| matches!(kind_of(*i, self.seed), Kind::Retweet | Kind::Marked))
            .take(self.updates)
            .collect()
    }

    /// Inserts the new documents in batches of 50 and interleaves the updates, pausing between
    /// batches so the writes span the run.
    pub async fn write(&self, coll: &Collection<Document>, pause: Duration) {
        let updated = self.updated();
        let batches = self.inserted.div_ceil(50).max(1);
        let per_batch = updated.len().div_ceil(batches as usize).max(1);
        let mut updates = updated.chunks(per_batch);
        for b in 0..batches {
            let from = self.seeded + b * 50;
            let to = (from + 50).min(self.seeded + self.inserted);
            let docs: Vec<Document> = (from..to).map(|i| tweet(i, self.seed)).collect();
            if !docs.is_empty() {
                retry(|| coll.insert_many(docs.clone())).await;
            }
            if let Some(ids) = updates.next() {
                let ids: Vec<Bson> = ids.iter().map(|i| Bson::ObjectId(tweet_id(*i, self.seed))).collect();
                let filter = doc! {"_id": {"$in": ids}};
                let update = doc! {"$unset": {"retweeted": "", "gemma_embedded_768": ""}};
                retry(|| coll.update_many(filter.clone(), update.clone())).await;
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// Retries a write through dropped connections (a test drops them on purpose).
async fn retry<T, F: std::future::IntoFuture<Output = mongodb::error::Result<T>>>(mut op: impl FnMut() -> F) -> T {
    for attempt in 0.. {
        match op().await {
            Ok(v) => return v,
            Err(e) if attempt < 50 => {
                eprintln!("writer retrying: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("writer gave up: {e}"),
        }
    }
    unreachable!()
}

/// Documents still in the work queue.
pub async fn remaining(coll: &Collection<Document>) -> u64 {
    coll.count_documents(doc! {"retweeted": null, "gemma_embedded_768": null})
        .hint(mongodb::options::Hint::Name("embedding_work_queue".into()))
        .await
        .unwrap_or(u64::MAX)
}

/// Output rows per `source` column value (`backfill`, `change_stream`).
/// Committed rows by source: the output directory and the staging directory of the tests' layout.
pub fn rows_by_source(out: &Path) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    let staging = out.parent().map(|p| p.join("state").join("staging"));
    let dirs = [Some(out.to_path_buf()), staging].into_iter().flatten();
    for e in dirs.filter_map(|d| std::fs::read_dir(d).ok()).flatten().flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("parquet") {
            continue;
        }
        let file = std::fs::File::open(&p).expect("open");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let col = arrow::compute::cast(
                batch.column_by_name("source").expect("source"),
                &arrow::datatypes::DataType::Utf8,
            )
            .expect("cast");
            let col = col.as_string::<i32>();
            for i in 0..batch.num_rows() {
                *by.entry(col.value(i).to_string()).or_insert(0) += 1;
            }
        }
    }
    by
}

/// Every eligible document (seeded, inserted, or made eligible) exactly once in the output with
/// its own text's vector, and marked; nothing else written or marked; and, when `texts_seen` is
/// given, every distinct text embedded exactly once (no document went through both sources, and
/// texts recurring across epochs came from the vector cache).
pub async fn check(out: &Path, coll: &Collection<Document>, w: &Workload, texts_seen: Option<HashMap<String, u32>>) {
    let test_support::expect::Output { vectors, counts, rejects } = test_support::expect::read_rows(out);
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(repeated.is_empty(), "ids written more than once: {repeated:?}");
    let updated: HashSet<u64> = w.updated().into_iter().collect();
    let mut cursor = coll.find(doc! {}).await.expect("find");
    let (mut rows, mut rejected, mut docs) = (0usize, 0usize, 0u64);
    let mut texts: HashMap<String, u32> = HashMap::new();
    while cursor.advance().await.expect("advance") {
        let d: Document = cursor.deserialize_current().expect("doc");
        let oid: ObjectId = d.get_object_id("_id").expect("synthetic ids only");
        docs += 1;
        let id = oid.to_hex();
        let i = u32::from_be_bytes(oid.bytes()[8..12].try_into().expect("4 bytes")) as u64;
        let mark = d.get("gemma_embedded_768");
        let kind = kind_of(i, w.seed);
        let eligible = matches!(kind, Kind::Good | Kind::Bad) || updated.contains(&i);
        if !eligible {
            assert!(!counts.contains_key(&id), "{kind:?} {id} written");
            if kind == Kind::Retweet {
                assert_eq!(mark, None, "retweet {id} marked");
            }
            continue;
        }
        if kind == Kind::Bad {
            rejected += 1;
            assert!(rejects.contains_key(&id), "no rejection for {id}");
            assert_eq!(mark, Some(&Bson::Boolean(false)), "mark of rejected {id}");
        } else {
            rows += 1;
            let text = d.get_str("text").expect("text");
            let v = vectors
                .get(&id)
                .unwrap_or_else(|| panic!("no row for {kind:?} {id} (updated: {})", updated.contains(&i)));
            assert_eq!(v, &embedding_for(text, 768), "vector of {id}");
            assert_eq!(mark, Some(&Bson::Boolean(true)), "mark of {id}");
            *texts.entry(text.to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(docs, w.seeded + w.inserted);
    assert_eq!(vectors.len(), rows, "rows beyond the eligible documents");
    assert_eq!(rejects.len(), rejected, "rejections beyond the eligible documents");
    if let Some(seen) = texts_seen {
        for (text, docs) in &texts {
            let n = seen.get(text).copied().unwrap_or(0);
            assert_eq!(n, 1, "a text of {docs} document(s) was embedded {n} times: {text:?}");
        }
    }
}
