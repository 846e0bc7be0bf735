//! `TokenBatch`: packs an epoch's distinct texts into requests a TEI server accepts whole, within
//! [`PackLimits`]: at most `max_client_batch_size` inputs (or `--batch-size`), at most
//! `max_batch_tokens` tokens (so one request fills at most one server batch), and at most the
//! payload limit of JSON. It never moves a document across epochs and never drops one.

use crate::record::{EmbedBatch, Work};
use crate::tei::{json_string_len, PackLimits};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::StreamVec;

/// Extension trait: packing into requests.
pub trait TokenBatch<'scope> {
    /// Packs jobs into [`EmbedBatch`]es within `limits`; rejections travel in their own batch.
    ///
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Event;
    /// use tweet_embed_operators::record::*;
    /// use tweet_embed_operators::tei::PackLimits;
    /// use tweet_embed_operators::token_batch::TokenBatch;
    /// let job = |t: &str| Work::Job(TextJob { text_hash: 0, text: t.into(), tokens: 60, docs: vec![] });
    /// let limits = PackLimits { max_items: 32, max_tokens: 100, max_bytes: 2_000_000 };
    /// let out = timely::example(move |scope| vec![job("a"), job("b")].to_stream(scope).token_batch(limits).capture());
    /// let batches: Vec<EmbedBatch> = out.try_iter().flat_map(|e| match e { Event::Messages(_, d) => d, _ => vec![] }).collect();
    /// assert_eq!(batches.len(), 2); // 60 + 60 tokens do not fit one 100-token request
    /// ```
    fn token_batch(self, limits: PackLimits) -> StreamVec<'scope, u64, EmbedBatch>;
}

impl<'scope> TokenBatch<'scope> for StreamVec<'scope, u64, Work> {
    fn token_batch(self, limits: PackLimits) -> StreamVec<'scope, u64, EmbedBatch> {
        self.unary(Pipeline, "TokenBatch", move |_cap, _info| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let mut jobs = Vec::new();
                    let mut rejects = Vec::new();
                    for w in data.flat_map(|d| d.drain(..)) {
                        match w {
                            Work::Job(j) => jobs.push(j),
                            Work::Reject(r) => rejects.push(r),
                        }
                    }
                    let mut session = output.session(&cap);
                    if !rejects.is_empty() {
                        session.give(EmbedBatch { jobs: Vec::new(), rejects });
                    }
                    let ranges = limits.pack(jobs.iter().map(|j| (j.tokens, json_string_len(&j.text))));
                    let mut rest = jobs.into_iter();
                    for r in ranges {
                        session.give(EmbedBatch { jobs: rest.by_ref().take(r.len()).collect(), rejects: Vec::new() });
                    }
                });
            }
        })
    }
}
