//! Indexes: the project's work-queue (partial) and monitor (sparse) indexes, hints, unique,
//! listing and dropping, and proof from `serverStatus` that queries use them instead of
//! scanning the collection.

use super::{code_of, Fixture};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{Hint, IndexOptions};
use mongodb::IndexModel;

fn work_queue_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! {"lang": 1, "classified": 1, "_id": 1})
        .options(
            IndexOptions::builder()
                .name("embedding_work_queue".to_string())
                .partial_filter_expression(doc! {"retweeted": null, "gemma_embedded_768": null})
                .build(),
        )
        .build()
}

fn monitor_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! {"gemma_embedded_768": 1})
        .options(IndexOptions::builder().name("processed_monitor_idx".to_string()).sparse(true).build())
        .build()
}

#[tokio::test]
async fn work_queue_and_monitor_indexes_avoid_collection_scans() {
    let f = Fixture::new().await;
    let c = f.coll("tweets");
    // 20,000 tweets: every 20th unprocessed and not a retweet, in two languages.
    let docs: Vec<Document> = (0..20_000)
        .map(|i| {
            let mut d = doc! {"_id": i, "lang": if i % 2 == 0 {"en"} else {"es"}, "classified": true, "text": format!("tweet {i}")};
            if i % 20 >= 2 {
                d.insert("gemma_embedded_768", true);
            }
            if i % 40 == 1 {
                d.insert("retweeted", true);
            }
            d
        })
        .collect();
    c.insert_many(docs).await.unwrap();
    c.create_indexes(vec![work_queue_index(), monitor_index()]).await.unwrap();
    // Idempotent, as `tweet-embed indexes` needs.
    c.create_index(work_queue_index()).await.unwrap();
    let names = c.list_index_names().await.unwrap();
    assert_eq!(names, vec!["_id_", "embedding_work_queue", "processed_monitor_idx"]);
    let specs: Vec<mongodb::IndexModel> = c.list_indexes().await.unwrap().try_collect().await.unwrap();
    let wq = specs[1].options.as_ref().unwrap();
    assert_eq!(wq.partial_filter_expression, Some(doc! {"retweeted": null, "gemma_embedded_768": null}));
    assert_eq!(specs[2].options.as_ref().unwrap().sparse, Some(true));

    // Work queue: i%20 in {0,1} and not (i%40==1): en → i%20==0 (1000), es → i%40==21 (500).
    let before = f.scanned().await;
    let filter =
        doc! {"lang": "en", "classified": true, "retweeted": null, "gemma_embedded_768": null, "_id": {"$gt": 10_000}};
    let found: Vec<Document> = c
        .find(filter.clone())
        .sort(doc! {"_id": 1})
        .hint(Hint::Name("embedding_work_queue".into()))
        .batch_size(100)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let found_ids: Vec<i32> = found.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    let expect: Vec<i32> = (10_001..20_000).filter(|i| i % 20 == 0).collect();
    assert_eq!(found_ids, expect);
    let after = f.scanned().await;
    assert!(after.1 - before.1 <= expect.len() as i64 + 2, "documents examined: {:?} -> {:?}", before, after);

    // Counts on both indexes, hinted, examine no documents at all.
    let before = f.scanned().await;
    let remaining = c
        .count_documents(doc! {"retweeted": null, "gemma_embedded_768": null})
        .hint(Hint::Name("embedding_work_queue".into()))
        .await
        .unwrap();
    assert_eq!(remaining, 1500);
    let processed = c
        .count_documents(doc! {"gemma_embedded_768": {"$exists": true}})
        .hint(Hint::Name("processed_monitor_idx".into()))
        .await
        .unwrap();
    assert_eq!(processed, 18_000);
    let after = f.scanned().await;
    assert_eq!(after.1, before.1, "a hinted count fetched documents");
    assert!(after.0 - before.0 <= 1500 + 18_000 + 4);

    // The work-queue partitions via aggregate and distinct.
    let parts: Vec<Document> = c
        .aggregate(vec![
            doc! {"$match": {"retweeted": null, "gemma_embedded_768": null}},
            doc! {"$group": {"_id": {"lang": "$lang", "classified": "$classified"}, "n": {"$sum": 1}}},
            doc! {"$sort": {"_id.lang": 1}},
        ])
        .hint(Hint::Name("embedding_work_queue".into()))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        parts,
        vec![
            doc! {"_id": {"lang": "en", "classified": true}, "n": 1000},
            doc! {"_id": {"lang": "es", "classified": true}, "n": 500}
        ]
    );
    let langs = c.distinct("lang", doc! {"retweeted": null, "gemma_embedded_768": null}).await.unwrap();
    assert_eq!(langs, vec![Bson::String("en".into()), Bson::String("es".into())]);

    // Marking removes a document from the work queue index immediately.
    c.update_many(doc! {"_id": {"$in": [0, 20, 40]}}, doc! {"$set": {"gemma_embedded_768": true}}).await.unwrap();
    let remaining = c
        .count_documents(doc! {"retweeted": null, "gemma_embedded_768": null})
        .hint(Hint::Name("embedding_work_queue".into()))
        .await
        .unwrap();
    assert_eq!(remaining, 1497);
}

#[tokio::test]
async fn hints_unique_and_dropping() {
    let f = Fixture::new().await;
    let c = f.coll("ix");
    c.insert_many((0..50).map(|i| doc! {"_id": i, "k": i % 5, "u": i})).await.unwrap();
    let err = c.find(doc! {}).hint(Hint::Name("nope".into())).await.unwrap_err();
    assert_eq!(code_of(&err), Some(2));
    let err = c.count_documents(doc! {}).hint(Hint::Name("nope".into())).await.unwrap_err();
    assert_eq!(code_of(&err), Some(2));
    c.create_index(
        IndexModel::builder().keys(doc! {"u": 1}).options(IndexOptions::builder().unique(true).build()).build(),
    )
    .await
    .unwrap();
    let dup = c.insert_one(doc! {"u": 3}).await.unwrap_err();
    assert_eq!(code_of(&dup), Some(11000));
    c.create_index(IndexModel::builder().keys(doc! {"k": -1, "_id": 1}).build()).await.unwrap();
    let got: Vec<Document> = c
        .find(doc! {"k": {"$in": [1, 3]}})
        .hint(Hint::Keys(doc! {"k": -1, "_id": 1}))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ks: Vec<i32> = got.iter().map(|d| d.get_i32("k").unwrap()).collect();
    assert_eq!(ks.len(), 20);
    assert!(ks.windows(2).all(|w| w[0] >= w[1]), "descending index order: {ks:?}");
    // A unique index cannot be built over duplicates.
    let err = c
        .create_index(
            IndexModel::builder().keys(doc! {"k": 1}).options(IndexOptions::builder().unique(true).build()).build(),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), Some(11000));
    c.drop_index("u_1").await.unwrap();
    c.insert_one(doc! {"u": 3}).await.unwrap();
    let err = c.drop_index("u_1").await.unwrap_err();
    assert_eq!(code_of(&err), Some(27));
    c.drop().await.unwrap();
    assert!(f.client.database("twitter_data").list_collection_names().await.unwrap().is_empty());
}
