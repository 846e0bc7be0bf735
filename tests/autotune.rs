//! `tweet-embed autotune` against the TEI simulator over loopback: the binary prints the old
//! table and a recommendation, and writes it as TOML; the recommended row meets the SLO with
//! zero errors and is the fastest that does.

use std::process::Command;
use std::time::Duration;

use dev_tei::DevTei;
use test_support::gpu::Gpu;
use tweet_embed::autotune::sweep;
use tweet_embed_operators::run::autotune::recommend;
use tweet_embed_operators::tei::PoolConfig;

/// Two fast simulated GPUs: the sweep's settings differ in latency, never in errors.
const GPU: Gpu = Gpu { base: Duration::from_millis(2), tokens_per_second: 400_000.0 };

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("sample tweet {i}: the match went to extra time and we lost it 😭 #{}", i % 7)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recommended_setting_meets_the_slo_with_zero_errors() {
    let tei = DevTei::start(GPU.sim(2)).await.unwrap();
    let texts = texts(400);
    let settings = [(8, 1), (8, 4), (32, 1), (32, 4)];
    let bar = indicatif::ProgressBar::hidden();
    let rows = sweep(&PoolConfig::new(tei.urls()), &texts, &settings, &bar).await.unwrap();
    assert_eq!(rows.len(), 4);
    for (row, &(batch, concurrency)) in rows.iter().zip(&settings) {
        assert_eq!((row.batch_size, row.concurrency, row.errors), (batch, concurrency, 0), "{row:?}");
        assert!(row.docs_per_s > 0.0 && row.tokens_per_s > row.docs_per_s && row.p50 <= row.p95, "{row:?}");
        // Texts of nearly one length: little padding, and never more real tokens than computed.
        assert!(row.real_share.is_some_and(|s| (0.8..=1.0).contains(&s)), "{row:?}");
    }
    // Every text went through each setting once, plus one probe per endpoint per pool.
    let served: u64 = tei.stats().iter().map(|s| s.inputs).sum();
    assert_eq!(served, 4 * 400 + 4 * 2);
    let slo = Duration::from_secs(30);
    let best = recommend(&rows, slo).expect("a generous SLO is met");
    assert!(best.p95 <= slo && best.errors == 0);
    assert!(rows.iter().filter(|r| r.p95 <= slo && r.errors == 0).all(|r| r.docs_per_s <= best.docs_per_s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_the_table_and_writes_the_toml() {
    let tei = DevTei::start(GPU.sim(2)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (file, toml) = (dir.path().join("texts.txt"), dir.path().join("tune.toml"));
    std::fs::write(&file, texts(200).join("\n")).unwrap();
    let urls = tei.urls().join(",");
    let autotune = |sweep: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tweet-embed"));
        c.args(["autotune", "--tei-urls", &urls, "--texts-file"]).arg(&file).args(sweep);
        tokio::task::spawn_blocking(move || c.output())
    };
    let sweep = ["--batch-sizes", "8,32", "--concurrency", "1,2", "--p95-slo", "30s", "--write"];
    let out = autotune(&[&sweep[..], &[toml.to_str().unwrap()]].concat()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let header = "Batch Size Concurrency    Docs/s      Tok/s  p50 (s)  p95 (s)  Errors Total Time (s)";
    assert!(stdout.starts_with(header), "{stdout}");
    assert_eq!(stdout.lines().skip(1).take_while(|l| !l.is_empty()).count(), 4, "{stdout}");
    let recommended = stdout.lines().find(|l| l.starts_with("Recommended: batch size ")).expect("a recommendation");
    let written = std::fs::read_to_string(&toml).unwrap();
    let keys: Vec<&str> = written.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(keys.len(), 2, "{written}");
    let batch = keys[0].strip_prefix("batch_size = ").expect("batch_size first");
    let concurrency = keys[1].strip_prefix("concurrency = ").expect("concurrency second");
    assert!(
        recommended.contains(&format!("batch size {batch}, concurrency {concurrency} per endpoint")),
        "{recommended}"
    );

    // The run's embedding options reach every request of the sweep.
    let with_options = ["--batch-sizes", "8", "--concurrency", "1", "--prompt-name", "document", "--dimensions", "256"];
    let out = autotune(&with_options).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = tei.options_seen();
    let prompted = dev_tei::Received {
        prompt_name: Some("document".into()),
        dimensions: Some(256),
        normalize: Some(true),
        truncation_direction: None,
    };
    assert!(seen.get(&prompted).copied().unwrap_or(0) >= 25, "200 texts in batches of 8 carried them: {seen:?}");

    // Nothing meets an impossible SLO: a clear error, no file.
    let impossible = ["--batch-sizes", "8", "--concurrency", "1", "--p95-slo", "1ms"];
    let out = autotune(&impossible).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no setting met p95 <= 1ms"), "{stderr}");
}
