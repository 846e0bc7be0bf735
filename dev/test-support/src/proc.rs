//! Child processes for tests that run `tweet-embed` (or dev-mongo) in processes of their own: a
//! free loopback port, a child killed when the test ends however it ends, SIGTERM.

use std::process::Child;
use std::time::{Duration, Instant};

/// A loopback port free now (the OS picks it; free until someone binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits for the exit, at most `limit`.
    pub fn wait_for(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process {} did not exit in {limit:?}", self.0.id());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGTERM, as systemd stops the service.
pub fn terminate(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0, "SIGTERM");
}

/// `bin` (the `tweet-embed` binary: `env!("CARGO_BIN_EXE_tweet-embed")` in its tests) running
/// `command` (`backfill` or `run`) with `args`' connection, paths and workers, a 200 ms
/// checkpoint interval, output discarded.
pub fn pipeline_cmd(bin: &str, command: &str, args: &tweet_embed_operators::run::RunConfig) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.arg(command)
        .args(["--mongo-uri", &args.mongo.uri, "--db", &args.mongo.db, "--collection", &args.mongo.collection])
        .args(["--tei-urls", &args.tei.urls.join(",")])
        .arg("--out")
        .arg(&args.out)
        .arg("--state-dir")
        .arg(&args.state_dir)
        .arg("--tmp-dir")
        .arg(&args.tmp_dir)
        .args(["--workers", &args.workers.to_string(), "--checkpoint-interval", "200ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}
