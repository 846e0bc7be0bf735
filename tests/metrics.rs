//! `--metrics-addr` during a run: `/metrics` scraped over HTTP parses as OpenMetrics text with
//! the Prometheus project's own parser, and its counters equal the run's summary.

#[allow(dead_code)]
use dev_tei::FaultConfig;
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};
use test_support::{seed, Fixture, Seeded, Stack};
use tweet_embed_operators::dataflow::epoch_clock::StopSignal;
use tweet_embed_operators::run::Continuous;

/// Samples of a scrape: `name{k=v,...}` → value, parsed by Python's prometheus_client.
fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let body = reqwest::blocking_get(addr);
    let py = std::env::var("TWEET_EMBED_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/check_metrics.py");
    let mut child = std::process::Command::new(&py)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics (run .ci/run to install it):\n{}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let mut labels: Vec<String> = v["labels"]
            .as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        labels.sort();
        let key = format!("{}{{{}}}", v["name"].as_str().expect("name"), labels.join(","));
        samples.insert(key, v["value"].as_f64().expect("value"));
    }
    samples
}

mod reqwest {
    /// A plain HTTP/1.1 GET of /metrics (the test's own client, not the exporter's code).
    pub fn blocking_get(addr: std::net::SocketAddr) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("response");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or_default();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        }
    }

    fn dechunk(body: &str) -> String {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else { return body.to_string() };
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    }
}

#[test]
fn metrics_during_a_run_match_its_summary() {
    // 5% errors, and 1% of texts get an all-NaN vector.
    let stack = Stack::start(2, FaultConfig { error_rate: 0.05, nan_rate: 0.01, ..FaultConfig::default() });
    let seeded = seed(&stack.mongo, 5_000, 61);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut config = stack.args(dir.path(), 2);
    // Compaction during the run: staged files merge once 200 ms old.
    config.max_file_age = Duration::from_millis(200);
    let stop = StopSignal::default();
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            tweet_embed::session::execute(config, Some(addr), |e| e.continuous(Continuous::default(), stop))
        })
    };
    // Scrape while it works, then once everything is committed.
    let deadline = Instant::now() + Duration::from_secs(600);
    let eligible = seeded.eligible() as f64;
    let last = loop {
        assert!(Instant::now() < deadline, "the run did not finish");
        assert!(!handle.is_finished(), "run exited early");
        std::thread::sleep(Duration::from_millis(200));
        // The exporter starts after the run has connected; until then the connection is refused.
        if std::net::TcpStream::connect(addr).is_err() {
            continue;
        }
        let samples = scrape(addr);
        let done = samples.get("tweet_embed_documents_total{outcome=embedded}").copied().unwrap_or(0.0)
            + samples.get("tweet_embed_documents_total{outcome=rejected}").copied().unwrap_or(0.0);
        let compacted = samples.get("tweet_embed_compactions_total{}").copied().unwrap_or(0.0);
        let staged = samples.get("tweet_embed_staged_files{}").copied().unwrap_or(f64::MAX);
        if done >= eligible && compacted >= 1.0 && staged == 0.0 {
            break samples;
        }
    };
    stop.stop();
    let summary = handle.join().expect("thread").expect("run");
    assert_eq!(last["tweet_embed_documents_total{outcome=embedded}"], summary.embedded as f64);
    assert_eq!(last["tweet_embed_documents_total{outcome=rejected}"], summary.rejected as f64);
    assert_eq!(last["tweet_embed_tokens_total{}"], summary.tokens as f64);
    assert_eq!(last["tweet_embed_files_total{}"], summary.files as f64);
    let by_reason: f64 = last.iter().filter(|(k, _)| k.starts_with("tweet_embed_rejects_total{")).map(|(_, v)| v).sum();
    assert_eq!(by_reason, summary.rejected as f64, "rejections by reason add up");
    assert!(last["tweet_embed_parquet_bytes_total{}"] > 0.0);
    // Everything staged was compacted into --out, and the counters say so.
    assert_eq!(last["tweet_embed_compactions_total{}"], summary.compaction.compactions as f64);
    assert!(last["tweet_embed_compaction_bytes_total{}"] > 0.0);
    assert_eq!(last["tweet_embed_staged_bytes{}"], 0.0);
    assert_eq!(last["tweet_embed_deletions_pending{}"], 0.0);
    assert!(last["tweet_embed_frontier_epoch{}"] >= 1.0);
    // Both endpoints served, and the simulator's injected errors show up as retries.
    for url in stack.tei.as_ref().expect("tei").urls() {
        let key = format!("tweet_embed_tei_requests_total{{endpoint={url}}}");
        assert!(last.get(&key).copied().unwrap_or(0.0) > 0.0, "{key} in {last:?}");
    }
    let retries: f64 =
        last.iter().filter(|(k, _)| k.starts_with("tweet_embed_tei_retries_total")).map(|(_, v)| v).sum();
    assert!(retries > 0.0, "5% injected errors must be retried: {last:?}");
    // Vectors that are not numbers: counted per endpoint, their documents rejected with the reason.
    let invalid: f64 = last
        .iter()
        .filter(|(k, _)| k.starts_with("tweet_embed_tei_invalid_vectors_total{endpoint="))
        .map(|(_, v)| v)
        .sum();
    assert!(invalid > 0.0, "1% NaN texts: {last:?}");
    let nan_rejects = "tweet_embed_rejects_total{reason=the server returned a vector with NaN components}";
    assert!(last.get(nan_rejects).copied().unwrap_or(0.0) > 0.0, "{last:?}");
}

