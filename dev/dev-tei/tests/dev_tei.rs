//! The TEI simulator over real HTTP on loopback: routes and shapes, limits and errors, tokenizers,
//! faults, and the GPU queue model. Every vector returned is checked against `embedding_for`.

use std::time::{Duration, Instant};

use base64::Engine;
use dev_tei::{
    embedding_for, embedding_for_ids, estimate_truncate, raw_embedding_for, returns_nan, DevTei, DevTeiError,
    FaultConfig, SimConfig,
};
use futures_util::future::join_all;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tweet_embed_operators::tei::estimate_tokens;

/// A fast simulator: no service time unless a test asks for it.
fn instant() -> SimConfig {
    SimConfig { instant: true, ..SimConfig::default() }
}

async fn start(config: SimConfig) -> (DevTei, String) {
    let tei = DevTei::start(config).await.expect("simulator starts");
    let url = tei.urls()[0].clone();
    (tei, url)
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

async fn post(url: &str, path: &str, body: Value) -> reqwest::Response {
    client().post(format!("{url}{path}")).json(&body).send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> u64 {
    resp.headers()[name].to_str().unwrap().parse().unwrap()
}

/// Texts of every kind the pipeline will send.
fn texts() -> Vec<String> {
    [
        "hello world",
        "Just setting up my twttr",
        "café crème brûlée — ça va?",
        "東京は今日も雨です",
        "Привет, как дела?",
        "مرحبا بالعالم",
        "family: 👨‍👩‍👧 and flags 🇺🇸 👍🏽",
        "e\u{301}\u{301} combining marks\tand\ncontrol \u{7} chars",
        "   leading and trailing spaces   ",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_returns_the_deterministic_vector_of_every_input_with_tei_headers() {
    let (_tei, url) = start(instant()).await;
    let texts = texts();
    let resp = post(&url, "/embed", json!({ "inputs": texts })).await;
    assert_eq!(resp.status(), 200);
    let tokens: u64 = texts.iter().map(|t| estimate_tokens(t) as u64).sum();
    assert_eq!(header(&resp, "x-compute-tokens"), tokens);
    let chars: u64 = texts.iter().map(|t| t.chars().count() as u64).sum();
    assert_eq!(header(&resp, "x-compute-characters"), chars);
    for name in ["x-compute-time", "x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time"] {
        header(&resp, name);
    }
    let vectors: Vec<Vec<f32>> = resp.json().await.unwrap();
    assert_eq!(vectors.len(), texts.len());
    for (text, vector) in texts.iter().zip(&vectors) {
        assert_eq!(vector, &embedding_for(text, 768), "{text:?}");
    }

    // A single string is a list of one vector; normalize and dimensions follow the recipe.
    let one: Vec<Vec<f32>> = post(&url, "/embed", json!({"inputs": "solo"})).await.json().await.unwrap();
    assert_eq!(one, vec![embedding_for("solo", 768)]);
    let raw: Vec<Vec<f32>> =
        post(&url, "/embed", json!({"inputs": ["solo"], "normalize": false})).await.json().await.unwrap();
    assert_eq!(raw, vec![raw_embedding_for("solo", 768)]);
    let small: Vec<Vec<f32>> =
        post(&url, "/embed", json!({"inputs": "solo", "dimensions": 128})).await.json().await.unwrap();
    assert_eq!(small, vec![embedding_for("solo", 128)]);
    let bad = post(&url, "/embed", json!({"inputs": "solo", "dimensions": 769})).await;
    assert_eq!(bad.status(), 422);

    // Token ids: a single list, a batch of lists, mixed with text.
    let ids: Vec<Vec<f32>> = post(&url, "/embed", json!({"inputs": [5, 6, 7]})).await.json().await.unwrap();
    assert_eq!(ids, vec![embedding_for_ids(&[5, 6, 7], 768)]);
    let resp = post(&url, "/embed", json!({"inputs": [[5, 6], "x"]})).await;
    assert_eq!(header(&resp, "x-compute-tokens"), 2 + estimate_tokens("x") as u64);
    let mixed: Vec<Vec<f32>> = resp.json().await.unwrap();
    assert_eq!(mixed, vec![embedding_for_ids(&[5, 6], 768), embedding_for("x", 768)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_route_float_and_base64_decode_to_the_same_vector() {
    let (_tei, url) = start(instant()).await;
    let float = post(&url, "/v1/embeddings", json!({"input": ["a", "b c"], "model": "x"})).await;
    assert_eq!(float.status(), 200);
    let float: Value = float.json().await.unwrap();
    assert_eq!(float["object"], "list");
    assert_eq!(float["model"], "google/embeddinggemma-300m");
    let tokens = estimate_tokens("a") + estimate_tokens("b c");
    assert_eq!(float["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    let b64 = post(&url, "/v1/embeddings", json!({"input": ["a", "b c"], "encoding_format": "base64"})).await;
    let b64: Value = b64.json().await.unwrap();
    for (i, text) in ["a", "b c"].iter().enumerate() {
        let item = &float["data"][i];
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        let floats: Vec<f32> = serde_json::from_value(item["embedding"].clone()).unwrap();
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(b64["data"][i]["embedding"].as_str().unwrap()).unwrap();
        let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(floats, embedding_for(text, 768));
        assert_eq!(decoded, floats);
    }
    let single: Value =
        post(&url, "/v1/embeddings", json!({"input": "a", "dimensions": 64})).await.json().await.unwrap();
    let v: Vec<f32> = serde_json::from_value(single["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(v, embedding_for("a", 64));

    // Errors there are {message, code, type}.
    let err = post(&url, "/v1/embeddings", json!({"input": [""]})).await;
    assert_eq!(err.status(), 400);
    let err: Value = err.json().await.unwrap();
    assert_eq!(err["code"], 400);
    assert_eq!(err["type"], "Empty");
    assert!(err["message"].as_str().unwrap().contains("empty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_health_metrics_tokenize_and_unknown_routes() {
    let (_tei, url) = start(SimConfig { max_batch_requests: Some(64), ..instant() }).await;
    let c = client();
    let info: Value = c.get(format!("{url}/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["model_id"], "google/embeddinggemma-300m");
    assert_eq!(info["model_dtype"], "float16");
    assert_eq!(info["model_type"], json!({"embedding": {"pooling": "mean"}}));
    assert_eq!(info["max_concurrent_requests"], 512);
    assert_eq!(info["max_input_length"], 512);
    assert_eq!(info["max_batch_tokens"], 16384);
    assert_eq!(info["max_batch_requests"], 64);
    assert_eq!(info["max_client_batch_size"], 32);
    assert_eq!(info["auto_truncate"], true);
    assert_eq!(info["version"], "1.9.3");
    assert_eq!(info["served_model_name"], "google/embeddinggemma-300m", "the model id unless told otherwise");
    for key in ["model_sha", "tokenization_workers", "sha", "docker_label"] {
        assert!(info.get(key).is_some(), "{key}");
    }
    let health = c.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.bytes().await.unwrap().is_empty());

    let texts = texts();
    let tokenized: Vec<Vec<Value>> = post(&url, "/tokenize", json!({"inputs": texts})).await.json().await.unwrap();
    let embed = post(&url, "/embed", json!({"inputs": texts})).await;
    let total: usize = tokenized.iter().map(Vec::len).sum();
    assert_eq!(header(&embed, "x-compute-tokens"), total as u64);
    for (text, tokens) in texts.iter().zip(&tokenized) {
        assert_eq!(tokens.len(), estimate_tokens(text));
        assert_eq!(tokens[0]["special"], true);
        assert_eq!(tokens[0]["start"], Value::Null);
        for t in &tokens[1..tokens.len() - 1] {
            let (start, stop) = (t["start"].as_u64().unwrap() as usize, t["stop"].as_u64().unwrap() as usize);
            assert_eq!(t["text"], text[start..stop]);
            assert_eq!(t["special"], false);
        }
    }
    let plain: Vec<Vec<Value>> =
        post(&url, "/tokenize", json!({"inputs": "a b", "add_special_tokens": false})).await.json().await.unwrap();
    assert_eq!(plain[0].len(), 2);

    let metrics = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "te_request_count{method=\"batch\"} ",
        "te_request_success{method=\"batch\"} ",
        "te_embed_count ",
        "te_queue_size ",
        "te_batch_next_size_bucket",
        "te_batch_next_tokens_count",
        "te_request_queue_duration_sum",
        "te_request_inference_duration_count",
    ] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }
    assert!(!metrics.contains("te_request_count_total"));

    assert_eq!(c.get(format!("{url}/nope")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(format!("{url}/embed")).send().await.unwrap().status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_validation_errors_match_tei() {
    let (_tei, url) = start(SimConfig { max_input_length: 16, ..instant() }).await;
    let error = |v: &Value| (v["error"].as_str().unwrap().to_string(), v["error_type"].clone());

    let too_many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let resp = post(&url, "/embed", json!({"inputs": too_many})).await;
    assert_eq!(resp.status(), 422);
    let (msg, kind) = error(&resp.json().await.unwrap());
    assert_eq!(kind, "Validation");
    assert!(msg.contains("batch size 33 > maximum allowed batch size 32"), "{msg}");

    let long = "word ".repeat(40); // 42 estimated tokens
    let resp = post(&url, "/embed", json!({"inputs": ["ok", long], "truncate": false})).await;
    assert_eq!(resp.status(), 422);
    let (msg, kind) = error(&resp.json().await.unwrap());
    assert_eq!(kind, "Validation");
    assert!(msg.contains("must have less than 16 tokens"), "{msg}");

    // Truncation is the default (TEI 1.9 auto-truncate): the vector is of the kept prefix.
    for body in [json!({"inputs": [long]}), json!({"inputs": [long], "truncate": true})] {
        let resp = post(&url, "/embed", body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-compute-tokens"), 16);
        let v: Vec<Vec<f32>> = resp.json().await.unwrap();
        let kept = estimate_truncate(&long, 16);
        assert_eq!(kept, "word ".repeat(14).trim_end());
        assert_eq!(v[0], embedding_for(kept, 768));
    }
    let left = post(
        &url,
        "/embed",
        json!({"inputs": "a1 b2 c3 d4 e5 f6 g7 h8 i9 j10 k11 l12 m13 n14 o15 p16", "truncation_direction": "left"}),
    )
    .await;
    let v: Vec<Vec<f32>> = left.json().await.unwrap();
    assert_eq!(v[0], embedding_for("c3 d4 e5 f6 g7 h8 i9 j10 k11 l12 m13 n14 o15 p16", 768));
    let ids: Vec<u32> = (0..20).collect();
    let resp = post(&url, "/embed", json!({"inputs": ids})).await;
    assert_eq!(header(&resp, "x-compute-tokens"), 16);
    let v: Vec<Vec<f32>> = resp.json().await.unwrap();
    assert_eq!(v[0], embedding_for_ids(&ids[..16], 768));

    for inputs in [json!(""), json!([]), json!(["fine", ""])] {
        let resp = post(&url, "/embed", json!({ "inputs": inputs })).await;
        assert_eq!(resp.status(), 400, "{inputs}");
        assert_eq!(error(&resp.json().await.unwrap()).1, "Empty");
    }

    // Payload limit (default 2,000,000 bytes): 413 in plain text.
    let big = "x".repeat(2_000_100);
    let resp = post(&url, "/embed", json!({ "inputs": big })).await;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await.unwrap().contains("length limit exceeded"));

    // Rejections before the handler follow axum's Json extractor.
    let c = client();
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut req = c.post(format!("{url}/embed")).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    assert_eq!(raw("{not json", Some("application/json")).await.unwrap().status(), 400);
    assert_eq!(raw(r#"{"inputs": 5}"#, Some("application/json")).await.unwrap().status(), 422);
    assert_eq!(raw(r#"{"input": "x"}"#, Some("application/json")).await.unwrap().status(), 422);
    assert_eq!(raw(r#"{"inputs": "x"}"#, None).await.unwrap().status(), 415);

    let metrics = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("te_request_failure{err=\"batch_size\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_are_per_input_and_taken_without_waiting() {
    // Long enough that all 6 arrive while the first two still hold their permits.
    let config = SimConfig { max_concurrent_requests: 8, base: Duration::from_secs(3), ..SimConfig::default() };
    let (_tei, url) = start(config).await;
    // 6 requests of 4 inputs at once: at most 2 hold the 8 permits, the rest get 429 at once.
    let c = client();
    let sends = (0..6).map(|i| {
        let body = json!({"inputs": [format!("a{i}"), "b", "c", "d"]});
        c.post(format!("{url}/embed")).json(&body).send()
    });
    let resps: Vec<_> = join_all(sends).await.into_iter().map(Result::unwrap).collect();
    let ok = resps.iter().filter(|r| r.status() == 200).count();
    let overloaded: Vec<_> = resps.into_iter().filter(|r| r.status() == 429).collect();
    assert!((1..=2).contains(&ok), "{ok} succeeded");
    assert_eq!(ok + overloaded.len(), 6);
    let body: Value = overloaded.into_iter().next().unwrap().json().await.unwrap();
    assert_eq!(body, json!({"error": "Model is overloaded", "error_type": "Overloaded"}));
    let metrics = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("te_request_failure{{err=\"overloaded\"}} {}", 6 - ok)));
    // Permits come back: a 9-input request can never fit, an 8-input one now can.
    let nine: Vec<String> = (0..9).map(|i| i.to_string()).collect();
    assert_eq!(post(&url, "/embed", json!({"inputs": nine})).await.status(), 429);
    assert_eq!(post(&url, "/embed", json!({"inputs": &nine[..8]})).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_model_routes_but_not_health_or_metrics() {
    let (_tei, url) = start(SimConfig { api_key: Some("s3cret".into()), ..instant() }).await;
    let c = client();
    for path in ["/embed", "/v1/embeddings", "/tokenize"] {
        let body = json!({"inputs": "x", "input": "x"});
        let resp = c.post(format!("{url}{path}")).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let wrong = c.post(format!("{url}{path}")).bearer_auth("nope").json(&body).send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let ok = c.post(format!("{url}{path}")).bearer_auth("s3cret").json(&body).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    assert_eq!(c.get(format!("{url}/info")).send().await.unwrap().status(), 401);
    assert_eq!(c.get(format!("{url}/info")).bearer_auth("s3cret").send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{url}/health")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{url}/metrics")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tokenizer_json_counts_truncates_and_tokenizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = test_support::word_tokenizer(dir.path());

    let config = SimConfig { tokenizer: Some(path), max_input_length: 5, ..instant() };
    let (_tei, url) = start(config).await;
    let text = "the cat sat on the mat";
    let tokens: Vec<Vec<Value>> = post(&url, "/tokenize", json!({"inputs": [text, "dog"]})).await.json().await.unwrap();
    let ids: Vec<u64> = tokens[0].iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 3, 4, 5, 6, 3, 7, 2]);
    assert_eq!(tokens[0][0], json!({"id": 1, "text": "[CLS]", "special": true, "start": null, "stop": null}));
    assert_eq!(tokens[0][2], json!({"id": 4, "text": "cat", "special": false, "start": 4, "stop": 7}));
    assert_eq!(tokens[1][1]["id"], 0); // [UNK]

    let resp = post(&url, "/embed", json!({"inputs": ["the cat", text]})).await;
    assert_eq!(header(&resp, "x-compute-tokens"), 4 + 5);
    let v: Vec<Vec<f32>> = resp.json().await.unwrap();
    assert_eq!(v[0], embedding_for("the cat", 768));
    assert_eq!(v[1], embedding_for("the cat sat", 768));
    let left: Vec<Vec<f32>> =
        post(&url, "/embed", json!({"inputs": text, "truncation_direction": "left"})).await.json().await.unwrap();
    assert_eq!(left[0], embedding_for("on the mat", 768));
    let strict = post(&url, "/embed", json!({"inputs": text, "truncate": false})).await;
    assert_eq!(strict.status(), 422);
    let err: Value = strict.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("Given: 8"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_answers_a_seeded_mix_of_503_and_424() {
    let faults = FaultConfig { error_rate: 0.3, ..FaultConfig::default() };
    let (_tei, url) = start(SimConfig { faults, seed: 42, ..instant() }).await;
    let c = client();
    let (mut unhealthy, mut backend, mut ok) = (0, 0, 0);
    for i in 0..200 {
        let resp = c.post(format!("{url}/embed")).json(&json!({"inputs": format!("t{i}")})).send().await.unwrap();
        match resp.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                unhealthy += 1;
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body, json!({"error": "unhealthy", "error_type": "Unhealthy"}));
            }
            StatusCode::FAILED_DEPENDENCY => {
                backend += 1;
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error_type"], "Backend");
            }
            other => panic!("unexpected {other}"),
        }
    }
    let errors = unhealthy + backend;
    assert!((30..=90).contains(&errors), "{errors} errors of 200");
    assert!(unhealthy > 0 && backend > 0);
    assert_eq!(ok + errors, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_slow_answers_and_unhealthy_hooks() {
    let (tei, url) = start(instant()).await;
    let gpu = &tei.gpus()[0];
    let c = client();
    gpu.set_drop_rate(1.0);
    let err = c.post(format!("{url}/embed")).json(&json!({"inputs": "x"})).send().await.unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    gpu.set_drop_rate(0.0);
    assert_eq!(post(&url, "/embed", json!({"inputs": "x"})).await.status(), 200);

    gpu.set_slow(1.0, Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(post(&url, "/embed", json!({"inputs": "x"})).await.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    gpu.set_slow(0.0, Duration::ZERO);

    gpu.set_unhealthy(true);
    let health = c.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"error": "unhealthy", "error_type": "Unhealthy"}));
    assert_eq!(post(&url, "/embed", json!({"inputs": "x"})).await.status(), 503);
    gpu.set_unhealthy(false);
    assert_eq!(c.get(format!("{url}/health")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_goes_down_refusing_connections_and_comes_back_on_the_same_port() {
    let config = SimConfig { gpus: 2, base: Duration::from_millis(500), ..SimConfig::default() };
    let tei = DevTei::start(config).await.unwrap();
    let gpu = tei.gpus()[1].clone();
    let url = gpu.url();
    let c = client();
    // A request in flight when the GPU dies gets no answer.
    let in_flight = tokio::spawn({
        let c = c.clone();
        let url = url.clone();
        async move { c.post(format!("{url}/embed")).json(&json!({"inputs": "x"})).send().await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    gpu.set_down(true).await.unwrap();
    assert!(gpu.is_down());
    assert!(in_flight.await.unwrap().is_err());
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", gpu.port())).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let err = c.get(format!("{url}/health")).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // The other GPU is unaffected.
    assert_eq!(c.get(format!("{}/health", tei.urls()[0])).send().await.unwrap().status(), 200);

    gpu.set_down(false).await.unwrap();
    assert_eq!(gpu.url(), url);
    let resp = c.post(format!("{url}/embed")).json(&json!({"inputs": "back"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Vec<Vec<f32>>>().await.unwrap(), vec![embedding_for("back", 768)]);
    tei.shutdown().await;
}

/// A text of exactly `tokens` estimated tokens (`tokens - 2` four-letter words).
fn doc(tokens: usize, seed: usize) -> String {
    (0..tokens - 2).map(|i| format!("{:04x}", (seed * 7919 + i) % 0xffff)).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_runs_batches_within_budget_at_the_modelled_rate() {
    let config = SimConfig {
        base: Duration::from_millis(20),
        tokens_per_second: 50_000.0,
        max_batch_tokens: 600,
        ..SimConfig::default()
    };
    let (tei, url) = start(config).await;
    let c = client();
    let started = Instant::now();
    let sends = (0..8).map(|r| {
        let docs: Vec<String> = (0..8).map(|d| doc(40, r * 8 + d)).collect();
        c.post(format!("{url}/embed")).json(&json!({ "inputs": docs })).send()
    });
    let resps = join_all(sends).await;
    let elapsed = started.elapsed();
    for (r, resp) in resps.into_iter().enumerate() {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-compute-tokens"), 8 * 40);
        let v: Vec<Vec<f32>> = resp.json().await.unwrap();
        assert_eq!(v[3], embedding_for(&doc(40, r * 8 + 3), 768));
    }
    let stats = tei.gpus()[0].stats();
    assert_eq!(stats.inputs, 64);
    assert_eq!(stats.tokens, 64 * 40);
    // 15 docs of 40 tokens fit 600: at least ceil(64 / 15) = 5 batches, none over budget.
    assert!(stats.batches >= 5, "{stats:?}");
    assert!(stats.max_batch_tokens_seen <= 600, "{stats:?}");
    let modelled = Duration::from_millis(20) * stats.batches as u32 + Duration::from_secs_f64(2560.0 / 50_000.0);
    let diff = stats.busy.abs_diff(modelled);
    assert!(diff < Duration::from_millis(1), "{:?} vs {modelled:?}", stats.busy);
    // One batch at a time: the requests cannot finish before the GPU was busy that long.
    assert!(elapsed >= stats.busy, "{elapsed:?} < {:?}", stats.busy);
    assert_eq!(stats.queue_len, 0);

    let (tei, url) = start(SimConfig { max_batch_requests: Some(4), ..instant() }).await;
    let docs: Vec<String> = (0..10).map(|d| doc(10, d)).collect();
    assert_eq!(post(&url, "/embed", json!({ "inputs": docs })).await.status(), 200);
    let stats = tei.gpus()[0].stats();
    assert_eq!((stats.batches, stats.max_batch_size_seen), (3, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gpu_serves_and_a_taken_port_is_a_clear_error() {
    let tei = DevTei::start(SimConfig { gpus: 3, ..instant() }).await.unwrap();
    let urls = tei.urls();
    assert_eq!(urls.len(), 3);
    for url in &urls {
        assert_eq!(client().get(format!("{url}/health")).send().await.unwrap().status(), 200);
    }
    let taken = tei.gpus()[0].port();
    let err = DevTei::start(SimConfig { gpus: 2, base_port: taken, ..instant() }).await.err().unwrap();
    assert!(matches!(err, DevTeiError::PortInUse { port } if port == taken));
    assert_eq!(err.to_string(), format!("port {taken} is in use: choose another --base-port"));
    let err = DevTei::start(SimConfig { max_input_length: 20_000, ..instant() }).await.err().unwrap();
    assert!(err.to_string().contains("--max-input-length"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_router_and_a_served_model_name_show_in_info() {
    let config =
        SimConfig { served_model_name: Some("gemma".into()), ..SimConfig { instant: true, ..SimConfig::cpu_router() } };
    let (tei, url) = start(config).await;
    let info: Value = client().get(format!("{url}/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["served_model_name"], "gemma");
    assert_eq!(info["model_id"], "google/embeddinggemma-300m");
    // As TEI 1.9.3 on CPU: its candle backend forces 4 inputs a server batch.
    assert_eq!(info["max_batch_requests"], 4);
    assert_eq!(info["model_dtype"], "float32");
    let docs: Vec<String> = (0..10).map(|d| doc(10, d)).collect();
    assert_eq!(post(&url, "/embed", json!({ "inputs": docs })).await.status(), 200);
    let stats = tei.gpus()[0].stats();
    assert_eq!((stats.batches, stats.max_batch_size_seen), (3, 4));
    // An explicit --max-batch-requests wins.
    let (_tei, url) = start(SimConfig { max_batch_requests: Some(8), ..SimConfig::cpu_router() }).await;
    let info: Value = client().get(format!("{url}/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["max_batch_requests"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_refuses_empty_text_as_tei_does() {
    let (_tei, url) = start(instant()).await;
    let empty = json!({"error": "Input validation error: `inputs` cannot be empty", "error_type": "Empty"});
    for inputs in [json!(""), json!([]), json!(["a", ""])] {
        let resp = post(&url, "/tokenize", json!({ "inputs": inputs })).await;
        assert_eq!(resp.status(), 400, "{inputs}");
        assert_eq!(resp.json::<Value>().await.unwrap(), empty, "{inputs}");
    }
    assert_eq!(post(&url, "/tokenize", json!({"inputs": " "})).await.status(), 200, "whitespace is text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_errors_name_the_field_as_tei_does() {
    let (_tei, url) = start(instant()).await;
    let c = client();
    let raw = |path: &'static str, body: &'static str| {
        c.post(format!("{url}{path}")).header("content-type", "application/json").body(body).send()
    };
    let resp = raw("/embed", r#"{"inputs": ["a""#).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.unwrap(),
        "Failed to parse the request body as JSON: inputs: EOF while parsing a list at line 1 column 15"
    );
    let resp = raw("/v1/embeddings", r#"{"input": "x", "encoding_format": "hex"}"#).await.unwrap();
    assert_eq!(resp.status(), 422);
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(
            "Failed to deserialize the JSON body into the target type: encoding_format: unknown variant `hex`, \
             expected `float` or `base64`"
        ),
        "{text}"
    );
    let resp = raw("/embed", r#"{"inputs": "x", "truncate": "yes"}"#).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains(": truncate: invalid type: string"));
    // An error about the body as a whole names no field.
    let resp = raw("/embed", r#"{"input": "x"}"#).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp
        .text()
        .await
        .unwrap()
        .starts_with("Failed to deserialize the JSON body into the target type: missing field `inputs`"));
    let resp = raw("/embed", r#"{"inputs": "x"} x"#).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().starts_with("Failed to parse the request body as JSON: trailing characters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_are_pinned_to_tei_1_9_3s() {
    // Compared against a real TEI 1.9.3 router with the same requests: statuses and bodies.
    let (_tei, url) = start(SimConfig { max_input_length: 256, auto_truncate: false, ..instant() }).await;
    let c = client();
    let native = |error: &str, kind: &str| json!({"error": error, "error_type": kind});
    let openai = |message: &str, code: u16, kind: &str| json!({"message": message, "code": code, "type": kind});
    let empty = "Input validation error: `inputs` cannot be empty";
    let batch = "batch size 33 > maximum allowed batch size 32";
    let too_many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let long = "word ".repeat(300);
    let tokens = estimate_tokens(&long);
    let too_long = format!("Input validation error: `inputs` must have less than 256 tokens. Given: {tokens}");
    // The character cap with truncation off: max_input_length × 250 = 64,000.
    let chars = "a".repeat(64_001);
    let too_many_chars = "Input validation error: `inputs` must have less than 64000 characters. Given: 64001";
    let cases = [
        ("/embed", json!({"inputs": []}), 400, native(empty, "Empty")),
        ("/embed", json!({"inputs": ["ok", ""]}), 400, native(empty, "Empty")),
        ("/embed", json!({ "inputs": too_many }), 422, native(batch, "Validation")),
        ("/embed", json!({ "inputs": [long], "truncate": false }), 422, native(&too_long, "Validation")),
        ("/embed", json!({ "inputs": [chars], "truncate": false }), 422, native(too_many_chars, "Validation")),
        ("/v1/embeddings", json!({"input": []}), 400, openai(empty, 400, "Empty")),
        ("/v1/embeddings", json!({ "input": too_many }), 422, openai(batch, 422, "Validation")),
        ("/v1/embeddings", json!({ "input": [long] }), 422, openai(&too_long, 422, "Validation")),
    ];
    for (path, body, status, expected) in cases {
        let resp = post(&url, path, body.clone()).await;
        assert_eq!(resp.status(), status, "{path} {body}");
        assert_eq!(resp.json::<Value>().await.unwrap(), expected, "{path} {body}");
    }
    // Plain-text rejections before the handler: payload limit and content type, both routes.
    for path in ["/embed", "/v1/embeddings"] {
        let big = "x".repeat(2_000_100);
        let resp = post(&url, path, json!({ "inputs": big, "input": big })).await;
        assert_eq!(resp.status(), 413);
        assert_eq!(resp.text().await.unwrap(), "Failed to buffer the request body: length limit exceeded");
        let resp = c.post(format!("{url}{path}")).body(r#"{"inputs": "x", "input": "x"}"#).send().await.unwrap();
        assert_eq!(resp.status(), 415);
        assert_eq!(resp.text().await.unwrap(), "Expected request with `Content-Type: application/json`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nan_fault_returns_nan_vectors_for_its_texts_on_both_routes() {
    let faults = FaultConfig { nan_rate: 0.3, ..FaultConfig::default() };
    let (tei, url) = start(SimConfig { faults, ..instant() }).await;
    let texts: Vec<String> = (0..40).map(|i| format!("text {i}")).collect();
    let nan: Vec<bool> = texts.iter().map(|t| returns_nan(t, 0.3)).collect();
    assert!(nan.iter().any(|n| *n) && nan.iter().any(|n| !n));
    // JSON: NaN is written as null, as serde_json (and so TEI) writes it.
    let resp = post(&url, "/embed", json!({ "inputs": texts[..32] })).await;
    assert_eq!(resp.status(), 200);
    let body: Vec<Value> = resp.json::<Value>().await.unwrap().as_array().unwrap().clone();
    for (i, vector) in body.iter().enumerate() {
        let vector = vector.as_array().unwrap();
        assert_eq!(vector.len(), 768);
        if nan[i] {
            assert!(vector.iter().all(Value::is_null), "{i}");
        } else {
            let v: Vec<f32> = vector.iter().map(|x| x.as_f64().unwrap() as f32).collect();
            assert_eq!(v, embedding_for(&texts[i], 768), "{i}");
        }
    }
    // Base64: the little-endian bytes of NaN.
    let resp = post(&url, "/v1/embeddings", json!({"input": texts[..32], "encoding_format": "base64"})).await;
    let body: Value = resp.json().await.unwrap();
    for (i, item) in body["data"].as_array().unwrap().iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(item["embedding"].as_str().unwrap()).unwrap();
        let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(v.len(), 768);
        assert_eq!(v.iter().all(|x| x.is_nan()), nan[i], "{i}");
    }
    // The hook turns it off; the same texts are numbers again.
    tei.gpus()[0].set_nan_rate(0.0);
    let vectors: Vec<Vec<f32>> = post(&url, "/embed", json!({ "inputs": texts[..8] })).await.json().await.unwrap();
    for (text, v) in texts.iter().zip(&vectors) {
        assert_eq!(v, &embedding_for(text, 768));
    }
}
