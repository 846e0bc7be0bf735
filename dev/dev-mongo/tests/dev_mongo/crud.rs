//! CRUD, the query language, projections, sorting, cursors and aggregation.

use super::{code_of, Fixture};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::options::Hint;

async fn ids(cursor: mongodb::Cursor<Document>) -> Vec<i32> {
    let docs: Vec<Document> = cursor.try_collect().await.expect("cursor");
    docs.iter().map(|d| d.get_i32("_id").expect("_id")).collect()
}

#[tokio::test]
async fn handshake_and_server_commands() {
    let f = Fixture::new().await;
    let admin = f.client.database("admin");
    assert_eq!(admin.run_command(doc! {"ping": 1}).await.unwrap().get_f64("ok").unwrap(), 1.0);
    let hello = admin.run_command(doc! {"hello": 1}).await.unwrap();
    assert_eq!(hello.get_str("setName").unwrap(), "rs0");
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    assert_eq!(hello.get_i32("maxWireVersion").unwrap(), 21);
    let info = admin.run_command(doc! {"buildInfo": 1}).await.unwrap();
    assert_eq!(info.get_str("version").unwrap(), "7.0.0");
    let err = admin.run_command(doc! {"frobnicate": 1}).await.unwrap_err();
    assert_eq!(code_of(&err), Some(59));
    f.coll("a").insert_one(doc! {"x": 1}).await.unwrap();
    assert_eq!(f.client.list_database_names().await.unwrap(), vec!["twitter_data".to_string()]);
    assert_eq!(f.client.database("twitter_data").list_collection_names().await.unwrap(), vec!["a".to_string()]);
}

#[tokio::test]
async fn insert_find_update_delete() {
    let f = Fixture::new().await;
    let c = f.coll("tweets");
    let r = c.insert_one(doc! {"text": "hello"}).await.unwrap();
    assert!(matches!(r.inserted_id, Bson::ObjectId(_)));
    let dup = c.insert_one(doc! {"_id": r.inserted_id.clone(), "text": "again"}).await.unwrap_err();
    assert_eq!(code_of(&dup), Some(11000));
    c.insert_many((0..10).map(|i| doc! {"_id": i, "n": i, "lang": if i % 2 == 0 {"en"} else {"es"}})).await.unwrap();

    let u = c.update_many(doc! {"lang": "en"}, doc! {"$set": {"seen": true}, "$inc": {"n": 100}}).await.unwrap();
    assert_eq!((u.matched_count, u.modified_count), (5, 5));
    let u = c.update_one(doc! {"_id": 1}, doc! {"$unset": {"lang": ""}}).await.unwrap();
    assert_eq!(u.modified_count, 1);
    let u = c.update_one(doc! {"_id": 1}, doc! {"$unset": {"lang": ""}}).await.unwrap();
    assert_eq!((u.matched_count, u.modified_count), (1, 0));
    let u = c.update_one(doc! {"_id": 42, "lang": "fr"}, doc! {"$set": {"n": 1}}).upsert(true).await.unwrap();
    assert_eq!(u.upserted_id, Some(Bson::Int32(42)));
    assert_eq!(c.find_one(doc! {"_id": 42}).await.unwrap().unwrap(), doc! {"_id": 42, "lang": "fr", "n": 1});
    let r = c.replace_one(doc! {"_id": 3}, doc! {"replaced": true}).await.unwrap();
    assert_eq!(r.modified_count, 1);
    assert_eq!(c.find_one(doc! {"_id": 3}).await.unwrap().unwrap(), doc! {"_id": 3, "replaced": true});
    let bad = c.update_one(doc! {"_id": 4}, doc! {"$set": {"_id": 5}}).await.unwrap_err();
    assert_eq!(code_of(&bad), Some(66));

    assert_eq!(
        c.find_one(doc! {"_id": 0}).await.unwrap().unwrap(),
        doc! {"_id": 0, "n": 100, "lang": "en", "seen": true}
    );
    let d = c.delete_many(doc! {"seen": true}).await.unwrap();
    assert_eq!(d.deleted_count, 5);
    let d = c.delete_one(doc! {"_id": {"$gte": 0}}).await.unwrap();
    assert_eq!(d.deleted_count, 1);
    assert_eq!(c.count_documents(doc! {}).await.unwrap(), 6);
    assert_eq!(c.estimated_document_count().await.unwrap(), 6);
}

