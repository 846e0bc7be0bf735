//! One owner of request batching: dedup → embed against the simulator with a real
//! `tokenizer.json`, over real HTTP. Each distinct text is tokenized once, whatever how many
//! documents carry it and in how many epochs it recurs; every document still gets its row. And
//! texts are cut in length order, so a padded server's batches (TEI's EmbeddingGemma) pad little.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dev_tei::{DevTei, SimConfig};
use timely::dataflow::operators::{Capture, Concat, Input, OkErr, Probe};
use tweet_embed_operators::dataflow::dedup::Dedup;
use tweet_embed_operators::dataflow::embed::{Embed, Embedder};
use tweet_embed_operators::dataflow::record::{Candidate, DocMeta, Origin, TextJob, Work, Written};
use tweet_embed_operators::run::Engine;
use tweet_embed_operators::tei::{EndpointPool, PoolConfig, RequestOrder};
use tweet_embed_operators::timely;

#[test]
fn each_distinct_text_is_tokenized_once() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = test_support::word_tokenizer(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sim = SimConfig { gpus: 2, instant: true, tokenizer: Some(tokenizer.clone()), ..SimConfig::default() };
    let tei = rt.block_on(DevTei::start(sim)).unwrap();
    let config = PoolConfig { tokenizer: Some(tokenizer), batch_size: Some(8), ..PoolConfig::new(tei.urls()) };
    let pool = rt.block_on(EndpointPool::connect(config)).unwrap();
    assert!(pool.budget().is_exact());
    let counted_before = pool.budget().texts_counted();

    // 150 distinct texts; every text carried by 3 documents in each of 3 epochs.
    let (distinct, copies, epochs) = (150u64, 3u64, 3u64);
    let text = |t: u64| format!("the cat sat on the mat number {t}");
    let rows: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let (out, handle, embedder) = (rows.clone(), rt.handle().clone(), Arc::new(pool.clone()) as Arc<dyn Embedder>);
    timely::execute(timely::Config::process(2), move |worker| {
        let (mut input, probe, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, candidates) = scope.new_input::<Vec<Candidate>>();
            let (jobs, rejects) = candidates.dedup().ok_err::<Vec<TextJob>, _, Vec<Written>, _, _>(|w| match w {
                Work::Job(job) => Ok(job),
                Work::Reject(r) => Err(Written::Reject(r)),
            });
            let written = jobs.embed(embedder.clone(), handle.clone(), 4, 4_096).concat(rejects);
            let (probe, written) = written.probe();
            (input, probe, written.capture())
        });
        if worker.index() == 0 {
            for epoch in 0..epochs {
                for t in 0..distinct {
                    for c in 0..copies {
                        let id = format!("{epoch}-{t}-{c}");
                        let doc = DocMeta { id, lang: None, created_at_ms: None, origin: Origin::Backfill };
                        input.send(Candidate { doc, text: Ok(text(t)) });
                    }
                }
                input.advance_to(epoch + 1);
                // Later epochs meet texts in flight and texts answered: both must be counted 0 times.
                while probe.less_than(&(epoch / 2)) {
                    worker.step_or_park(Some(Duration::from_millis(5)));
                }
            }
        }
        input.close();
        while worker.step_or_park(Some(Duration::from_millis(5))) {}
        let mut out = out.lock().unwrap();
        for event in captured.try_iter() {
            if let timely::dataflow::operators::capture::Event::Messages(_, data) = event {
                for w in data {
                    let (id, what) = match w {
                        Written::Row(r) => (r.doc.id, format!("row of {} tokens", r.tokens)),
                        Written::Reject(r) => (r.doc.id, format!("rejected: {}", r.reason)),
                    };
                    assert!(out.insert(id, what).is_none(), "one record per document");
                }
            }
        }
    })
    .unwrap();

    let rows = rows.lock().unwrap();
    assert_eq!(rows.len() as u64, distinct * copies * epochs, "every document has its record");
    // "the cat sat on the mat number N": 6 known words, 2 unknown, [CLS] and [SEP].
    assert!(rows.values().all(|w| w == "row of 10 tokens"), "{:?}", rows.values().find(|w| *w != "row of 10 tokens"));
    assert_eq!(pool.budget().texts_counted() - counted_before, distinct, "tokenizer runs per distinct text: one");
    rt.block_on(tei.shutdown());
}

/// Real and computed tokens of every simulated GPU, read from its `/metrics` over HTTP.
fn server_tokens(stack: &test_support::Stack) -> (f64, f64) {
    let client = reqwest::Client::new();
    let mut totals = (0.0, 0.0);
    for url in stack.tei_urls() {
        let body = stack.rt.block_on(async {
            client.get(format!("{url}/metrics")).send().await.expect("metrics").text().await.expect("body")
        });
        let value = |name: &str| -> f64 {
            body.lines()
                .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {url}/metrics"))
        };
        totals.0 += value("dev_tei_real_tokens");
        totals.1 += value("dev_tei_computed_tokens");
    }
    totals
}

/// A backfill of tweet-length texts against padded simulated GPUs (TEI's rule for EmbeddingGemma:
/// a server batch is padded to its longest input), in the given request order: the GPUs'
/// computed over real tokens.
fn padded_backfill(order: RequestOrder) -> f64 {
    let sim = SimConfig {
        gpus: 2,
        padded: true,
        // Small server batches, so a few thousand texts make many of them.
        max_batch_tokens: 4_096,
        tokens_per_second: 400_000.0,
        base: Duration::from_millis(1),
        ..SimConfig::default()
    };
    let stack = test_support::Stack::start_with(sim);
    let texts = 6_000u64;
    stack.mongo.with_store(|s| {
        for i in 0..texts {
            let text = test_support::lengths::tweet_length_text(i);
            let d = mongodb::bson::doc! {"_id": i as i64, "lang": "en", "classified": true, "text": text};
            s.insert("twitter_data", "tweets", d).expect("seed");
        }
    });
    stack.rt.block_on(test_support::create_indexes(&stack.mongo)).expect("indexes");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = stack.args(dir.path(), 2);
    args.tei.order = order;
    let summary = Engine::connect(args).and_then(Engine::backfill).expect("backfill");
    assert_eq!(summary.embedded, texts, "every text embedded");
    let (real, computed) = server_tokens(&stack);
    assert!(real > 0.0);
    // The client's own estimate of the padding agrees with the servers' in direction.
    let share = summary.real_share.expect("requests were sent");
    assert!(share > 0.0 && share <= 1.0, "{share}");
    computed / real
}

#[test]
fn requests_in_length_order_keep_padded_batches_nearly_unpadded() {
    let sorted = padded_backfill(RequestOrder::Length);
    eprintln!("computed / real tokens in length order: {sorted:.3}");
    assert!(sorted <= 1.15, "computed / real tokens in length order: {sorted:.3}");
    // The same run in arrival order pads most of every batch: the test can fail.
    let arrival = padded_backfill(RequestOrder::Arrival);
    eprintln!("computed / real tokens in arrival order: {arrival:.3}");
    assert!(arrival > 2.0, "computed / real tokens in arrival order: {arrival:.3}");
}
