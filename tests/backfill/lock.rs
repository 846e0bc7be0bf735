//! Two runs on one state directory (a service plus a manual start, a restart script that does not
//! wait): the second refuses at once with one line naming the first's pid, touching nothing, and
//! the first finishes exactly once.

use super::crash::backfill_cmd;
use dev_tei::FaultConfig;
use std::process::Stdio;
use std::time::{Duration, Instant};
use test_support::expect::check_run;
use test_support::proc::Proc;
use test_support::{Fixture, Seeded, Stack};
use tweet_embed_operators::run::Engine;
use tweet_embed_operators::table::checkpoint::{StateLock, LOCK_FILE};

#[test]
fn a_second_run_on_the_same_state_dir_is_refused_naming_the_first() {
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 20_000, seed: 83 }, 2);
    let mut first = Proc(backfill_cmd(&args).spawn().expect("spawn the first run"));
    let pid = first.0.id();
    let tei = stack.tei.as_ref().expect("tei");
    // The first run holds the lock and is embedding: its pid is in the lock file and the GPUs
    // have seen its requests.
    let deadline = Instant::now() + Duration::from_secs(120);
    let lock_file = args.state_dir.join(LOCK_FILE);
    loop {
        let holder = std::fs::read_to_string(&lock_file).unwrap_or_default();
        if holder.contains(&format!("pid={pid} ")) && stack.gpu_inputs() > 0 {
            break;
        }
        assert!(first.0.try_wait().expect("try_wait").is_none(), "the first run ended before it got going");
        assert!(Instant::now() < deadline, "the first run never took the lock and started embedding");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every GPU goes away so the first run cannot finish while the second tries to start.
    stack.rt.block_on(async {
        for gpu in tei.gpus() {
            gpu.set_down(true).await.expect("down");
        }
    });
    let before: Vec<_> = std::fs::read_dir(&args.out).expect("out").flatten().map(|e| e.file_name()).collect();
    let mut second = backfill_cmd(&args);
    second.stderr(Stdio::piped());
    let mut second = Proc(second.spawn().expect("spawn the second run"));
    let status = second.wait_for(Duration::from_secs(60));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert_eq!(status.code(), Some(1), "the second run must fail: {stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("tweet-embed: ") && line.contains(&format!("pid {pid} on host")) && line.contains("in use"),
        "not one line naming the first run: {stderr}"
    );
    assert!(first.0.try_wait().expect("try_wait").is_none(), "the refused run disturbed the first");
    let after: Vec<_> = std::fs::read_dir(&args.out).expect("out").flatten().map(|e| e.file_name()).collect();
    assert!(before.iter().all(|f| after.contains(f)), "the refused run removed the first run's files");
    stack.rt.block_on(async {
        for gpu in tei.gpus() {
            gpu.set_down(false).await.expect("up");
        }
    });
    let status = first.wait_for(Duration::from_secs(600));
    assert!(status.success(), "the first run: {status:?}");
    check_run(&stack, &seeded, &args.out);
}

#[test]
fn a_held_lock_stops_the_engine_before_it_connects() {
    let Fixture { stack, dir: _dir, args, .. } = Fixture::unseeded(Stack::start(1, FaultConfig::default()), 1);
    let held = StateLock::acquire(&args.state_dir).expect("lock");
    let err = Engine::connect(args.clone()).and_then(Engine::backfill).expect_err("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("pid {} on host", std::process::id())) && msg.contains("in use"), "{msg}");
    drop(held);
    // With the lock free the same run goes ahead (an empty queue: it ends at once).
    stack.rt.block_on(test_support::create_indexes(&stack.mongo)).expect("indexes");
    let summary = Engine::connect(args).and_then(Engine::backfill).expect("runs once the lock is free");
    assert_eq!(summary.embedded + summary.rejected, 0);
}
