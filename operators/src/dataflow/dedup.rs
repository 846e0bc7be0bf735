//! `Dedup`: identical texts within an epoch are embedded once. Candidates are exchanged by text
//! hash, so every copy of a text meets on one worker; when the epoch is complete there, each
//! distinct text leaves as one [`TextJob`] listing every document that carries it. Candidates
//! without a usable text leave as rejections. It counts no tokens: the request batcher does, once
//! per distinct text.
//!
//! It holds one epoch's candidates at a time per worker (bounded by the source's pacing) and
//! never drops a document: every input id leaves in a job or a rejection.

use crate::dataflow::record::{text_hash, Candidate, Rejection, TextJob, Work};
use std::collections::HashMap;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// Extension trait: dedup of identical texts per epoch.
pub trait Dedup<'scope> {
    /// Groups identical texts of each epoch into one job; rejects candidates without text.
    ///
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    /// use tweet_embed_operators::dataflow::dedup::Dedup;
    /// use tweet_embed_operators::dataflow::record::{Candidate, DocMeta, Origin, Work};
    /// let doc = |id: &str, text: &str| Candidate {
    ///     doc: DocMeta { id: id.into(), lang: None, created_at_ms: None, origin: Origin::Backfill },
    ///     text: Ok(text.into()),
    /// };
    /// let out = timely::example(move |scope| {
    ///     vec![doc("a", "same"), doc("b", "same"), doc("c", "other")]
    ///         .to_stream(scope)
    ///         .dedup()
    ///         .capture()
    /// });
    /// let jobs: Vec<Work> = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => vec![] }).collect();
    /// assert_eq!(jobs.len(), 2);
    /// ```
    fn dedup(self) -> StreamVec<'scope, u64, Work>;
}

struct EpochStash {
    cap: Capability<u64>,
    jobs: HashMap<u64, TextJob>,
    rejects: Vec<Rejection>,
}

impl<'scope> Dedup<'scope> for StreamVec<'scope, u64, Candidate> {
    fn dedup(self) -> StreamVec<'scope, u64, Work> {
        let route = |c: &Candidate| match &c.text {
            Ok(t) => text_hash(t),
            Err(_) => text_hash(&c.doc.id),
        };
        self.unary_frontier(Exchange::new(route), "Dedup", move |_cap, _info| {
            let mut stash: HashMap<u64, EpochStash> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(c) = cap.retain_least(0) else { return };
                    let entry = stash.entry(*c.time()).or_insert_with(|| EpochStash {
                        cap: c,
                        jobs: HashMap::new(),
                        rejects: Vec::new(),
                    });
                    for cand in data.flat_map(|d| d.drain(..)) {
                        match cand.text {
                            Ok(text) => {
                                let h = text_hash(&text);
                                match entry.jobs.get_mut(&h) {
                                    // Same hash, same text: one more document for the job. A hash
                                    // collision with a different text keeps its own job.
                                    Some(job) if job.text == text => job.docs.push(cand.doc),
                                    Some(_) => {
                                        let h2 = h ^ text_hash(&cand.doc.id).rotate_left(17);
                                        entry.jobs.insert(h2, TextJob { text_hash: h, text, docs: vec![cand.doc] });
                                    }
                                    None => {
                                        entry.jobs.insert(h, TextJob { text_hash: h, text, docs: vec![cand.doc] });
                                    }
                                }
                            }
                            Err(reason) => entry.rejects.push(Rejection { doc: cand.doc, reason }),
                        }
                    }
                });
                let mut done: Vec<u64> = stash.keys().copied().filter(|t| !frontier.less_equal(t)).collect();
                done.sort_unstable();
                for t in done {
                    if let Some(s) = stash.remove(&t) {
                        let mut session = output.session(&s.cap);
                        session.give_iterator(s.jobs.into_values().map(Work::Job));
                        session.give_iterator(s.rejects.into_iter().map(Work::Reject));
                    }
                }
            }
        })
    }
}
