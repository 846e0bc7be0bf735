//! The start of most pipeline tests: the dev stack, a seeded work queue, a scratch directory and
//! the run's settings in it.

use tempfile::TempDir;
use tweet_embed_operators::run::RunConfig;

use crate::seed::{seed, Seeded};
use crate::Stack;

/// A [`Stack`] with its work queue, a scratch directory and the run's settings against both.
/// Destructure it, binding `dir` (as `_dir` when unused): the directory is removed when `dir` is
/// dropped, so a pattern that leaves it out (`..` or `dir: _`) removes it at once.
///
/// ```no_run
/// use test_support::{Fixture, Seeded, Stack};
/// let Fixture { stack, seeded, dir, args } =
///     Fixture::new(Stack::start(2, dev_tei::FaultConfig::default()), Seeded { n: 1_000, seed: 7 }, 2);
/// ```
pub struct Fixture {
    /// dev-mongo and the simulated GPUs.
    pub stack: Stack,
    /// What the work queue holds ([`Seeded`] with `n` 0 for [`Fixture::unseeded`]).
    pub seeded: Seeded,
    /// The scratch directory that holds `--out`, `--state-dir` and `--tmp-dir`.
    pub dir: TempDir,
    /// The run's settings: [`Stack::args`] in `dir`.
    pub args: RunConfig,
}

impl Fixture {
    /// `stack` with tweets `0..queue.n` of `queue.seed` and the indexes ([`seed`]), a fresh
    /// scratch directory, and `workers` workers' settings in it.
    pub fn new(stack: Stack, queue: Seeded, workers: usize) -> Fixture {
        let seeded = seed(&stack.mongo, queue.n, queue.seed);
        Self::in_dir(stack, seeded, workers)
    }

    /// [`Fixture::new`] without seeding: the collection and its indexes are the test's to make.
    pub fn unseeded(stack: Stack, workers: usize) -> Fixture {
        Self::in_dir(stack, Seeded { n: 0, seed: 0 }, workers)
    }

    fn in_dir(stack: Stack, seeded: Seeded, workers: usize) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = stack.args(dir.path(), workers);
        Fixture { stack, seeded, dir, args }
    }
}
