//! Real-world TEI faults through the whole backfill (issue 12): a server whose permits hold fewer
//! inputs than a request, and a server that returns vectors that are not numbers. Each run must
//! end, on its own, with every eligible document embedded exactly once or rejected with its reason.

use std::sync::mpsc;
use std::time::Duration;

use dev_tei::{embedding_for, returns_nan, FaultConfig, SimConfig};
use mongodb::bson::{doc, Bson, Document};
use test_support::expect::{check_run, read_rows, Output};
use test_support::proc::free_port;
use test_support::synth::{kind_of, Kind};
use test_support::{seed, Fixture, Seeded, Stack};
use tweet_embed_operators::run::{Engine, RunConfig, Summary};
use tweet_embed_operators::tei::{Api, Concurrency, PoolStats};

/// Longest a backfill of a few hundred documents may take on instant GPUs before it counts as
/// stalled.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs the backfill of `args` on a thread of its own: its summary and the pool's counters, or a
/// panic when it has not ended within [`LIMIT`].
fn backfill_within_limit(args: RunConfig) -> (Summary, PoolStats) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = Engine::connect(args).and_then(|engine| {
            let pool = engine.monitor().pool;
            let summary = engine.backfill()?;
            Ok((summary, pool.stats()))
        });
        let _ = tx.send(result.map_err(|e| format!("{e:#}")));
    });
    match rx.recv_timeout(LIMIT) {
        Ok(result) => result.expect("backfill"),
        Err(_) => panic!("the backfill did not end within {LIMIT:?}: stalled"),
    }
}

/// Instant GPUs with `permits` and `items` (TEI's `--max-concurrent-requests` and
/// `--max-client-batch-size`).
fn tight(permits: usize, items: usize) -> SimConfig {
    SimConfig {
        max_concurrent_requests: permits,
        max_client_batch_size: items,
        instant: true,
        seed: 7,
        ..SimConfig::default()
    }
}

#[test]
fn a_server_with_fewer_permits_than_a_request_holds_still_finishes_exactly_once() {
    // TEI takes one permit per input at once: 32 inputs against 6 permits is 429 forever, so
    // requests must shrink to fit. Adaptive, pinned within the permits, pinned over them, and
    // 2 permits against 4 inputs a request.
    let cases = [
        (6, 32, Concurrency::Adaptive),
        (6, 32, Concurrency::Fixed(2)),
        (6, 32, Concurrency::Fixed(16)),
        (2, 4, Concurrency::Adaptive),
        (2, 4, Concurrency::Fixed(1)),
    ];
    for (permits, items, concurrency) in cases {
        let case = format!("{permits} permits, {items} items a request, {concurrency:?}");
        let Fixture { stack, seeded, dir: _dir, mut args } =
            Fixture::new(Stack::start_with(tight(permits, items)), Seeded { n: 400, seed: 3 }, 2);
        args.tei.concurrency = concurrency;
        let (summary, stats) = backfill_within_limit(args.clone());
        check_run(&stack, &seeded, &args.out);
        assert_eq!(summary.embedded as usize + summary.rejected as usize, seeded.eligible(), "{case}");
        // Requests fit the permits: the server never had to refuse one for want of them.
        assert_eq!(stats.retries_by_cause.get("429"), None, "{case}: {stats:?}");
        assert_eq!(stats.endpoints[0].breaker_opened, 0, "{case}: {stats:?}");
    }
}

