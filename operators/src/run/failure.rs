//! Where an operator reports a failure that must stop the run (a disk full, an unwritable
//! directory, marking that cannot go on): the run polls it between steps and exits with it.

use parking_lot::Mutex;
use std::sync::Arc;

/// The first fatal failure of a run, if any; shared by the operators that can fail and the loop
/// that steps the workers.
pub type Failure = Arc<Mutex<Option<String>>>;

/// Writes `line` and a newline to stderr, ignoring a failed write: `eprintln!` panics when stderr
/// is a closed pipe (`tweet-embed run | head`), which would turn an error line into a panic, or
/// kill the thread that wanted to report one.
pub fn to_stderr(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}
