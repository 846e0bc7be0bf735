//! Where an operator reports a failure that must stop the run (a disk full, an unwritable
//! directory, marking that cannot go on): the run polls it between steps and exits with it.

use parking_lot::Mutex;
use std::sync::Arc;

/// The first fatal failure of a run, if any; shared (a clone is the same slot) by the operators
/// that can fail and the loop that steps the workers. Only the first report is kept: a later
/// one is usually a consequence of it (a worker stopping because another did).
#[derive(Clone, Debug, Default)]
pub struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    /// Reports `why`, unless a failure was reported before (that one stays). True if this is
    /// the first.
    pub fn report(&self, why: impl Into<String>) -> bool {
        let mut first = self.0.lock();
        if first.is_some() {
            return false;
        }
        *first = Some(why.into());
        true
    }

    /// Whether a failure was reported.
    pub fn is_set(&self) -> bool {
        self.0.lock().is_some()
    }

    /// The first failure reported, if any.
    pub fn first(&self) -> Option<String> {
        self.0.lock().clone()
    }

    /// Takes the first failure out, leaving none.
    pub fn take(&self) -> Option<String> {
        self.0.lock().take()
    }
}

/// Writes `line` and a newline to stderr, ignoring a failed write: `eprintln!` panics when stderr
/// is a closed pipe (`tweet-embed run | head`), which would turn an error line into a panic, or
/// kill the thread that wanted to report one.
pub fn to_stderr(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

#[cfg(test)]
mod tests {
    use super::Failure;

    #[test]
    fn the_first_failure_is_kept() {
        let failure = Failure::default();
        let other = failure.clone();
        assert!(!failure.is_set());
        assert!(failure.report("disk full"));
        assert!(!other.report("a worker stopped because another did"));
        assert_eq!(other.first().as_deref(), Some("disk full"));
        assert_eq!(failure.take().as_deref(), Some("disk full"));
        assert!(!other.is_set());
    }
}
