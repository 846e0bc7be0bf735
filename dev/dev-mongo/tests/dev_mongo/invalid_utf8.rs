//! Strings that are not valid UTF-8, as mongod keeps them: a raw insert is stored and returned
//! byte-for-byte by find, getMore and change events, survives the marker's `$set`/`$unset`, a
//! snapshot holding one loads, and a document that is not BSON at all is refused with an error
//! naming it (the connection stays usable).

use super::{code_of, Fixture};
use dev_mongo::DevMongoConfig;
use mongodb::bson::{doc, RawDocumentBuf};
use mongodb::Collection;
use std::time::Duration;

/// A value of a hand-made BSON element.
enum V<'a> {
    Int(i32),
    Str(&'a [u8]),
    Bool(bool),
}

/// A document built byte by byte, so strings can hold any bytes.
fn raw(fields: &[(&str, V)]) -> Vec<u8> {
    let mut d = vec![0; 4];
    for (k, v) in fields {
        let (kind, bytes) = match v {
            V::Int(i) => (0x10, i.to_le_bytes().to_vec()),
            V::Bool(b) => (0x08, vec![*b as u8]),
            V::Str(s) => {
                let mut b = ((s.len() + 1) as i32).to_le_bytes().to_vec();
                b.extend_from_slice(s);
                b.push(0);
                (0x02, b)
            }
        };
        d.push(kind);
        d.extend_from_slice(k.as_bytes());
        d.push(0);
        d.extend_from_slice(&bytes);
    }
    d.push(0);
    let n = d.len() as i32;
    d[..4].copy_from_slice(&n.to_le_bytes());
    d
}

const BAD: &[u8] = b"caf\xe9 \xff\xfe tweet";

fn raw_coll(f: &Fixture) -> Collection<RawDocumentBuf> {
    f.client.database("twitter_data").collection("tweets")
}

/// Every document of the collection in `_id` order, as the bytes the server sent.
async fn stored(c: &Collection<RawDocumentBuf>) -> Vec<Vec<u8>> {
    let mut cursor = c.find(doc! {}).sort(doc! {"_id": 1}).batch_size(1).await.unwrap();
    let mut out = Vec::new();
    while cursor.advance().await.unwrap() {
        out.push(cursor.current().as_bytes().to_vec());
    }
    out
}

#[tokio::test]
async fn raw_inserts_come_back_byte_for_byte_through_find_updates_and_change_events() {
    let f = Fixture::new().await;
    let c = raw_coll(&f);
    let mut stream = c.watch().await.unwrap().with_type::<RawDocumentBuf>();
    let bad_text = raw(&[("_id", V::Int(2)), ("text", V::Str(BAD)), ("lang", V::Str(b"en")), ("tmp", V::Int(1))]);
    let bad_lang = raw(&[("_id", V::Int(3)), ("text", V::Str(b"fine")), ("lang", V::Str(b"e\xffn"))]);
    let good = raw(&[("_id", V::Int(1)), ("text", V::Str(b"hello")), ("lang", V::Str(b"en"))]);
    for d in [&good, &bad_text, &bad_lang] {
        c.insert_one(RawDocumentBuf::from_bytes(d.clone()).unwrap()).await.unwrap();
    }
    // find (first batch) and getMore (batch size 1) return the stored bytes.
    assert_eq!(stored(&c).await, vec![good.clone(), bad_text.clone(), bad_lang.clone()]);
    // The change stream's fullDocument too.
    for want in [&good, &bad_text, &bad_lang] {
        let event = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(e) = stream.next_if_any().await.unwrap() {
                    return e;
                }
            }
        })
        .await
        .expect("an event");
        let full = event.get_document("fullDocument").expect("fullDocument");
        assert_eq!(full.as_bytes(), want.as_slice());
    }
    // A projection leaving the bad field out returns a document any client can read.
    let ids = c.clone_with_type::<mongodb::bson::Document>();
    let only_id = ids.find_one(doc! {"_id": 2}).projection(doc! {"_id": 1}).await.unwrap();
    assert_eq!(only_id, Some(doc! {"_id": 2}));
    // Queries on other fields see it as any other document.
    let by_lang =
        c.clone_with_type::<mongodb::bson::Document>().count_documents(doc! {"lang": {"$ne": "en"}}).await.unwrap();
    assert_eq!(by_lang, 1);
    // The marker's update keeps the untouched field's bytes.
    let r = c
        .update_many(doc! {"_id": {"$in": [2, 3]}}, doc! {"$set": {"gemma_embedded_768": false}, "$unset": {"tmp": ""}})
        .await
        .unwrap();
    assert_eq!(r.modified_count, 2);
    let marked_text = raw(&[
        ("_id", V::Int(2)),
        ("text", V::Str(BAD)),
        ("lang", V::Str(b"en")),
        ("gemma_embedded_768", V::Bool(false)),
    ]);
    let marked_lang = raw(&[
        ("_id", V::Int(3)),
        ("text", V::Str(b"fine")),
        ("lang", V::Str(b"e\xffn")),
        ("gemma_embedded_768", V::Bool(false)),
    ]);
    assert_eq!(stored(&c).await, vec![good, marked_text, marked_lang]);
}

