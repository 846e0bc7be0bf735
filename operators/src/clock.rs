//! The process's two clocks, and which one each kind of reading uses.
//!
//! - [`wall_ms`]: the system clock (`CLOCK_REALTIME`), ms since the Unix epoch. For stamps that
//!   people or other processes read (the checkpoint's `updated_at_ms`, status's rate history, a
//!   lock's `since_ms`) and for comparing with MongoDB cluster times. NTP corrections and VM
//!   restores step it, backwards too.
//! - [`steady_ms`]: ms on a clock that never steps: the wall clock read once, at the first call in
//!   this process, advanced by `std::time::Instant` (`CLOCK_MONOTONIC`) since. Every interval and
//!   deadline in this crate runs on it (`--max-file-age`, `--delete-within`, an epoch's age), so a
//!   wall-clock step in either direction neither stalls nor storms them (issue 18, item 5).
//!
//! A `steady_ms` stamp persisted by an earlier process (a staged file's `staged_at_ms`) is
//! comparable with this process's readings up to any wall-clock step between the two processes'
//! starts: a stamp ahead of [`steady_ms`] means the clock stepped back across a restart, and its
//! readers treat its age as unknown and due (see `compaction::policy::pick`).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on the system clock (0 if the clock is before it).
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Milliseconds since the Unix epoch as the wall clock read at this process's first call, plus
/// the monotonic time elapsed since. Never goes backwards and never jumps within a process.
pub fn steady_ms() -> i64 {
    static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();
    let (at, wall) = ANCHOR.get_or_init(|| (Instant::now(), wall_ms()));
    wall.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_never_goes_backwards_and_starts_at_the_wall_clock() {
        let first = steady_ms();
        let wall = wall_ms();
        assert!((wall - first).abs() < 60_000, "anchored at the wall clock: {first} vs {wall}");
        let mut last = first;
        for _ in 0..1000 {
            let t = steady_ms();
            assert!(t >= last);
            last = t;
        }
    }
}
