//! Tweets stored with strings that are not valid UTF-8 (as old drivers and scrapers wrote
//! them), inserted byte for byte through the driver, and the outcome a run must leave for them:
//! the one whose text is not UTF-8 rejected with `text is not valid UTF-8` and marked `false`,
//! the one whose `lang` is not UTF-8 embedded; the stored bytes untouched by the marker.

use crate::expect::read_rows;
use crate::synth::raw_tweet;
use crate::Stack;
use mongodb::bson::serde_helpers::Utf8LossyDeserialization;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use tweet_embed_operators::mongo::document_id::DocId;

/// The stored bytes of the text that is not UTF-8.
pub const BAD_TEXT: &[u8] = b"caf\xe9 au lait \xff\xfe";

/// Inserts, through the driver and byte for byte, a tweet whose text is not UTF-8 and one whose
/// `lang` is not.
pub fn insert_bad_tweets(stack: &Stack) {
    let raw = stack.coll().clone_with_type::<RawDocumentBuf>();
    stack.rt.block_on(async {
        raw.insert_one(raw_tweet("bad-text", b"en", BAD_TEXT)).await.expect("insert bad text");
        raw.insert_one(raw_tweet("bad-lang", b"e\xffn", b"a tweet whose lang is not UTF-8")).await.expect("insert");
    });
}

/// The outcome in Mongo and in the output of the two tweets [`insert_bad_tweets`] added.
pub fn check_bad_tweets(stack: &Stack, out: &std::path::Path) {
    let rows = read_rows(out);
    let (text_id, lang_id) = (DocId::of(&"bad-text".into()).into_string(), DocId::of(&"bad-lang".into()).into_string());
    assert_eq!(rows.rejects.get(&text_id).map(String::as_str), Some("text is not valid UTF-8"));
    assert!(!rows.vectors.contains_key(&text_id));
    assert!(rows.vectors.contains_key(&lang_id), "the tweet whose lang is not UTF-8 is embedded");
    assert!(!rows.rejects.contains_key(&lang_id));
    let raw = stack.coll().clone_with_type::<RawDocumentBuf>();
    let stored = |id: &str| {
        let d = stack.rt.block_on(async { raw.find_one(doc! {"_id": id}).await }).expect("find").expect("stored");
        let lossy: Document =
            mongodb::bson::from_slice::<Utf8LossyDeserialization<Document>>(d.as_bytes()).expect("lossy").0;
        (d.as_bytes().to_vec(), lossy)
    };
    let (bytes, d) = stored("bad-text");
    assert_eq!(d.get_bool("gemma_embedded_768").ok(), Some(false));
    assert_eq!(d.get_str("gemma_embedded_768_error").ok(), Some("text is not valid UTF-8"));
    assert!(bytes.windows(BAD_TEXT.len()).any(|w| w == BAD_TEXT), "the marker kept the stored bytes");
    let (bytes, d) = stored("bad-lang");
    assert_eq!(d.get_bool("gemma_embedded_768").ok(), Some(true));
    assert!(bytes.windows(3).any(|w| w == b"e\xffn"), "the marker kept the stored bytes");
}
