//! A child process's own peak resident memory, for benchmarks that run the binary as a child.
//! `ru_maxrss` would also count the parent's pages the child shares between fork and exec (the
//! in-process dev servers' whole database); `VmHWM` belongs to the address space exec created.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Samples `/proc/<pid>/status` every 50 ms until the child exits; `finish` gives its peak.
pub struct PeakRss {
    peak_kib: Arc<AtomicI64>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling `pid`.
    pub fn watch(pid: u32) -> PeakRss {
        let peak_kib = Arc::new(AtomicI64::new(0));
        let peak = peak_kib.clone();
        let thread = std::thread::spawn(move || {
            while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                let kib = status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<i64>().ok());
                match kib {
                    Some(k) => peak.fetch_max(k, Ordering::Relaxed),
                    None => break, // exited (a zombie has no address space)
                };
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        PeakRss { peak_kib, thread }
    }

    /// The peak in KiB, once the child has exited (call after waiting for it).
    pub fn finish(self) -> i64 {
        let _ = self.thread.join();
        self.peak_kib.load(Ordering::Relaxed)
    }
}