#[tokio::test]
async fn query_language_semantics() {
    let f = Fixture::new().await;
    let c = f.coll("q");
    c.insert_many(vec![
        doc! {"_id": 1, "a": Bson::Null, "n": 1, "tags": ["x", "y"], "u": {"lang": "en"}},
        doc! {"_id": 2, "n": 2.5, "tags": [], "u": {"lang": "es"}},
        doc! {"_id": 3, "a": 1, "n": 3_i64, "tags": "x"},
        doc! {"_id": 4, "a": "s", "n": "4", "u": [{"lang": "en"}, {"lang": "de"}]},
    ])
    .await
    .unwrap();
    let q = |filter: Document| {
        let c = c.clone();
        async move { ids(c.find(filter).sort(doc! {"_id": 1}).await.unwrap()).await }
    };
    assert_eq!(q(doc! {"a": null}).await, vec![1, 2]);
    assert_eq!(q(doc! {"a": {"$exists": true}}).await, vec![1, 3, 4]);
    assert_eq!(q(doc! {"a": {"$ne": null}}).await, vec![3, 4]);
    assert_eq!(q(doc! {"n": {"$gt": 1}}).await, vec![2, 3]);
    assert_eq!(q(doc! {"n": {"$gte": 1, "$lt": 3}}).await, vec![1, 2]);
    assert_eq!(q(doc! {"n": {"$lte": "4"}}).await, vec![4]);
    assert_eq!(q(doc! {"n": {"$in": [1, 3]}}).await, vec![1, 3]);
    assert_eq!(q(doc! {"n": {"$nin": [1, 3]}}).await, vec![2, 4]);
    assert_eq!(q(doc! {"tags": "x"}).await, vec![1, 3]);
    assert_eq!(q(doc! {"tags": ["x", "y"]}).await, vec![1]);
    assert_eq!(q(doc! {"u.lang": "en"}).await, vec![1, 4]);
    assert_eq!(q(doc! {"n": {"$not": {"$gt": 1}}}).await, vec![1, 4]);
    assert_eq!(q(doc! {"$or": [{"_id": 1}, {"a": "s"}]}).await, vec![1, 4]);
    assert_eq!(q(doc! {"$and": [{"n": {"$exists": true}}, {"a": {"$in": [null, 1]}}]}).await, vec![1, 2, 3]);
    assert_eq!(q(doc! {"n": {"$type": "number"}, "a": {"$type": "null"}}).await, vec![1]);
    let err = c.find(doc! {"a": {"$bogus": 1}}).await.unwrap_err();
    assert_eq!(code_of(&err), Some(2));
}

#[tokio::test]
async fn sort_projection_limit_skip_and_cursors() {
    let f = Fixture::new().await;
    let c = f.coll("s");
    c.insert_many((0..1000).map(|i| doc! {"_id": i, "k": (i * 7) % 10, "text": format!("t{i}"), "x": {"y": i}}))
        .await
        .unwrap();
    // Many getMores of 37 documents each, in _id order.
    let all = ids(c.find(doc! {}).batch_size(37).await.unwrap()).await;
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    let desc = ids(c.find(doc! {"_id": {"$lt": 5}}).sort(doc! {"_id": -1}).await.unwrap()).await;
    assert_eq!(desc, vec![4, 3, 2, 1, 0]);
    // An in-memory sort on a non-indexed field, then by _id.
    let by_k = ids(c.find(doc! {}).sort(doc! {"k": -1, "_id": 1}).limit(3).await.unwrap()).await;
    assert_eq!(by_k, vec![7, 17, 27]);
    let page = ids(c.find(doc! {}).skip(990).batch_size(4).await.unwrap()).await;
    assert_eq!(page, (990..1000).collect::<Vec<_>>());
    let limited = ids(c.find(doc! {}).limit(250).batch_size(100).await.unwrap()).await;
    assert_eq!(limited.len(), 250);
    let p: Vec<Document> =
        c.find(doc! {"_id": 5}).projection(doc! {"text": 1, "x.y": 1}).await.unwrap().try_collect().await.unwrap();
    assert_eq!(p, vec![doc! {"_id": 5, "text": "t5", "x": {"y": 5}}]);
    let p: Vec<Document> =
        c.find(doc! {"_id": 5}).projection(doc! {"_id": 0, "x": 0}).await.unwrap().try_collect().await.unwrap();
    assert_eq!(p, vec![doc! {"k": 5, "text": "t5"}]);
    assert_eq!(c.count_documents(doc! {"k": 3}).await.unwrap(), 100);
    let mut langs = c.distinct("k", doc! {"_id": {"$lt": 20}}).await.unwrap();
    langs.sort_by_key(|b| b.as_i32());
    assert_eq!(langs.len(), 10);
    // Dropping a cursor early kills it on the server.
    {
        let mut cur = c.find(doc! {}).batch_size(10).await.unwrap();
        cur.advance().await.unwrap();
    }
    // The driver sends killCursors from a task of its own: wait for it, boundedly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = f.client.database("admin").run_command(doc! {"serverStatus": 1}).await.unwrap();
        let metrics = status.get_document("metrics").unwrap();
        let open = metrics.get_document("cursor").unwrap().get_document("open").unwrap().get_i64("total").unwrap();
        if open == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open} cursors still open after the drop");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = Hint::Name(String::new());
}

