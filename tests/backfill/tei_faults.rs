//! Real-world TEI faults through the whole backfill (issue 12): a server whose permits hold fewer
//! inputs than a request. Each run must
//! end, on its own, with every eligible document embedded exactly once or rejected with its reason.

use std::sync::mpsc;
use std::time::Duration;

use dev_tei::SimConfig;
use test_support::expect::check_run;
use test_support::{seed, Stack};
use tweet_embed_operators::run::{Engine, RunConfig, Summary};
use tweet_embed_operators::tei::{Concurrency, PoolStats};

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
        let stack = Stack::start_with(tight(permits, items));
        let seeded = seed(&stack.mongo, 400, 3);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = stack.args(dir.path(), 2);
        args.tei.concurrency = concurrency;
        let (summary, stats) = backfill_within_limit(args.clone());
        check_run(&stack, &seeded, &args.out);
        assert_eq!(summary.embedded as usize + summary.rejected as usize, seeded.eligible(), "{case}");
        // Requests fit the permits: the server never had to refuse one for want of them.
        assert_eq!(stats.retries_by_cause.get("429"), None, "{case}: {stats:?}");
        assert_eq!(stats.endpoints[0].breaker_opened, 0, "{case}: {stats:?}");
    }
}
