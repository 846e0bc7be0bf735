//! Vectors that are not numbers, at the pool: each is its input's rejection with the reason, the
//! rest of the answer is kept, both routes, and the endpoint is named in one WARN (rate-limited),
//! read from the log as an operator would. A test binary of its own: it installs the process's
//! log subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dev_tei::{embedding_for, returns_nan, DevTei, FaultConfig, SimConfig};
use tweet_embed_operators::tei::{Api, EndpointPool, PoolConfig};

/// Everything logged, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_vector_is_its_inputs_rejection_and_the_endpoint_is_named_once() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this binary");

    let rate = 0.1;
    let faults = FaultConfig { nan_rate: rate, ..FaultConfig::default() };
    let tei =
        DevTei::start(SimConfig { faults, base: Duration::from_millis(1), ..SimConfig::default() }).await.unwrap();
    let url = tei.urls()[0].clone();
    let texts: Vec<String> = (0..300).map(|i| format!("tweet number {i}")).collect();
    let nan = texts.iter().filter(|t| returns_nan(t, rate)).count();
    assert!(nan >= 10, "{nan}");
    for api in [Api::Tei, Api::OpenAi] {
        let pool = EndpointPool::connect(PoolConfig { api, ..PoolConfig::new([url.clone()]) }).await.unwrap();
        let outcomes = pool.embed(texts.clone()).await;
        for (text, outcome) in texts.iter().zip(&outcomes) {
            match outcome {
                Err(reason) if returns_nan(text, rate) => {
                    assert_eq!(reason, "the server returned a vector with NaN components", "{api:?}")
                }
                Ok(v) if !returns_nan(text, rate) => assert_eq!(v, &embedding_for(text, 768), "{api:?}"),
                other => panic!("{api:?}: {text:?} got {other:?}"),
            }
        }
        let stats = pool.stats();
        assert_eq!((stats.invalid_vectors, stats.rejected_inputs), (nan as u64, nan as u64), "{api:?}");
        assert_eq!(stats.embedded_inputs, (texts.len() - nan) as u64, "{api:?}");
        assert_eq!(stats.endpoints[0].invalid_vectors, nan as u64);
        assert_eq!((stats.retries, stats.endpoints[0].breaker_opened), (0, 0), "{api:?}: {stats:?}");
    }
    let logged = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8");
    let warnings: Vec<&str> = logged.lines().filter(|l| l.contains("returned vectors that are not usable")).collect();
    // One per endpoint and pool per 10 s, however many came back: loud, not a flood.
    assert_eq!(warnings.len(), 2, "{logged}");
    for line in warnings {
        assert!(line.contains("WARN") && line.contains(&url), "{line}");
        assert!(line.contains("the server returned a vector with NaN components"), "{line}");
    }
}
