//! A MongoDB election during a backfill: writes and reads fail with NotWritablePrimary (10107) or
//! InterruptedDueToReplStateChange (11602), labelled `RetryableWriteError`, for longer than the
//! driver's own single retry covers (dev-mongo's `failCommand` fail point, 40 times). Marking,
//! the scan and the counts must ride it out with a WARN naming what waits and why, and the one
//! run finishes exactly once. An error that cannot heal ends the run with one readable line.

use super::crash::backfill_cmd;
use dev_mongo::faults::FailPoint;
use dev_tei::FaultConfig;
use std::time::Duration;
use test_support::expect::check_run;
use test_support::proc::Logged;
use test_support::{Fixture, Seeded, Stack};

/// Backfills 3,000 documents with 2 workers in one process while `commands` fail 40 times with `code`; returns
/// the run's log and the failures it left unused, after asserting it finished exactly once.
fn backfill_through_an_election(commands: &[&str], code: i32, name: &str, seed_no: u64) -> String {
    let (log, left) = backfill_through(3_000, 2, commands, code, name, seed_no);
    assert_eq!(left, 0, "the run met all 40 failures, more than the driver's own retry covers");
    log
}

/// The same with `n` documents and `workers` workers.
fn backfill_through(n: u64, workers: usize, commands: &[&str], code: i32, name: &str, seed_no: u64) -> (String, u32) {
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n, seed: seed_no }, workers);
    stack.mongo.set_fail_point(Some(FailPoint {
        times: 40,
        code: Some(code),
        labels: vec!["RetryableWriteError".into()],
        commands: commands.iter().map(|c| c.to_string()).collect(),
        close_connection: false,
    }));
    let mut cmd = backfill_cmd(&args);
    // Short waits between tries, so 40 failures take seconds, not minutes.
    cmd.args(["--mongo-retry-max", "50ms"]);
    let (status, log) = Logged::spawn(cmd).finish(Duration::from_secs(600));
    // How many failures the run did not use up (a lost cursor's scan may finish early); they
    // must not fail the check's own reads.
    let left = stack.mongo.with_store(|s| s.fail.take()).map_or(0, |f| f.times);
    assert!(status.success(), "the run did not ride out the election: {status:?}\n{log}");
    let warned = log.lines().any(|l| l.contains("WARN") && l.contains("waits for MongoDB") && l.contains(name));
    assert!(warned, "no WARN naming what waits for {name}:\n{log}");
    assert!(!log.contains("RawDocumentBuf"), "a raw dump in the log:\n{log}");
    check_run(&stack, &seeded, &args.out);
    (log, left)
}

#[test]
fn marking_rides_out_an_election() {
    let log = backfill_through_an_election(&["update"], 11602, "InterruptedDueToReplStateChange (11602)", 97);
    assert!(
        log.contains("marking documents embedded waits for MongoDB")
            || log.contains("marking documents rejected waits for MongoDB"),
        "{log}"
    );
}

#[test]
fn scanning_rides_out_an_election() {
    backfill_through_an_election(&["find", "getMore"], 10107, "NotWritablePrimary (10107)", 98);
}

#[test]
fn counting_rides_out_an_election() {
    backfill_through_an_election(&["aggregate", "count"], 11602, "InterruptedDueToReplStateChange (11602)", 99);
}

#[test]
fn an_error_that_cannot_heal_ends_the_run_with_one_readable_line() {
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 2_000, seed: 103 }, 2);
    // No permission to write: retrying cannot help.
    stack.mongo.set_fail_point(Some(FailPoint {
        times: 1,
        code: Some(13),
        labels: Vec::new(),
        commands: vec!["update".into()],
        close_connection: false,
    }));
    let (status, log) = Logged::spawn(backfill_cmd(&args)).finish(Duration::from_secs(600));
    assert_eq!(status.code(), Some(1), "{log}");
    let last = test_support::proc::Logged::error_line(&log);
    assert!(
        last.starts_with("tweet-embed: marking epoch ") && last.contains("Unauthorized (13)"),
        "not one readable line: {log}"
    );
    assert!(!log.contains("RawDocumentBuf") && !log.contains("server response"), "a raw dump:\n{log}");
    // The next run re-marks the committed epoch and finishes exactly once.
    let (status, log) = Logged::spawn(backfill_cmd(&args)).finish(Duration::from_secs(600));
    assert!(status.success(), "{log}");
    check_run(&stack, &seeded, &args.out);
}

#[test]
fn a_lost_cursor_is_resumed_and_said_in_words() {
    // The server forgets the scan's cursor (a restart, a failover): CursorNotFound on getMore.
    // One worker and enough documents that a partition spans more than one batch of 1,000.
    let (log, _) = backfill_through(15_000, 1, &["getMore"], 43, "CursorNotFound (43)", 109);
    assert!(log.contains("scanning the work queue"), "{log}");
}