#[test]
fn vectors_that_are_not_numbers_are_rejections_never_rows_on_both_routes() {
    let rate = 0.02;
    for api in [Api::Tei, Api::OpenAi] {
        let faults = FaultConfig { nan_rate: rate, ..FaultConfig::default() };
        let Fixture { stack, seeded, dir: _dir, mut args } = Fixture::new(
            Stack::start_with(SimConfig { instant: true, seed: 7, faults, ..SimConfig::default() }),
            Seeded { n: 300, seed: 5 },
            2,
        );
        args.tei.api = api;
        let (summary, stats) = backfill_within_limit(args.clone());

        let Output { vectors, counts, rejects } = read_rows(&args.out);
        let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "{api:?}: written more than once: {repeated:?}");
        for (id, v) in &vectors {
            assert!(v.iter().all(|x| x.is_finite()), "{api:?}: row {id} has a non-finite component");
        }
        let coll = stack.coll();
        let docs: Vec<Document> = stack.rt.block_on(async {
            let mut cursor = coll.find(doc! {}).await.expect("find");
            let mut docs = Vec::new();
            while cursor.advance().await.expect("advance") {
                docs.push(cursor.deserialize_current().expect("doc"));
            }
            docs
        });
        let (mut nan_docs, mut good) = (0, 0);
        for d in &docs {
            let oid = d.get_object_id("_id").expect("synthetic id");
            let id = oid.to_hex();
            let i = u32::from_be_bytes(oid.bytes()[8..12].try_into().expect("4 bytes")) as u64;
            if kind_of(i, seeded.seed) != Kind::Good {
                continue;
            }
            let text = d.get_str("text").expect("text");
            let mark = d.get("gemma_embedded_768");
            if returns_nan(text, rate) {
                nan_docs += 1;
                let reason = rejects.get(&id).unwrap_or_else(|| panic!("{api:?}: NaN document {id} not rejected"));
                assert_eq!(reason, "the server returned a vector with NaN components", "{api:?}");
                assert!(!vectors.contains_key(&id), "{api:?}: NaN document {id} written as a row");
                assert_eq!(mark, Some(&Bson::Boolean(false)), "{api:?}: mark of {id}");
                assert_eq!(d.get_str("gemma_embedded_768_error").ok(), Some(reason.as_str()), "{api:?}");
            } else {
                good += 1;
                let v = vectors.get(&id).unwrap_or_else(|| panic!("{api:?}: no row for {id}"));
                assert_eq!(v, &embedding_for(text, 768), "{api:?}: vector of {id}");
                assert_eq!(mark, Some(&Bson::Boolean(true)), "{api:?}: mark of {id}");
            }
        }
        assert!(nan_docs >= 3, "{api:?}: the fault picked only {nan_docs} documents: choose another seed");
        assert_eq!(vectors.len(), good, "{api:?}");
        assert_eq!(summary.embedded as usize, good, "{api:?}");
        assert_eq!(summary.embedded as usize + summary.rejected as usize, seeded.eligible(), "{api:?}");
        // Counted, per endpoint too, and the server stayed in rotation: its other vectors are fine.
        assert!(stats.invalid_vectors >= 1, "{api:?}: {stats:?}");
        assert_eq!(stats.endpoints.iter().map(|e| e.invalid_vectors).sum::<u64>(), stats.invalid_vectors);
        assert_eq!(stats.endpoints[0].breaker_opened, 0, "{api:?}");
        assert_eq!(stats.retries, 0, "{api:?}: a NaN costs its input, not a retry of the request: {stats:?}");
    }
}

#[test]
fn an_input_the_backend_cannot_compute_is_isolated_and_the_rest_is_embedded() {
    // TEI #61: a 424 `CublasError(CUBLAS_STATUS_NOT_SUPPORTED)` for any request holding one
    // input. It follows the input, not the endpoint: on two endpoints it must fail on both, on
    // one twice, and then only that input is rejected; the endpoint stays in rotation.
    let poison = "POISON-cublas-shape";
    for gpus in [2, 1] {
        let faults = FaultConfig { poison: Some(poison.to_string()), ..FaultConfig::default() };
        let stack = Stack::start_with(SimConfig { gpus, instant: true, seed: 7, faults, ..SimConfig::default() });
        let seeded = seed(&stack.mongo, 400, 9);
        let text = format!("a tweet the backend cannot compute {poison} 🙃");
        stack.mongo.with_store(|s| {
            let d = doc! {"_id": "poisoned", "lang": "en", "classified": true, "text": text};
            s.insert("twitter_data", "tweets", d).expect("insert");
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let args = stack.args(dir.path(), 2);
        let (summary, stats) = backfill_within_limit(args.clone());
        check_run(&stack, &seeded, &args.out);
        assert_eq!(summary.embedded as usize + summary.rejected as usize, seeded.eligible() + 1, "{gpus} GPUs");
        let coll = stack.coll();
        let d = stack.rt.block_on(async { coll.find_one(doc! {"_id": "poisoned"}).await }).expect("find").expect("doc");
        assert_eq!(d.get_bool("gemma_embedded_768").ok(), Some(false), "{gpus} GPUs");
        let reason = d.get_str("gemma_embedded_768_error").expect("a reason");
        assert!(reason.contains("CUBLAS_STATUS_NOT_SUPPORTED"), "{gpus} GPUs: {reason}");
        let Output { rejects, .. } = read_rows(&args.out);
        let written = rejects.iter().find(|(id, _)| id.contains("poisoned")).map(|(_, r)| r.as_str());
        assert_eq!(written, Some(reason), "{gpus} GPUs: in _rejects with the same reason");
        assert!(stats.bisections >= 1, "{gpus} GPUs: {stats:?}");
        for e in &stats.endpoints {
            assert_eq!(e.breaker_opened, 0, "{gpus} GPUs: a poisoned input is not a failing endpoint: {e:?}");
        }
    }
}

#[test]
fn an_endpoint_still_loading_at_start_does_not_stop_the_run() {
    // Two endpoints, one still loading its model (connection refused): the run starts on the
    // other and embeds everything (it used to exit 1 at once with 0 of 300 embedded).
    let port = free_port();
    let Fixture { stack, seeded, dir: _dir, mut args } =
        Fixture::new(Stack::start(1, FaultConfig::default()), Seeded { n: 300, seed: 13 }, 2);
    args.tei.urls.push(format!("http://127.0.0.1:{port}"));
    let (summary, stats) = backfill_within_limit(args.clone());
    check_run(&stack, &seeded, &args.out);
    assert_eq!(summary.embedded as usize + summary.rejected as usize, seeded.eligible());
    assert!(stats.endpoints[1].joining && stats.endpoints[1].requests == 0, "{:?}", stats.endpoints[1]);
}
