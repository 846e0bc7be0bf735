//! [`StateLock`]: one run per state directory. A run takes an exclusive lock on
//! `<state-dir>/tweet-embed.lock` before it touches anything (recovery, the checkpoint, files
//! being written) and holds it until it ends; a second run on the same directory refuses to
//! start with one line naming the holder's pid and host.
//!
//! Without it, a second run's recovery removes the first run's files in flight as "stale", both
//! embed the same documents, and a file move of one racing the other's recovery can delete
//! committed rows whose documents are then marked: lost output.
//!
//! The lock is the OS's (`flock(2)` through [`std::fs::File::try_lock`]): it belongs to the open
//! file, so it dies with the process however the process ends — a SIGKILLed run never leaves a
//! stale lock behind, and the file's presence means nothing by itself. The holder writes its pid
//! and host into the file only so that the refusal can name it. On a network file system where
//! `flock` is not shared between machines, give every machine its own state directory (a
//! cluster's processes each have their own `--state-dir`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in a state directory.
pub const LOCK_FILE: &str = "tweet-embed.lock";

/// An exclusive lock on a state directory, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Locks `dir` (created if needed) for this process, or says who holds it: "--state-dir X is
    /// in use by another tweet-embed run (pid P on host H) …". Never waits.
    pub fn acquire(dir: &Path) -> Result<StateLock, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create --state-dir {}: {e}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        // Never truncated before the lock is ours: the holder's pid stays readable.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(format!(
                    "--state-dir {} is in use by another tweet-embed run ({}): stop that run first, or give this \
                     one its own --state-dir and --out (two runs on one state directory would embed the same \
                     documents twice and could delete each other's committed files)",
                    dir.display(),
                    describe_holder(&holder)
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock {} (is the file system read-only?): {e}", path.display()))
            }
        }
        let me = format!("pid={} host={} since_ms={}\n", std::process::id(), hostname(), crate::clock::wall_ms());
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|()| file.flush());
        if let Err(e) = written {
            return Err(format!("cannot write the lock file {}: {e}", path.display()));
        }
        Ok(StateLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `pid P on host H` from what a holder wrote, or why it cannot be told.
fn describe_holder(text: &str) -> String {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    match (field("pid"), field("host")) {
        (Some(pid), Some(host)) => format!("pid {pid} on host {host}"),
        (Some(pid), None) => format!("pid {pid}"),
        // It locked the file a moment ago and has not written it yet.
        _ => "a process that is just starting; its pid is not written yet".to_string(),
    }
}

/// This machine's name, for the refusal to name the holder's host.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).expect("first");
        let err = StateLock::acquire(dir.path()).expect_err("second");
        assert!(err.contains(&format!("pid {} on host {}", std::process::id(), hostname())), "{err}");
        assert!(err.contains("in use by another tweet-embed run"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        drop(first);
        let again = StateLock::acquire(dir.path()).expect("free again once dropped");
        assert_eq!(again.path(), dir.path().join(LOCK_FILE));
    }

    #[test]
    fn holders_are_described() {
        assert_eq!(describe_holder("pid=12 host=box since_ms=1\n"), "pid 12 on host box");
        assert!(describe_holder("").contains("just starting"));
    }
}
