//! Where an operator reports a failure that must stop the run (a disk full, an unwritable
//! directory, marking that cannot go on): the run polls it between steps and exits with it.

use parking_lot::Mutex;
use std::sync::Arc;

/// The first fatal failure of a run, if any; shared by the operators that can fail and the loop
/// that steps the workers.
pub type Failure = Arc<Mutex<Option<String>>>;