#[tokio::test]
async fn a_document_that_is_not_bson_is_refused_by_name_and_the_connection_lives_on() {
    let f = Fixture::new().await;
    let c = raw_coll(&f);
    let mut broken = raw(&[("_id", V::Int(42)), ("text", V::Str(b"abc"))]);
    // The string's terminating NUL becomes a letter: framed, but not BSON.
    let at = broken.len() - 2;
    broken[at] = b'x';
    let err = c.insert_one(RawDocumentBuf::from_bytes(broken).unwrap()).await.unwrap_err();
    assert_eq!(code_of(&err), Some(22), "{err}");
    assert!(err.to_string().contains("_id 42"), "{err}");
    c.insert_one(RawDocumentBuf::from_bytes(raw(&[("_id", V::Int(1))])).unwrap()).await.unwrap();
    assert_eq!(stored(&c).await.len(), 1);
}

#[tokio::test]
async fn a_snapshot_holding_invalid_utf8_loads_and_saves_it_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.bson");
    let config = DevMongoConfig { data: Some(path.clone()), ..DevMongoConfig::default() };
    let placeholder: &[u8] = b"PATCH-ME-HERE";
    let patched: &[u8] = b"caf\xe9 \xff\xfe tweet"; // same length as the placeholder
    assert_eq!(placeholder.len(), patched.len());
    {
        let f = Fixture::with(config.clone()).await;
        let d = raw(&[("_id", V::Int(1)), ("text", V::Str(placeholder))]);
        raw_coll(&f).insert_one(RawDocumentBuf::from_bytes(d).unwrap()).await.unwrap();
        f.server.shutdown().unwrap();
    }
    // Patch the snapshot as an old driver would have written it: the document and its oplog
    // entry now hold bytes that are not UTF-8.
    let bytes = std::fs::read(&path).unwrap();
    let at: Vec<usize> =
        (0..bytes.len() - placeholder.len()).filter(|&i| bytes[i..].starts_with(placeholder)).collect();
    assert_eq!(at.len(), 2, "the document and its oplog entry");
    let mut bytes = bytes;
    for i in at {
        bytes[i..i + patched.len()].copy_from_slice(patched);
    }
    std::fs::write(&path, &bytes).unwrap();
    {
        let f = Fixture::with(config.clone()).await;
        assert_eq!(stored(&raw_coll(&f)).await, vec![raw(&[("_id", V::Int(1)), ("text", V::Str(patched))])]);
        f.server.shutdown().unwrap();
    }
    // Saved again with the same bytes.
    let saved = std::fs::read(&path).unwrap();
    assert_eq!(saved.windows(patched.len()).filter(|w| *w == patched).count(), 2);

    // A snapshot with a document that is not BSON fails to load, naming it.
    let mut broken = saved.clone();
    let i = broken.windows(patched.len()).position(|w| w == patched).unwrap();
    broken[i + patched.len()] = b'x'; // the string's terminating NUL
    std::fs::write(&path, &broken).unwrap();
    let err = dev_mongo::DevMongo::start(config).err().expect("refuses to load");
    let msg = format!("{err:#}");
    assert!(msg.contains("twitter_data.tweets") && msg.contains("_id 1"), "{msg}");
}
