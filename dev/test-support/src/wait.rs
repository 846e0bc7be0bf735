//! Bounded waits for tests: every wait on a server ends by itself, with what it waited for in the
//! panic message (and a child's log, when there is one), never a hang.

use std::time::{Duration, Instant};

use crate::proc::Logged;

/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(100);

/// Waits until `done`, at most `limit`; panics naming `what` otherwise. Returns how long it took.
pub fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(POLL);
    }
    start.elapsed()
}

/// [`until`] while `child` runs: panics with the child's log if it does not happen within `limit`
/// or if the child exits first.
pub fn until_while_running(
    what: &str,
    limit: Duration,
    child: &mut Logged,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}\n{}", child.log());
        if let Ok(Some(status)) = child.proc.0.try_wait() {
            panic!("the process exited ({status:?}) before {what}:\n{}", child.log());
        }
        std::thread::sleep(POLL);
    }
    start.elapsed()
}
