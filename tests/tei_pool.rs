//! The TEI endpoint pool against the simulator over real HTTP on loopback: every vector checked
//! against `embedding_for`, order kept, faults survived, refusals split or isolated, start-up
//! misconfiguration reported, and the token budget counting like the server.

use std::time::{Duration, Instant};
use test_support::embedded::{assert_all_embedded, expected};
use test_support::gpu::Gpu;
use test_support::{texts, word_tokenizer};

use dev_tei::{embedding_for, DevTei, FaultConfig, SimConfig};
use tweet_embed_operators::tei::{
    self, json_string_len, Api, Concurrency, Endpoint, EndpointPool, FailureKind, PackLimits, PoolConfig,
    RequestBatcher, ServerLimits, TokenBudget,
};

/// A simulated GPU fast enough for tests, slow enough that requests overlap.
const GPU: Gpu = Gpu { base: Duration::from_millis(1), tokens_per_second: 2_000_000.0 };

/// Quick retries so fault tests stay fast.
fn config(urls: Vec<String>) -> PoolConfig {
    PoolConfig {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(200),
        ..PoolConfig::new(urls)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_matches_in_order_across_four_endpoints() {
    let tei = DevTei::start(GPU.sim(4)).await.unwrap();
    let pool = EndpointPool::connect(config(tei.urls())).await.unwrap();
    assert_eq!((pool.dim(), pool.model_id()), (768, "google/embeddinggemma-300m"));
    assert_eq!(pool.limits().max_client_batch_size, 32);
    let texts = texts::varied(2000);
    let outcomes = pool.embed(texts.clone()).await;
    assert_all_embedded(&texts, &outcomes);
    assert!(pool.embed(Vec::new()).await.is_empty());

    let stats = pool.stats();
    assert_eq!((stats.embedded_inputs, stats.rejected_inputs, stats.retries), (2000, 0, 0));
    assert_eq!(stats.compute_tokens, stats.budget_tokens, "the estimate is the simulator's: exact");
    for (gpu, endpoint) in tei.stats().iter().zip(&stats.endpoints) {
        assert!(gpu.inputs > 100, "every endpoint is used: {gpu:?}");
        assert_eq!(endpoint.in_flight, 0);
        assert_eq!(endpoint.outstanding_tokens, 0);
    }
    // The probe is the only input the pool did not send through embed.
    let served: u64 = tei.stats().iter().map(|s| s.inputs).sum();
    assert_eq!(served, 2000 + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_suffix_openai_base64_and_api_key() {
    let tei = DevTei::start(SimConfig { api_key: Some("s3cret".into()), ..GPU.sim(2) }).await.unwrap();
    let urls: Vec<String> = tei.urls().iter().map(|u| format!("{u}/embed")).collect();
    let texts = texts::varied(300);

    let keyed = PoolConfig { api_key: Some("s3cret".into()), ..config(urls.clone()) };
    let native = EndpointPool::connect(keyed.clone()).await.unwrap();
    assert_eq!(native.urls(), tei.urls(), "the /embed suffix is stripped");
    assert_all_embedded(&texts, &native.embed(texts.clone()).await);

    let openai = EndpointPool::connect(PoolConfig { api: Api::OpenAi, ..keyed.clone() }).await.unwrap();
    assert_all_embedded(&texts, &openai.embed(texts.clone()).await);

    let err = EndpointPool::connect(config(urls)).await.err().expect("no key: refused");
    let message = err.to_string();
    assert!(message.contains("API key") && message.contains(&tei.urls()[0]), "{message}");
    assert!(!format!("{keyed:?}").contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_dropped_connections_lose_nothing() {
    let faults = FaultConfig { error_rate: 0.05, drop_rate: 0.05, ..FaultConfig::default() };
    let tei = DevTei::start(SimConfig { faults: FaultConfig::default(), seed: 7, ..GPU.sim(4) }).await.unwrap();
    // Small requests: a few hundred calls, so every kind of fault shows up.
    let pool = EndpointPool::connect(PoolConfig { batch_size: Some(8), ..config(tei.urls()) }).await.unwrap();
    for gpu in tei.gpus() {
        gpu.set_error_rate(faults.error_rate);
        gpu.set_drop_rate(faults.drop_rate);
    }
    let texts = texts::varied(3000);
    let outcomes = pool.embed(texts.clone()).await;
    assert_all_embedded(&texts, &outcomes);
    let stats = pool.stats();
    assert_eq!(stats.rejected_inputs, 0);
    assert!(stats.retries >= 5, "{stats:?}");
    let causes = &stats.retries_by_cause;
    assert!(causes.contains_key("503") && causes.contains_key("424"), "{causes:?}");
    assert!(causes.keys().any(|c| c == "connection" || c == "body"), "dropped connections are retried: {causes:?}");
    assert_eq!(stats.retries, causes.values().sum::<u64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_down_mid_run_loses_nothing_and_is_used_again_after() {
    // Slower GPUs, so the run is still going when GPU 1 dies and comes back.
    let slow = SimConfig { base: Duration::from_millis(3), tokens_per_second: 20_000.0, ..GPU.sim(4) };
    let tei = DevTei::start(slow).await.unwrap();
    let pool = EndpointPool::connect(config(tei.urls())).await.unwrap();
    let texts = texts::varied(8000);
    let run = tokio::spawn({
        let pool = pool.clone();
        let texts = texts.clone();
        async move { pool.embed(texts).await }
    });
    let gpu = tei.gpus()[1].clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gpu.set_down(true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pool.stats().endpoints[1].failures > 0);
    assert!(!run.is_finished(), "the run outlives the outage");
    gpu.set_down(false).await.unwrap();
    let used_when_back = gpu.stats().inputs;
    let outcomes = run.await.unwrap();
    assert_all_embedded(&texts, &outcomes);
    assert_eq!(pool.stats().rejected_inputs, 0);
    let causes = pool.stats().retries_by_cause;
    assert!(causes.contains_key("connect") || causes.contains_key("connection"), "{causes:?}");

    // Used again: within a few skip periods, more work reaches it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while gpu.stats().inputs == used_when_back {
        assert!(Instant::now() < deadline, "GPU 1 never used again");
        let more = texts[..256].to_vec();
        assert_all_embedded(&more, &pool.embed(more.clone()).await);
    }
    assert!(!pool.stats().endpoints[1].skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_times_out_and_others_take_its_work() {
    let tei = DevTei::start(GPU.sim(2)).await.unwrap();
    let quick = PoolConfig { request_timeout: Duration::from_millis(300), ..config(tei.urls()) };
    let pool = EndpointPool::connect(quick).await.unwrap();
    tei.gpus()[0].set_slow(1.0, Duration::from_secs(3));
    let texts = texts::varied(500);
    let outcomes = pool.embed(texts.clone()).await;
    assert_all_embedded(&texts, &outcomes);
    let stats = pool.stats();
    assert!(stats.retries_by_cause.get("timeout").is_some_and(|&n| n >= 1), "{stats:?}");
    assert_eq!(stats.endpoints[1].embedded_inputs, 500);
}

/// The pool is shared across worker threads and its futures run on any of them.
#[test]
fn the_pool_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<EndpointPool>();
    send_sync::<TokenBudget>();
    let pool: Option<EndpointPool> = None;
    if let Some(pool) = pool {
        send(&pool.embed(Vec::new()));
        send(&EndpointPool::connect(PoolConfig::new(["http://x"])));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_endpoints_down_waits_then_finishes() {
    let tei = DevTei::start(GPU.sim(2)).await.unwrap();
    // Small requests: a few hundred calls, so every kind of fault shows up.
    let pool = EndpointPool::connect(PoolConfig { batch_size: Some(8), ..config(tei.urls()) }).await.unwrap();
    for gpu in tei.gpus() {
        gpu.set_down(true).await.unwrap();
    }
    let texts = texts::varied(200);
    let run = tokio::spawn({
        let pool = pool.clone();
        let texts = texts.clone();
        async move { pool.embed(texts).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!run.is_finished(), "nothing is dropped while every endpoint is down");
    tei.gpus()[0].set_down(false).await.unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(60), run).await.unwrap().unwrap();
    assert_all_embedded(&texts, &outcomes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_refusals_split_until_the_server_accepts() {
    // The server takes 20 KB bodies; the pool believes 10 MB: 413s, then halves.
    let tei = DevTei::start(SimConfig { payload_limit: 20_000, ..GPU.sim(2) }).await.unwrap();
    let pool = EndpointPool::connect(PoolConfig { payload_limit: 10_000_000, ..config(tei.urls()) }).await.unwrap();
    let mut texts: Vec<String> = (0..200).map(|i| format!("{i} {}", "word ".repeat(200))).collect();
    // One text over the server's limit on its own: the only rejection.
    texts[77] = "x ".repeat(15_000);
    let outcomes = pool.embed(texts.clone()).await;
    for (i, (text, outcome)) in texts.iter().zip(&outcomes).enumerate() {
        match (i, outcome) {
            (77, Err(reason)) => assert!(reason.starts_with("text the server refuses: "), "{reason}"),
            (77, Ok(_)) => panic!("a body over the payload limit was accepted"),
            (_, outcome) => assert!(outcome.as_ref().ok() == Some(&expected(text)), "input {i}"),
        }
    }
    let stats = pool.stats();
    assert!(stats.splits >= 2, "{stats:?}");
    assert_eq!(stats.rejected_inputs, 1);

    // More items than max_client_batch_size on one call: classified as "split me" (422, 1.9).
    let endpoint = Endpoint::new(&tei.urls()[0], tei::http_client(Duration::from_secs(10)).unwrap()).unwrap();
    let err = endpoint.embed(&texts::varied(40)).await.unwrap_err();
    assert_eq!((err.kind, err.cause.as_str()), (FailureKind::TooLarge, "422"), "{err}");
    // Over the payload limit it knows of, the endpoint refuses locally.
    let err = endpoint.with_payload_limit(1000).embed(&texts[..4]).await.unwrap_err();
    assert_eq!((err.kind, err.cause.as_str()), (FailureKind::TooLarge, "payload"), "{err}");
}

/// 31 good texts with `bad` ones mixed in, at `positions`.
fn with_bad(bad: &[(usize, String)]) -> Vec<String> {
    let mut texts = texts::varied(31 + bad.len());
    for (position, text) in bad {
        texts[*position] = text.clone();
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_input_is_isolated_and_the_others_embedded() {
    let tei = DevTei::start(GPU.sim(2)).await.unwrap();
    let pool = EndpointPool::connect(config(tei.urls())).await.unwrap();
    // Empty is refused (400); whitespace-only is a valid input to TEI.
    let texts = with_bad(&[(5, String::new()), (20, "   ".into())]);
    let outcomes = pool.embed(texts.clone()).await;
    for (i, (text, outcome)) in texts.iter().zip(&outcomes).enumerate() {
        if i == 5 {
            let reason = outcome.as_ref().unwrap_err();
            assert!(reason.starts_with("text the server refuses: ") && reason.contains("empty"), "{reason}");
        } else {
            assert!(outcome.as_ref().ok() == Some(&expected(text)), "input {i}: {outcome:?}");
        }
    }
    let stats = pool.stats();
    assert_eq!((stats.rejected_inputs, stats.embedded_inputs), (1, 32));
    assert!(stats.bisections >= 1 && stats.bisections <= 10, "{stats:?}");

    // Without truncation (OpenAI route, server --auto-truncate false) a long input is refused.
    let strict = DevTei::start(SimConfig { auto_truncate: false, ..GPU.sim(1) }).await.unwrap();
    let pool = EndpointPool::connect(PoolConfig { api: Api::OpenAi, ..config(strict.urls()) }).await.unwrap();
    let long = "many words ".repeat(300);
    let texts = with_bad(&[(0, long), (32, String::new())]);
    let outcomes = pool.embed(texts.clone()).await;
    let reasons: Vec<(usize, &String)> =
        outcomes.iter().enumerate().filter_map(|(i, o)| o.as_ref().err().map(|r| (i, r))).collect();
    assert_eq!(reasons.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 32], "{reasons:?}");
    assert!(reasons[0].1.contains("must have less than 512 tokens"), "{}", reasons[0].1);
    for (text, outcome) in texts.iter().zip(&outcomes).take(32).skip(1) {
        assert!(outcome.as_ref().ok() == Some(&embedding_for(text, 768)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfiguration_is_a_clear_error_naming_the_endpoint() {
    let a = DevTei::start(GPU.sim(1)).await.unwrap();
    let small = DevTei::start(SimConfig { dim: 384, ..GPU.sim(1) }).await.unwrap();
    let other = DevTei::start(SimConfig { model_id: "BAAI/bge-m3".into(), ..GPU.sim(1) }).await.unwrap();
    let tight =
        DevTei::start(SimConfig { max_client_batch_size: 8, max_input_length: 256, ..GPU.sim(1) }).await.unwrap();
    let (a, small, other, tight) = (&a.urls()[0], &small.urls()[0], &other.urls()[0], &tight.urls()[0]);

    let dims = message(vec![a, small]).await;
    assert!(dims.contains("dimensions") && dims.contains(a) && dims.contains(small), "{dims}");
    assert!(dims.contains("768") && dims.contains("384") && !dims.contains('\n'), "{dims}");
    let models = message(vec![a, other]).await;
    assert!(models.contains("different models") && models.contains(other), "{models}");
    assert!(models.contains("BAAI/bge-m3"), "{models}");

    // A port nobody listens on, alone: nothing to start with. (Beside a live one it joins
    // later: `an_endpoint_down_at_start_joins_when_it_answers_as_the_same_model`.)
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}");
    let no_wait = PoolConfig { start_wait: Duration::ZERO, ..config(vec![dead.clone()]) };
    let unreachable = EndpointPool::connect(no_wait).await.err().expect("refused").to_string();
    assert!(unreachable.starts_with(&format!("TEI at {dead} is not reachable: ")), "{unreachable}");
    assert!(unreachable.ends_with("Connection refused (os error 111)"), "{unreachable}");
    assert!(message(vec![]).await.contains("no TEI URL"));
    assert!(message(vec![a, &format!("{a}/embed")]).await.contains("given twice"));

    // Agreeing endpoints: the tightest limits.
    let pool = EndpointPool::connect(config(vec![a.clone(), tight.clone()])).await.unwrap();
    let limits = pool.limits();
    assert_eq!((limits.max_client_batch_size, limits.max_input_length), (8, 256));
    assert_eq!(pool.pack_limits().max_items, 8);
}

/// The start-up error connecting to `urls`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_at_start_joins_when_it_answers_as_the_same_model() {
    let a = DevTei::start(GPU.sim(1)).await.unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (loading, impostor) = (free(), free());
    let urls = vec![a.urls()[0].clone(), format!("http://127.0.0.1:{loading}"), format!("http://127.0.0.1:{impostor}")];
    // Two of three still loading: the pool starts on the one that answers.
    let pool = EndpointPool::connect(config(urls)).await.expect("starts with the endpoint that answers");
    let joining: Vec<bool> = pool.stats().endpoints.iter().map(|e| e.joining).collect();
    assert_eq!(joining, [false, true, true]);
    let first = texts::varied(200);
    assert_all_embedded(&first, &pool.embed(first.clone()).await);
    // One comes up as the same model, the other as another model of the same width.
    let same = DevTei::start(SimConfig { base_port: loading, ..GPU.sim(1) }).await.unwrap();
    let other = SimConfig { base_port: impostor, model_id: "BAAI/bge-base-en-v1.5".into(), ..GPU.sim(1) };
    let other = DevTei::start(other).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pool.stats().endpoints[1].joining {
        assert!(std::time::Instant::now() < deadline, "the endpoint never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = texts::varied(2000);
    assert_all_embedded(&second, &pool.embed(second.clone()).await);
    let stats = pool.stats();
    assert!(stats.endpoints[1].embedded_inputs > 0, "the joined endpoint serves: {:?}", stats.endpoints[1]);
    // The other model never serves a vector: it stays out of rotation.
    assert!(stats.endpoints[2].joining && stats.endpoints[2].requests == 0, "{:?}", stats.endpoints[2]);
    assert_eq!(other.stats()[0].inputs, 0, "no input reached the other model");
    assert!(same.stats()[0].inputs > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_comes_back_as_another_model_never_serves_a_vector() {
    // A TEI server restarted with another model of the same width: it went away (requests to it
    // fail to connect), so it is held out until its identity is checked, and the check keeps it
    // out. None of its vectors may be used.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let a = DevTei::start(GPU.sim(1)).await.unwrap();
    let b = DevTei::start(SimConfig { base_port: free, ..GPU.sim(1) }).await.unwrap();
    let pool = EndpointPool::connect(config(vec![a.urls()[0].clone(), b.urls()[0].clone()])).await.unwrap();
    let first = texts::varied(400);
    assert_all_embedded(&first, &pool.embed(first.clone()).await);
    assert!(pool.stats().endpoints[1].embedded_inputs > 0, "both serve at first");
    b.shutdown().await;
    // Work while it is down: its connection failures hold it out.
    let meanwhile = texts::varied(400);
    assert_all_embedded(&meanwhile, &pool.embed(meanwhile.clone()).await);
    let other = SimConfig { base_port: free, model_id: "BAAI/bge-base-en-v1.5".into(), ..GPU.sim(1) };
    let other = DevTei::start(other).await.unwrap();
    // Long enough for the identity check to have looked at it more than once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = texts::varied(1000);
    assert_all_embedded(&after, &pool.embed(after.clone()).await);
    assert_eq!(other.stats()[0].inputs, 0, "a vector of the other model was asked for");
    assert!(pool.stats().endpoints[1].skipped, "{:?}", pool.stats().endpoints[1]);
}

async fn message(urls: Vec<&String>) -> String {
    let urls = urls.into_iter().cloned().collect();
    EndpointPool::connect(config(urls)).await.err().expect("refused").to_string()
}

#[test]
fn pack_respects_items_tokens_and_payload() {
    let budget = std::sync::Arc::new(TokenBudget::estimated(512));
    let texts = texts::varied(3000);
    let limits = PackLimits { max_items: 32, max_tokens: 2000, max_bytes: 40_000 };
    let batcher = RequestBatcher::new(limits, budget.clone());
    let requests = batcher.cut(texts.iter().map(String::as_str)).requests;
    assert_eq!(budget.texts_counted(), 3000, "each text counted once");
    let mut next = 0;
    for range in &requests {
        assert_eq!(range.start, next, "in order, nothing skipped");
        next = range.end;
        let slice = &texts[range.clone()];
        let tokens: u32 = slice.iter().map(|t| budget.count(t)).sum();
        let bytes: usize = slice.iter().map(|t| json_string_len(t)).sum();
        assert!(!slice.is_empty() && slice.len() <= 32);
        assert!(slice.len() == 1 || (tokens as usize <= 2000 && bytes <= 40_000), "{range:?}: {tokens} {bytes}");
        let body = serde_json::to_vec(&serde_json::json!({"inputs": slice, "truncate": true})).unwrap();
        assert!(body.len() <= 40_000 + 256, "{}", body.len());
    }
    assert_eq!(next, texts.len());
    assert!(requests.len() > 3000 / 32, "token and byte limits cut requests too");

    // Built from a server's limits: --batch-size and the payload limit apply.
    let limits = tweet_embed_operators::tei::ServerLimits {
        model_id: "m".into(),
        model_sha: None,
        version: "1.9.0".into(),
        max_client_batch_size: 32,
        max_batch_tokens: 16_384,
        max_batch_requests: None,
        max_input_length: 512,
        max_concurrent_requests: 512,
        payload_limit: 2_000_000,
        auto_truncate: true,
    };
    let pack = PackLimits::for_server(&limits, Some(8));
    assert_eq!((pack.max_items, pack.max_tokens), (8, 16_384));
    assert!(pack.max_bytes < 2_000_000 && pack.max_bytes > 1_900_000);
    assert_eq!(PackLimits::for_server(&limits, Some(100)).max_items, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenizer_counts_like_the_server_and_the_estimate_calibrates_toward_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = word_tokenizer(dir.path());
    // Long words: the estimate counts 3 pieces a word, the tokenizer one.
    let texts: Vec<String> = (0..400)
        .map(|i| format!("the cat elephants{i} sat on extraordinary mat {}", "hippopotamus ".repeat(i % 9)))
        .collect();

    let short =
        DevTei::start(SimConfig { tokenizer: Some(path.clone()), max_input_length: 6, ..GPU.sim(1) }).await.unwrap();
    let budget = TokenBudget::from_tokenizer_file(&path, 6).unwrap();
    assert!(budget.is_exact());
    assert_eq!(budget.count("the cat"), 4);
    assert_eq!(budget.count("the cat sat on the mat"), 6, "truncated, special tokens included");
    let pool =
        EndpointPool::connect(PoolConfig { tokenizer: Some(path.clone()), ..config(short.urls()) }).await.unwrap();
    assert!(pool.budget().is_exact());
    let outcomes = pool.embed(texts.clone()).await;
    assert!(outcomes.iter().all(Result::is_ok));
    let stats = pool.stats();
    assert_eq!(stats.budget_tokens, stats.compute_tokens, "exact counts: {stats:?}");
    assert_eq!(stats.token_scale, 1.0);

    let server = DevTei::start(SimConfig { tokenizer: Some(path), ..GPU.sim(1) }).await.unwrap();
    let pool = EndpointPool::connect(PoolConfig { batch_size: Some(4), ..config(server.urls()) }).await.unwrap();
    let estimate_before: u32 = texts.iter().map(|t| pool.budget().count(t)).sum();
    pool.embed(texts.clone()).await;
    let stats = pool.stats();
    let estimate_after: u32 = texts.iter().map(|t| pool.budget().count(t)).sum();
    let actual = stats.compute_tokens as f64;
    assert!(stats.token_scale < 0.6, "{stats:?}");
    assert!(
        (f64::from(estimate_after) - actual).abs() < 0.5 * (f64::from(estimate_before) - actual).abs(),
        "before {estimate_before}, after {estimate_after}, server {actual}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_shrink_to_fit_the_permits_and_clients_sharing_them_converge() {
    // 6 permits, 32 inputs a request: TEI answers 429 to any request of more than 6 inputs.
    let sim = SimConfig { max_concurrent_requests: 6, base: Duration::from_millis(2), ..GPU.sim(1) };
    let tei = DevTei::start(sim).await.unwrap();
    let alone = EndpointPool::connect(config(tei.urls())).await.unwrap();
    assert_eq!(alone.pack_limits().max_items, 3, "two requests of 3 fit 6 permits");
    assert_eq!(alone.max_in_flight(), 2);
    let texts = texts::varied(400);
    assert_all_embedded(&texts, &alone.embed(texts.clone()).await);
    assert_eq!(alone.stats().retries, 0, "{:?}", alone.stats());

    // Two clients (two processes of a cluster, or another user) pinned at what fits each alone:
    // together they want twice the permits. Some requests get 429; both must still finish, and
    // a busy server is never taken out of rotation as if it were failing.
    for concurrency in [Concurrency::Fixed(2), Concurrency::Adaptive] {
        let connect = || EndpointPool::connect(PoolConfig { concurrency, ..config(tei.urls()) });
        let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
        let both = async { tokio::join!(a.embed(texts.clone()), b.embed(texts.clone())) };
        let (from_a, from_b) = tokio::time::timeout(Duration::from_secs(60), both)
            .await
            .unwrap_or_else(|_| panic!("{concurrency:?}: clients sharing permits stalled"));
        assert_all_embedded(&texts, &from_a);
        assert_all_embedded(&texts, &from_b);
        let refused: u64 = [&a, &b].iter().map(|p| p.stats().retries_by_cause.get("429").copied().unwrap_or(0)).sum();
        if concurrency == Concurrency::Fixed(2) {
            assert!(refused > 0, "the two clients never collided: the test proves nothing");
        }
        for pool in [&a, &b] {
            let stats = pool.stats();
            assert_eq!(stats.endpoints[0].breaker_opened, 0, "{concurrency:?}: {stats:?}");
            assert_eq!(stats.rejected_inputs, 0);
        }
    }

    // With a pinned concurrency and no --batch-size, requests shrink so that many fit; a
    // --batch-size over the permits is cut to them.
    let limits = ServerLimits { max_concurrent_requests: 6, ..ServerLimits::tei_defaults("m") };
    assert_eq!(PackLimits::for_server_at(&limits, None, Some(3)).max_items, 2);
    assert_eq!(PackLimits::for_server_at(&limits, None, Some(16)).max_items, 1);
    assert_eq!(PackLimits::for_server_at(&limits, Some(4), Some(16)).max_items, 4);
    assert_eq!(PackLimits::for_server(&limits, Some(32)).max_items, 6);
    let few = ServerLimits { max_concurrent_requests: 2, max_client_batch_size: 4, ..limits.clone() };
    assert_eq!(PackLimits::for_server(&few, None).max_items, 1);
    let one = ServerLimits { max_concurrent_requests: 1, ..limits };
    assert_eq!(PackLimits::for_server(&one, None).max_items, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_permits_never_free_is_a_start_up_error_not_a_stall() {
    // One permit, held by another client's request for 10 s: not even a one-input probe fits.
    let tei = DevTei::start(SimConfig { max_concurrent_requests: 1, base: Duration::from_secs(10), ..GPU.sim(1) })
        .await
        .unwrap();
    let url = tei.urls()[0].clone();
    let hog = tokio::spawn({
        let url = url.clone();
        async move {
            let client = reqwest::Client::new();
            client.post(format!("{url}/embed")).json(&serde_json::json!({"inputs": "hog"})).send().await
        }
    });
    // The hog holds the permit once the server has counted its tokens (after taking permits).
    let deadline = Instant::now() + Duration::from_secs(60);
    while tei.max_request_tokens() == 0 {
        assert!(Instant::now() < deadline, "the hog's request never reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let err = EndpointPool::connect(config(vec![url.clone()])).await.err().expect("no permit: refused");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("TEI at {url} answers a one-input probe with 429 (no free permit) 5 times")),
        "{message}"
    );
    assert!(message.contains("no request can fit") && !message.contains('\n'), "{message}");
    // Said at start, not after waiting the hog's 10 s out.
    assert!(!hog.is_finished(), "refused only after the permit was free again ({:?})", started.elapsed());
    hog.abort();
}

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

/// `backfill` of a seeded collection with `--tei-urls tei_url`: the one error line it exits 1
/// with, after checking that nothing else says `tweet-embed:`, nothing panicked, no HTML reached
/// the terminal, and nothing was written.
fn backfill_refused(stack: &test_support::Stack, tei_url: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = stack.args(dir.path(), 1);
    args.tei.urls = vec![tei_url.to_string()];
    let cmd = test_support::proc::pipeline_cmd(BIN, "backfill", &args);
    // Refused at start; the bound only keeps a regression (waiting for the server) from hanging.
    let (status, log) = test_support::proc::Logged::spawn(cmd).finish(Duration::from_secs(120));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let lower = log.to_ascii_lowercase();
    assert!(!lower.contains("<html") && !lower.contains("<!doctype") && !lower.contains("<body"), "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("tweet-embed: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {log}");
    let written = std::fs::read_dir(&args.out).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "nothing written to --out");
    lines[0].to_string()
}

#[test]
fn an_https_url_to_a_plain_http_server_says_to_use_http() {
    let stack = test_support::Stack::start(1, FaultConfig::default());
    test_support::seed(&stack.mongo, 20, 91);
    let http = stack.tei_urls()[0].clone();
    let https = http.replacen("http://", "https://", 1);
    let line = backfill_refused(&stack, &https);
    assert!(line.contains(&format!("{https} speaks plain HTTP, not HTTPS")), "{line}");
    assert!(line.ends_with(&format!("use http://, as in --tei-urls {http}")), "{line}");
    // The same URL with `/embed`, as the README writes them: the same advice.
    let line = backfill_refused(&stack, &format!("{https}/embed"));
    assert!(line.contains("speaks plain HTTP") && line.contains(&format!("--tei-urls {http}")), "{line}");
}

#[test]
fn a_url_that_is_not_tei_says_what_answered_without_its_page() {
    let stack = test_support::Stack::start(1, FaultConfig::default());
    test_support::seed(&stack.mongo, 20, 92);
    // A real web server on loopback, as a wrong port in --tei-urls finds one: Python's
    // http.server over a directory where /ui/info is a web page and /gone/info is missing.
    let site = tempfile::tempdir().expect("tempdir");
    let page = site.path().join("ui/info");
    std::fs::create_dir_all(&page).expect("mkdir");
    let body = "<!DOCTYPE html><html><head><title>Grafana</title></head><body>".to_string()
        + &"<div>a dashboard, not an embedding server</div>".repeat(200)
        + "</body></html>";
    std::fs::write(page.join("index.html"), body).expect("write");
    let port = test_support::proc::free_port();
    let py = std::env::var("TWEET_EMBED_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let server = std::process::Command::new(&py)
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(site.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{py} -m http.server: {e}"));
    let _server = test_support::proc::Proc(server);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://127.0.0.1:{port}");
    // A page: its status, content type and title, never the page.
    let line = backfill_refused(&stack, &format!("{base}/ui"));
    assert!(line.contains(&format!("{base}/ui is not a TEI server: its /info answered 200 OK (text/html)")), "{line}");
    assert!(line.contains("an HTML page titled \"Grafana\"") && line.contains("check the host and port"), "{line}");
    assert!(!line.contains("dashboard"), "{line}");
    // A 404 page: the same, with its status.
    let line = backfill_refused(&stack, &format!("{base}/gone"));
    assert!(line.contains("is not a TEI server: its /info answered 404 Not Found (text/html)"), "{line}");
    assert!(line.chars().count() < 400, "a line, not a page: {line}");
}
