//! A write that fails on hot storage (here: a file-size limit, so writes fail as on a full disk)
//! stops the run with a one-line error naming what failed; the checkpoint stays valid and the
//! next run, with room again, ends exactly once.

use super::crash::backfill_cmd;
use dev_tei::FaultConfig;
use std::os::unix::process::CommandExt;
use test_support::expect::check_run;
use test_support::{Fixture, Seeded, Stack};
use tweet_embed_operators::table::checkpoint::CheckpointStore;

#[test]
fn a_failed_write_stops_cleanly_and_a_restart_finishes_exactly_once() {
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 6_000, seed: 71 }, 2);
    let mut cmd = backfill_cmd(&args);
    cmd.stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Writes past 256 KiB fail with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 256 * 1024, rlim_max: libc::RLIM_INFINITY };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("backfill with a file-size limit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run cannot have written 6,000 vectors in 256 KiB files");
    assert!(!err.contains("panicked"), "{err}");
    let last = test_support::proc::Logged::error_line(&err);
    assert!(last.starts_with("tweet-embed: ") && last.contains("too large"), "not a clear one-line error: {err}");
    // The checkpoint is whole, and the restart with room finishes the job exactly once.
    CheckpointStore::open(&args.state_dir).expect("state dir").load().expect("readable checkpoint");
    let st = backfill_cmd(&args).status().expect("restart");
    assert!(st.success());
    check_run(&stack, &seeded, &args.out);
}
