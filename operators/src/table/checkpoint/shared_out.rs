//! The cluster's output check: recovery and the commit protocol assume every process writes
//! into the one output directory the leading process's checkpoint lists. Before each pass the
//! leader places a marker file in its `--out` ([`OutMarker::place`]); every process waits for it
//! in its own `--out` ([`OutMarker::expect`]) and stops with a clear error if it never appears,
//! before anything is written.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A marker file in the leader's output directory, removed when dropped (at the end of a pass).
pub struct OutMarker {
    /// Its file name, which the other processes look for.
    pub name: String,
    path: PathBuf,
}

impl OutMarker {
    /// How long a process looks for the marker (a shared file system may lag).
    const PATIENCE: Duration = Duration::from_secs(15);

    /// Places the marker of the pass starting at `epoch` in `out`; `None` outside a cluster.
    pub fn place(out: &Path, cluster: bool, epoch: u64) -> Result<Option<OutMarker>> {
        if !cluster {
            return Ok(None);
        }
        let name = format!(".tweet-embed-pass-{epoch}-{}-{}", std::process::id(), fastrand::u64(..));
        let path = out.join(&name);
        std::fs::write(&path, b"tweet-embed: every process of the cluster must see this file in its --out\n")
            .with_context(|| format!("cannot write to --out {}", out.display()))?;
        Ok(Some(OutMarker { name, path }))
    }

    /// Waits up to 15 s for the leader's marker `name` in `out`; the error says what to fix.
    pub fn expect(out: &Path, name: &str) -> std::result::Result<(), String> {
        let deadline = Instant::now() + Self::PATIENCE;
        while !out.join(name).exists() {
            if Instant::now() > deadline {
                return Err(format!(
                    "--out {} is not the directory process 0 writes to (its file {name} is not there after {} s): \
                     every process of a cluster must use one shared --out",
                    out.display(),
                    Self::PATIENCE.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

impl Drop for OutMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
