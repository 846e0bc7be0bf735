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
        .args(["--target-file-bytes", &args.target_file_bytes.to_string()])
        .args(["--max-file-age", &format!("{}ms", args.max_file_age.as_millis())])
        .args(["--delete-within", &format!("{}ms", args.delete_within.as_millis())]);
    if let Some(dir) = &args.staging_dir {
        c.arg("--staging-dir").arg(dir);
    }
    let o = &args.tei.options;
    if let Some(p) = &o.prompt_name {
        c.args(["--prompt-name", p]);
    }
    if let Some(d) = o.dimensions {
        c.args(["--dimensions", &d.to_string()]);
    }
    if let Some(n) = o.normalize {
        c.args(["--normalize", &n.to_string()]);
    }
    if let Some(t) = o.truncation_direction {
        c.args(["--truncation-direction", &t.to_string()]);
    }
    if let Some(id_type) = args.id_type {
        c.args(["--id-type", id_type.as_str()]);
    }
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    c
}

/// A child whose stderr (its log) is collected as it runs, for tests that wait for a line and
/// assert on what a user reads.
pub struct Logged {
    /// The child.
    pub proc: Proc,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Logged {
    /// Spawns `cmd` with its stderr piped into the collected log.
    pub fn spawn(mut cmd: std::process::Command) -> Logged {
        use std::io::BufRead;
        let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().expect("log");
                l.push_str(&line);
                l.push('\n');
            }
        });
        Logged { proc: Proc(child), log, reader: Some(reader) }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Waits, at most `limit`, until the log has a line containing every one of `parts`; panics
    /// with the log otherwise (or if the child exits first).
    pub fn wait_for_line(&mut self, parts: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            if let Some(status) = self.proc.0.try_wait().expect("try_wait") {
                // Its last lines may still be in the pipe: read them all before judging.
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                let log = self.log();
                if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                    return line.to_string();
                }
                panic!("the process exited ({status:?}) before logging {parts:?}:\n{log}");
            }
            assert!(Instant::now() < deadline, "no line with {parts:?} in {limit:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The error line a failed command ends with (`tweet-embed: …`), the last one if several:
    /// other threads may still log a WARN after it.
    pub fn error_line(log: &str) -> &str {
        log.lines().rev().find(|l| l.starts_with("tweet-embed: ")).unwrap_or_default()
    }

    /// Waits for the exit, at most `limit`; returns its status and the whole log.
    pub fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let status = self.proc.wait_for(limit);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.log())
    }
}
