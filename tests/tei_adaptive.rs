//! The pool's adaptive concurrency, circuit breaker, transport and metrics against the simulator
//! over real HTTP on loopback. Outcomes only, never timing: the machine is shared and noisy.

use std::time::{Duration, Instant};

use dev_tei::{DevTei, SimConfig};
use test_support::embedded::assert_all_embedded;
use test_support::gpu::Gpu;
use test_support::texts;
use tweet_embed_operators::tei::{Api, BreakerState, Concurrency, EndpointPool, PoolConfig};

/// GPUs slow enough that requests queue (a 32-text request of short texts takes ~5 ms).
const GPU: Gpu = Gpu { base: Duration::from_millis(2), tokens_per_second: 200_000.0 };

fn config(urls: Vec<String>) -> PoolConfig {
    PoolConfig {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(200),
        ..PoolConfig::new(urls)
    }
}

/// Runs `embed` calls of 32 texts, `concurrent` at a time, until `done` says stop (bounded by
/// `max_rounds`); every outcome is checked.
async fn backlog(pool: &EndpointPool, concurrent: usize, max_rounds: usize, done: impl Fn() -> bool) -> usize {
    let mut rounds = 0;
    while rounds < max_rounds && !done() {
        let calls: Vec<_> = (0..concurrent)
            .map(|c| {
                let pool = pool.clone();
                let texts = texts::tagged(32, &format!("r{rounds}c{c}"));
                tokio::spawn(async move {
                    let outcomes = pool.embed(texts.clone()).await;
                    assert_all_embedded(&texts, &outcomes);
                })
            })
            .collect();
        for call in calls {
            call.await.expect("embed call");
        }
        rounds += 1;
    }
    rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limit_grows_under_a_backlog_and_the_metrics_say_so() {
    // Server batches of 512 tokens: one 32-text request fills the token floor (1.25 batches), so
    // the latency rule alone decides past one request in flight.
    let tei = DevTei::start(SimConfig { max_batch_tokens: 512, ..GPU.sim(2) }).await.unwrap();
    let pool = EndpointPool::connect(config(tei.urls())).await.unwrap();
    let start = pool.stats();
    assert!(start.endpoints.iter().all(|e| e.adaptive && e.concurrency_limit == 1), "{:?}", start.endpoints);
    // The permits allow 512 / 32 = 16 requests of 32 per endpoint.
    assert_eq!(pool.max_in_flight(), 32);
    let grew = || pool.stats().endpoints.iter().all(|e| e.concurrency_limit >= 2);
    backlog(&pool, 48, 200, grew).await;
    let stats = pool.stats();
    for (endpoint, gpu) in stats.endpoints.iter().zip(tei.stats()) {
        assert!(endpoint.concurrency_limit >= 2 && endpoint.concurrency_limit <= 16, "{endpoint:?}");
        assert_eq!((endpoint.in_flight, endpoint.outstanding_tokens), (0, 0));
        assert!(endpoint.latency_p50 > Duration::ZERO && endpoint.latency_p50 <= endpoint.latency_p95);
        assert!(endpoint.latency_p95 <= endpoint.latency_p99);
        assert!(endpoint.tokens > 0 && endpoint.embedded_inputs > 0);
        assert!(endpoint.errors_by_cause.is_empty() && endpoint.breaker == BreakerState::Closed);
        // The simulator served what the pool counted, plus the start-up probe.
        assert_eq!(gpu.inputs, endpoint.embedded_inputs + 1);
    }
    assert_eq!(pool.stats().retries, 0);

    // Pinned: the limit stays where it was put.
    let pinned =
        EndpointPool::connect(PoolConfig { concurrency: Concurrency::Fixed(3), ..config(tei.urls()) }).await.unwrap();
    backlog(&pinned, 16, 3, || false).await;
    assert!(pinned.stats().endpoints.iter().all(|e| !e.adaptive && e.concurrency_limit == 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_that_dies_and_comes_back_loses_nothing_and_serves_again() {
    let tei = DevTei::start(GPU.sim(3)).await.unwrap();
    let pool = EndpointPool::connect(config(tei.urls())).await.unwrap();
    let gpu = tei.gpus()[1].clone();
    // Work is running when GPU 1 dies.
    let texts_all = texts::tagged(6000, "outage");
    let run = tokio::spawn({
        let (pool, texts) = (pool.clone(), texts_all.clone());
        async move { pool.embed(texts).await }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while gpu.stats().inputs < 50 {
        assert!(Instant::now() < deadline, "GPU 1 never got work");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gpu.set_down(true).await.unwrap();
    // Its breaker opens: out of rotation while the others carry the run.
    while pool.stats().endpoints[1].breaker_opened == 0 {
        assert!(Instant::now() < deadline, "breaker never opened");
        let more = texts::tagged(64, "while-down");
        assert_all_embedded(&more, &pool.embed(more.clone()).await);
    }
    // A batch the GPU cut before it went down still finishes and counts: wait until it has.
    let mut served_while_down = gpu.stats().inputs;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = gpu.stats().inputs;
        if now == served_while_down {
            break;
        }
        served_while_down = now;
        assert!(Instant::now() < deadline, "GPU 1 kept counting inputs while down");
    }
    let more = texts::tagged(500, "down");
    assert_all_embedded(&more, &pool.embed(more.clone()).await);
    assert_eq!(gpu.stats().inputs, served_while_down, "a dead GPU serves nothing");
    gpu.set_down(false).await.unwrap();
    let outcomes = run.await.unwrap();
    assert_all_embedded(&texts_all, &outcomes);

    // Back in rotation: probed, its breaker closes, and it embeds again.
    let deadline = Instant::now() + Duration::from_secs(120);
    while gpu.stats().inputs == served_while_down || pool.stats().endpoints[1].breaker != BreakerState::Closed {
        assert!(Instant::now() < deadline, "GPU 1 never used again");
        let more = texts::tagged(256, "after");
        assert_all_embedded(&more, &pool.embed(more.clone()).await);
    }
    let stats = pool.stats();
    let endpoint = &stats.endpoints[1];
    assert!(endpoint.breaker_opened >= 1 && endpoint.breaker_closed >= 1, "{endpoint:?}");
    assert!(endpoint.errors_by_cause.keys().any(|c| c == "connect" || c == "connection"), "{endpoint:?}");
    assert_eq!(stats.rejected_inputs, 0);
    for other in [0, 2] {
        assert_eq!(stats.endpoints[other].breaker_opened, 0, "healthy endpoints stay in rotation");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_endpoints_breaker_opens_then_closes_when_it_recovers() {
    let tei = DevTei::start(GPU.sim(2)).await.unwrap();
    let pool = EndpointPool::connect(config(tei.urls())).await.unwrap();
    let sick = tei.gpus()[0].clone();
    sick.set_unhealthy(true);
    let deadline = Instant::now() + Duration::from_secs(120);
    // 503 after 503: three in a row open it; its work goes to GPU 1 meanwhile.
    while pool.stats().endpoints[0].breaker_opened == 0 {
        assert!(Instant::now() < deadline, "breaker never opened");
        let more = texts::tagged(64, "sick");
        assert_all_embedded(&more, &pool.embed(more.clone()).await);
    }
    assert_ne!(pool.stats().endpoints[0].breaker, BreakerState::Closed);
    assert!(pool.stats().endpoints[0].errors_by_cause.get("503").is_some_and(|&n| n >= 3));
    sick.set_unhealthy(false);
    let before = sick.stats().inputs;
    while pool.stats().endpoints[0].breaker_closed == 0 || sick.stats().inputs == before {
        assert!(Instant::now() < deadline, "breaker never closed");
        let more = texts::tagged(64, "healed");
        assert_all_embedded(&more, &pool.embed(more.clone()).await);
    }
    assert_eq!(pool.stats().endpoints[0].breaker, BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_vectors_equal_json_ones_and_auto_picks_base64_where_it_can() {
    let tei = DevTei::start(SimConfig { api_key: Some("k3y".into()), ..GPU.sim(2) }).await.unwrap();
    let keyed = PoolConfig { api_key: Some("k3y".into()), ..config(tei.urls()) };
    let json = EndpointPool::connect(PoolConfig { api: Api::Tei, ..keyed.clone() }).await.unwrap();
    let base64 = EndpointPool::connect(PoolConfig { api: Api::OpenAi, ..keyed.clone() }).await.unwrap();
    let auto = EndpointPool::connect(keyed.clone()).await.unwrap();
    assert_eq!((json.api(), base64.api(), auto.api()), (Api::Tei, Api::OpenAi, Api::OpenAi));
    let texts = texts::tagged(300, "transport");
    let from_json = json.embed(texts.clone()).await;
    let from_base64 = base64.embed(texts.clone()).await;
    assert_all_embedded(&texts, &from_json);
    assert!(from_json == from_base64, "base64 vectors differ from JSON ones");
    assert!(auto.embed(texts.clone()).await == from_json);

    // The key reached the server: without it, the same server refuses the pool.
    let err = EndpointPool::connect(config(tei.urls())).await.err().expect("refused without the key");
    assert!(err.to_string().contains("API key") && !err.to_string().contains("k3y"), "{err}");
    assert!(!format!("{keyed:?}").contains("k3y"));

    // A server that does not truncate on its own: the OpenAI route cannot ask it to, so auto
    // keeps the native route, which can.
    let strict = DevTei::start(SimConfig { auto_truncate: false, ..GPU.sim(1) }).await.unwrap();
    let pool = EndpointPool::connect(config(strict.urls())).await.unwrap();
    assert_eq!(pool.api(), Api::Tei);
    let long = vec![format!("long {}", "many words ".repeat(400))];
    assert!(pool.embed(long).await[0].is_ok(), "the native route truncates");
}
