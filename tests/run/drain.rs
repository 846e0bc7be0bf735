//! SIGTERM ends `tweet-embed run` within `--drain-timeout` whatever hangs: with every TEI
//! endpoint hung, the drain cannot finish, so the process exits 1 after the timeout with a line
//! saying what was still in flight; the checkpoint keeps that safe, and the next run (stopped by a
//! SIGTERM it can drain) exits 0 with every document exactly once.

use super::crash::run_cmd;
use super::workload::remaining;
use dev_tei::FaultConfig;
use std::time::{Duration, Instant};
use test_support::expect::check_run;
use test_support::proc::{terminate, Logged};
use test_support::{Fixture, Seeded, Stack};

#[test]
fn a_drain_that_cannot_finish_exits_non_zero_within_the_timeout_naming_what_was_in_flight() {
    let Fixture { stack, dir: _dir, args, .. } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 2_000, seed: 107 }, 2);
    let tei = stack.tei.as_ref().expect("tei");
    let coll = stack.coll();
    let mut cmd = run_cmd(&args);
    cmd.args(["--drain-timeout", "2s", "--stall-warning", "1s"]);
    let mut run = Logged::spawn(cmd);
    // The backfill is done and the run follows the stream...
    let deadline = Instant::now() + Duration::from_secs(600);
    while stack.rt.block_on(remaining(&coll)) > 0 {
        assert!(Instant::now() < deadline, "the backfill did not finish: {}", run.log());
        assert!(run.proc.0.try_wait().expect("try_wait").is_none(), "run exited early: {}", run.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...when every model request starts to be answered an hour late, and new tweets arrive.
    for gpu in tei.gpus() {
        gpu.set_slow(1.0, Duration::from_secs(3600));
    }
    stack
        .rt
        .block_on(async { coll.insert_many(test_support::synth::tweets(2_000, 2_300, 107)).await })
        .expect("insert");
    let seeded = test_support::Seeded { n: 2_300, seed: 107 };
    // It is stuck with work in flight.
    // (This stall's own reason: a slow commit earlier in the run may have warned already.)
    run.wait_for_line(&["no progress for", "TEI requests are in flight and none finishes"], Duration::from_secs(300));
    terminate(&run.proc.0);
    let (status, log) = run.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{log}");
    let last = test_support::proc::Logged::error_line(&log);
    assert!(
        last.starts_with("tweet-embed: stopped after --drain-timeout 2s with work still in flight: epochs ")
            && last.contains("not yet committed")
            && last.contains("TEI requests in flight"),
        "not the line saying what was in flight: {log}"
    );

    // The GPUs answer again: the next run finishes the job, and a plain SIGTERM drains and exits 0.
    for gpu in tei.gpus() {
        gpu.set_slow(0.0, Duration::ZERO);
    }
    let mut run = Logged::spawn(run_cmd(&args));
    let deadline = Instant::now() + Duration::from_secs(600);
    while stack.rt.block_on(remaining(&coll)) > 0 {
        assert!(Instant::now() < deadline, "the work queue did not drain: {}", run.log());
        assert!(run.proc.0.try_wait().expect("try_wait").is_none(), "run exited early: {}", run.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&run.proc.0);
    let (status, log) = run.finish(Duration::from_secs(120));
    assert!(status.success(), "a drainable SIGTERM: {status:?}\n{log}");
    check_run(&stack, &seeded, &args.out);
}

#[test]
fn one_stop_delivered_twice_at_once_still_drains() {
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 1_000, seed: 109 }, 2);
    let coll = stack.coll();
    let run = Logged::spawn(run_cmd(&args));
    let deadline = Instant::now() + Duration::from_secs(600);
    while stack.rt.block_on(remaining(&coll)) > 0 {
        assert!(Instant::now() < deadline, "the backfill did not finish: {}", run.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // As `timeout` (the process and its group) or a terminal's Ctrl-C deliver it: twice at once.
    terminate(&run.proc.0);
    terminate(&run.proc.0);
    let (status, log) = run.finish(Duration::from_secs(120));
    assert!(status.success(), "one stop, delivered twice: {status:?}\n{log}");
    check_run(&stack, &seeded, &args.out);
}
