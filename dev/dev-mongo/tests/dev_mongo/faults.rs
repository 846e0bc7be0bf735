//! Fault hooks (failed commands, with labels; mongod's `configureFailPoint`) and `--data`
//! persistence across restarts, resume tokens included.

use super::{code_of, Fixture};
use dev_mongo::DevMongoConfig;
use futures_util::StreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{Hint, IndexOptions};
use mongodb::IndexModel;
use std::time::Duration;

#[tokio::test]
async fn fail_next_commands_with_codes_and_labels() {
    let f = Fixture::new().await;
    let c = f.coll("f");
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    f.server.fail_next(2, 2, &[]);
    assert_eq!(code_of(&c.find_one(doc! {}).await.unwrap_err()), Some(2));
    assert_eq!(code_of(&c.count_documents(doc! {}).await.unwrap_err()), Some(2));
    assert!(c.find_one(doc! {}).await.unwrap().is_some());
    // A retryable error on a read is retried once by the driver: the read succeeds.
    f.server.fail_next(1, 91, &["RetryableWriteError"]);
    assert!(c.find_one(doc! {}).await.unwrap().is_some());
    // Through mongod's own fail point command, limited to one command name.
    f.client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "errorCode": 11602, "errorLabels": ["SomeLabel"]},
        })
        .await
        .unwrap();
    assert!(c.find_one(doc! {}).await.unwrap().is_some());
    let err = c.insert_one(doc! {"_id": 2}).await.unwrap_err();
    assert_eq!(code_of(&err), Some(11602));
    assert!(err.contains_label("SomeLabel"));
    c.insert_one(doc! {"_id": 2}).await.unwrap();
    assert_eq!(c.count_documents(doc! {}).await.unwrap(), 2);
}

#[tokio::test]
async fn data_file_survives_restart_with_indexes_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bson");
    let config = DevMongoConfig { data: Some(path.clone()), ..DevMongoConfig::default() };
    let token;
    {
        let f = Fixture::with(config.clone()).await;
        let c = f.coll("tweets");
        c.create_index(
            IndexModel::builder()
                .keys(doc! {"lang": 1, "_id": 1})
                .options(
                    IndexOptions::builder()
                        .name("wq".to_string())
                        .partial_filter_expression(doc! {"done": null})
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
        let mut s = c.watch().await.unwrap();
        c.insert_many((0..1000).map(|i| doc! {"_id": i, "lang": "en", "text": format!("t{i}")})).await.unwrap();
        for _ in 0..10 {
            s.next().await.unwrap().unwrap();
        }
        token = s.resume_token().unwrap();
        f.server.shutdown().unwrap();
    }
    assert!(path.exists());
    let f = Fixture::with(config).await;
    let c = f.coll("tweets");
    assert_eq!(c.count_documents(doc! {"done": null, "lang": "en"}).hint(Hint::Name("wq".into())).await.unwrap(), 1000);
    // The token from before the restart resumes exactly after the 10th event.
    let mut s = c.watch().resume_after(token).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), s.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(e.document_key.unwrap().get("_id"), Some(&Bson::Int32(10)));
    let d: Option<Document> = c.find_one(doc! {"_id": 999}).await.unwrap();
    assert_eq!(d.unwrap().get_str("text").unwrap(), "t999");
}
