//! [`CommitHistory`]: how many documents the pipeline marked, and when, for `status` to tell the
//! rate at the first look without watching. It is saved in the checkpoint file beside the
//! protocol state ([`super::Checkpoint`]) but is no part of it: recovery and the commit never
//! read it, and losing it loses a rate, never a row.

/// Commits kept in a [`CommitHistory`].
pub const RECENT_COMMITS: usize = 64;

/// The marks of the last [`RECENT_COMMITS`] commits of a state directory, all runs together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitHistory {
    documents_marked: u64,
    recent: Vec<(i64, u64)>,
}

impl CommitHistory {
    /// A history of `documents_marked` documents in all, and `recent` commits as
    /// `(ms since the Unix epoch, documents marked in all by then)`, oldest first; only the last
    /// [`RECENT_COMMITS`] are kept.
    pub fn new(documents_marked: u64, mut recent: Vec<(i64, u64)>) -> Self {
        let excess = recent.len().saturating_sub(RECENT_COMMITS);
        recent.drain(..excess);
        CommitHistory { documents_marked, recent }
    }

    /// Documents marked through this state directory, all runs together.
    pub fn documents_marked(&self) -> u64 {
        self.documents_marked
    }

    /// `(ms since the Unix epoch, documents marked in all by then)` at each of the last
    /// [`RECENT_COMMITS`] commits, oldest first.
    pub fn recent(&self) -> &[(i64, u64)] {
        &self.recent
    }

    /// Counts `n` more documents marked at `at_ms` (ms since the Unix epoch).
    pub(super) fn note_marked(&mut self, n: u64, at_ms: i64) {
        self.documents_marked += n;
        self.recent.push((at_ms, self.documents_marked));
        let excess = self.recent.len().saturating_sub(RECENT_COMMITS);
        self.recent.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_keeps_the_last_commits_and_counts_them_all() {
        let mut h = CommitHistory::default();
        for i in 0..(RECENT_COMMITS as i64 + 6) {
            h.note_marked(10, i * 1000);
        }
        assert_eq!(h.documents_marked(), 10 * (RECENT_COMMITS as u64 + 6));
        assert_eq!(h.recent().len(), RECENT_COMMITS);
        assert_eq!(h.recent()[0], (6_000, 70));
        assert_eq!(h.recent().last(), Some(&((RECENT_COMMITS as i64 + 5) * 1000, h.documents_marked())));
        let long: Vec<(i64, u64)> = (0..100).map(|i| (i, i as u64)).collect();
        assert_eq!(CommitHistory::new(99, long).recent().first(), Some(&(36, 36)));
    }
}