#[test]
fn a_stalled_run_says_why_every_period_and_exports_the_stalled_time() {
    use dev_mongo::faults::FailPoint;
    use test_support::proc::{free_port, pipeline_cmd, Logged};
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 2_000, seed: 67 }, 2);
    // An election that does not end until the test says so: marking waits on it.
    stack.mongo.set_fail_point(Some(FailPoint {
        times: u32::MAX,
        code: Some(10107),
        labels: vec!["RetryableWriteError".into()],
        commands: vec!["update".into()],
        close_connection: false,
    }));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut cmd = pipeline_cmd(env!("CARGO_BIN_EXE_tweet-embed"), "backfill", &args);
    cmd.args(["--stall-warning", "1s", "--mongo-retry-max", "200ms", "--metrics-addr", &addr.to_string()]);
    let mut run = Logged::spawn(cmd);
    // The WARN names what waits (marking an epoch's embedded or rejected documents) and why.
    let line = run.wait_for_line(
        &["WARN", "no progress for", "marking documents", "waits on MongoDB", "NotWritablePrimary (10107)"],
        Duration::from_secs(300),
    );
    assert!(line.contains("electing a primary"), "{line}");
    let stalled = scrape(addr)["tweet_embed_stalled_seconds{}"];
    assert!(stalled >= 1.0, "stalled {stalled} s after a stall warning");
    // The election ends: the same run goes on and finishes exactly once.
    stack.mongo.set_fail_point(None);
    let (status, log) = run.finish(Duration::from_secs(600));
    assert!(status.success(), "{log}");
    test_support::expect::check_run(&stack, &seeded, &args.out);
}

#[test]
fn a_total_tei_outage_is_a_stall_and_the_metric_says_so() {
    // The only TEI server dies mid-run (a real TEI 1.9.3 killed for 40 s used to leave
    // tweet_embed_stalled_seconds at 0: requests waiting for an endpoint were not pending work).
    use test_support::proc::{free_port, pipeline_cmd, Logged};
    let sim = dev_tei::SimConfig { gpus: 1, tokens_per_second: 20_000.0, seed: 7, ..dev_tei::SimConfig::default() };
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start_with(sim), Seeded { n: 3_000, seed: 71 }, 2);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut cmd = pipeline_cmd(env!("CARGO_BIN_EXE_tweet-embed"), "backfill", &args);
    cmd.args(["--stall-warning", "1s", "--metrics-addr", &addr.to_string()]);
    let mut run = Logged::spawn(cmd);
    run.wait_for_line(&["TEI endpoints ready"], Duration::from_secs(120));
    let gpu = stack.tei.as_ref().expect("tei").gpus()[0].clone();
    stack.rt.block_on(gpu.set_down(true)).expect("down");
    let line = run
        .wait_for_line(&["WARN", "no progress for", "every TEI endpoint is out of rotation"], Duration::from_secs(300));
    assert!(line.contains("requests wait for one"), "{line}");
    let metrics = scrape(addr);
    assert!(metrics["tweet_embed_stalled_seconds{}"] >= 1.0, "{metrics:?}");
    assert!(metrics["tweet_embed_tei_requests_waiting{}"] >= 1.0, "{metrics:?}");
    // The server comes back: the same run finishes exactly once.
    stack.rt.block_on(gpu.set_down(false)).expect("up");
    let (status, log) = run.finish(Duration::from_secs(600));
    assert!(status.success(), "{log}");
    test_support::expect::check_run(&stack, &seeded, &args.out);
}
