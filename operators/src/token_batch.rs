//! `TokenBatch`: packs an epoch's distinct texts into requests a TEI server accepts whole: at
//! most `max_items` inputs (`max_client_batch_size`, or `--batch-size` if smaller), at most
//! `max_tokens` tokens (`max_batch_tokens`, so one request fills at most one server batch), and
//! at most `max_bytes` of JSON (the payload limit). Like TEI's own queue, it is a small component
//! with explicit limits; it never reorders documents across epochs and never drops one.

use crate::record::{EmbedBatch, Work};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::StreamVec;

/// A request's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Inputs per request.
    pub max_items: usize,
    /// Tokens per request.
    pub max_tokens: usize,
    /// JSON bytes per request.
    pub max_bytes: usize,
}

impl BatchLimits {
    /// Groups `items` (tokens, JSON bytes) into consecutive runs within the limits; an item over a
    /// limit on its own still gets a run of one (the server truncates or refuses it).
    pub fn pack(&self, items: impl IntoIterator<Item = (usize, usize)>) -> Vec<usize> {
        let mut sizes = Vec::new();
        let (mut n, mut tokens, mut bytes) = (0usize, 0usize, 0usize);
        for (t, b) in items {
            if n > 0 && (n + 1 > self.max_items || tokens + t > self.max_tokens || bytes + b > self.max_bytes) {
                sizes.push(n);
                (n, tokens, bytes) = (0, 0, 0);
            }
            n += 1;
            tokens += t;
            bytes += b;
        }
        if n > 0 {
            sizes.push(n);
        }
        sizes
    }
}

/// JSON bytes a text takes in a request: escaped length plus quotes and a comma, with margin for
/// escapes of control characters.
pub fn json_bytes(text: &str) -> usize {
    text.len() + text.bytes().filter(|b| *b < 0x20 || *b == b'"' || *b == b'\\').count() * 5 + 3
}

/// Extension trait: packing into requests.
pub trait TokenBatch<'scope> {
    /// Packs jobs into [`EmbedBatch`]es within `limits`; rejections travel in their own batch.
    ///
    /// ```
    /// use tweet_embed_operators::token_batch::BatchLimits;
    /// let limits = BatchLimits { max_items: 2, max_tokens: 100, max_bytes: 1_000 };
    /// assert_eq!(limits.pack([(10, 10), (10, 10), (10, 10)]), vec![2, 1]);
    /// assert_eq!(limits.pack([(60, 10), (60, 10)]), vec![1, 1]);
    /// ```
    fn token_batch(self, limits: BatchLimits) -> StreamVec<'scope, u64, EmbedBatch>;
}

impl<'scope> TokenBatch<'scope> for StreamVec<'scope, u64, Work> {
    fn token_batch(self, limits: BatchLimits) -> StreamVec<'scope, u64, EmbedBatch> {
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
                    let sizes = limits.pack(jobs.iter().map(|j| (j.tokens as usize, json_bytes(&j.text))));
                    let mut rest = jobs.into_iter();
                    for n in sizes {
                        session.give(EmbedBatch { jobs: rest.by_ref().take(n).collect(), rejects: Vec::new() });
                    }
                });
            }
        })
    }
}