#[tokio::test]
async fn aggregation_stages() {
    let f = Fixture::new().await;
    let c = f.coll("agg");
    let langs = ["en", "es", "ja"];
    c.insert_many((0..100).map(|i: i32| doc! {"_id": i, "lang": langs[i as usize % 3], "len": i})).await.unwrap();
    let groups: Vec<Document> = c
        .aggregate(vec![
            doc! {"$match": {"len": {"$gte": 10}}},
            doc! {"$group": {"_id": "$lang", "n": {"$sum": 1}, "total": {"$sum": "$len"}, "max": {"$max": "$len"}}},
            doc! {"$sort": {"n": -1, "_id": 1}},
            doc! {"$skip": 1},
            doc! {"$limit": 1},
            doc! {"$project": {"lang": "$_id", "n": 1, "_id": 0}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    // 90 docs with len >= 10: en 30 (ids 12..99 step 3) ... ja 30, es 30: sorted by n then _id.
    assert_eq!(groups, vec![doc! {"n": 30, "lang": "es"}]);
    let counted: Vec<Document> = c
        .aggregate(vec![doc! {"$match": {"lang": "ja"}}, doc! {"$count": "n"}])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(counted, vec![doc! {"n": 33}]);
    let err = c.aggregate(vec![doc! {"$lookup": {}}]).await.unwrap_err();
    assert_eq!(code_of(&err), Some(40324));
    let _ = ObjectId::new();
}

/// The pipeline marks (and re-marks, from Int64 output columns) Int32 `_id`s with Int64 values:
/// numeric `_id`s match by value across Int32, Int64 and Double, as in mongod.
#[tokio::test]
async fn numeric_ids_match_by_value_across_types() {
    let f = Fixture::new().await;
    let c = f.coll("numeric_ids");
    c.insert_many(vec![
        doc! {"_id": 5i32, "t": "int"},
        doc! {"_id": 7i64, "t": "long"},
        doc! {"_id": 9.0f64, "t": "dbl"},
    ])
    .await
    .unwrap();
    let r = c.update_many(doc! {"_id": {"$in": [5i64, 7i32, 9i64]}}, doc! {"$set": {"m": true}}).await.unwrap();
    assert_eq!(r.matched_count, 3);
    assert_eq!(
        c.find_one(doc! {"_id": 5i64}).await.unwrap().and_then(|d| d.get_str("t").ok().map(str::to_string)),
        Some("int".into())
    );
    assert_eq!(c.find_one(doc! {"_id": 7.0f64}).await.unwrap().map(|d| d.get_bool("m").unwrap()), Some(true));
    let r = c.update_one(doc! {"_id": 9i32}, doc! {"$set": {"n": 1}}).await.unwrap();
    assert_eq!(r.matched_count, 1);
    // One key for the unique `_id` index: 5 and 5L are the same `_id`.
    let dup = c.insert_one(doc! {"_id": 5i64}).await.unwrap_err();
    assert_eq!(code_of(&dup), Some(11000));
    // The edges the id type is chosen from: numbers sort by value across types.
    let first = c.find_one(doc! {}).sort(doc! {"_id": 1}).await.unwrap().unwrap();
    let last = c.find_one(doc! {}).sort(doc! {"_id": -1}).await.unwrap().unwrap();
    assert_eq!((first.get_str("t").unwrap(), last.get_str("t").unwrap()), ("int", "dbl"));
}
