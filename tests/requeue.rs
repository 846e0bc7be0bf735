//! `tweet-embed requeue`: a rejection a setting caused is not forever. A backfill with
//! `--api openai` against a server without auto-truncate rejects the over-long tweets (TEI's
//! "`inputs` must have less than 64 tokens": that route cannot ask to truncate); `requeue` clears
//! exactly those marks (dry run first, then for real, then again to show it is idempotent), and a
//! backfill on the native route, which truncates, embeds them.

use dev_tei::{DevTei, SimConfig};
use mongodb::bson::{doc, Document};
use std::process::Command;
use test_support::{create_indexes, Stack};
use tweet_embed_operators::run::Engine;
use tweet_embed_operators::tei::Api;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

fn requeue(stack: &Stack, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["requeue", "--mongo-uri", &stack.mongo.uri()])
        .args(extra)
        .output()
        .expect("run requeue");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn rejections_a_setting_caused_are_requeued_and_then_embedded() {
    let mut stack = Stack::start(1, Default::default());
    // A server that does not truncate on its own: the OpenAI route then refuses long inputs.
    let strict = SimConfig { gpus: 2, instant: true, auto_truncate: false, max_input_length: 64, ..Default::default() };
    stack.tei = Some(stack.rt.block_on(DevTei::start(strict)).expect("dev-tei"));
    let long = "many words in this tweet ".repeat(40);
    stack.mongo.with_store(|s| {
        for i in 0..60i64 {
            let text = if i % 3 == 0 { format!("{long} #{i}") } else { format!("short tweet {i}") };
            s.insert("twitter_data", "tweets", doc! {"_id": i, "lang": "en", "classified": true, "text": text})
                .expect("insert");
        }
        // A rejection for another reason, which the pattern below must leave alone.
        let other = doc! {"_id": 100i64, "lang": "en", "classified": true, "text": "x", "gemma_embedded_768": false,
        "gemma_embedded_768_error": "empty text"};
        s.insert("twitter_data", "tweets", other).expect("insert");
    });
    stack.rt.block_on(create_indexes(&stack.mongo)).expect("indexes");
    let dir = tempfile::tempdir().expect("tempdir");

    let mut first = stack.args(&dir.path().join("openai"), 2);
    first.tei.api = Api::OpenAi;
    let summary = Engine::connect(first).and_then(Engine::backfill).expect("first backfill");
    assert_eq!((summary.embedded, summary.rejected), (40, 20), "the 20 long tweets are rejected");
    let coll = stack.coll();
    let reasons: Vec<String> = stack.rt.block_on(async {
        let mut c = coll.find(doc! {"gemma_embedded_768": false, "_id": {"$lt": 100}}).await.expect("find");
        let mut out = Vec::new();
        while c.advance().await.expect("next") {
            let d: Document = c.deserialize_current().expect("doc");
            out.push(d.get_str("gemma_embedded_768_error").expect("reason").to_string());
        }
        out
    });
    assert_eq!(reasons.len(), 20);
    assert!(reasons.iter().all(|r| r.contains("must have less than 64 tokens")), "{reasons:?}");

    let too_long = r"less than \d+ tokens";
    let dry = requeue(&stack, &["--reason", too_long, "--dry-run"]);
    assert!(dry.contains(&format!("would requeue 20 rejected documents matching `{too_long}`")), "{dry}");
    let rejected = |stack: &Stack| {
        stack.rt.block_on(async { coll.count_documents(doc! {"gemma_embedded_768": false}).await }).expect("count")
    };
    assert_eq!(rejected(&stack), 21, "a dry run changes nothing");
    // Rejected before the cut-off: not this time.
    let later = requeue(&stack, &["--reason", too_long, "--since", "2999-01-01"]);
    assert!(later.contains("requeued 0 rejected documents"), "{later}");
    let done = requeue(&stack, &["--reason", too_long]);
    assert!(done.contains("requeued 20 rejected documents"), "{done}");
    assert_eq!(rejected(&stack), 1, "only the other reason stays rejected");
    let again = requeue(&stack, &["--reason", too_long]);
    assert!(again.contains("requeued 0 rejected documents"), "idempotent: {again}");

    // The native route truncates: the requeued tweets are embedded now, and only they.
    let second = stack.args(&dir.path().join("native"), 2);
    let summary = Engine::connect(second).and_then(Engine::backfill).expect("second backfill");
    assert_eq!((summary.embedded, summary.rejected), (20, 0));
    let embedded =
        stack.rt.block_on(async { coll.count_documents(doc! {"gemma_embedded_768": true}).await }).expect("count");
    assert_eq!(embedded, 60);
    assert_eq!(rejected(&stack), 1);
}
