//! Request batching: the one place where texts are cut into TEI requests, and in what order.
//!
//! Like TEI's own router (`core/src/queue.rs`), one small component owns the cut: greedy, a
//! request closed before the text that would take it past a limit. The limits ([`PackLimits`])
//! come from the servers' `GET /info` (`max_client_batch_size`, `max_batch_tokens`) and the
//! payload limit (`--payload-limit`, 2,000,000 bytes by default).
//!
//! ## Why texts are cut in length order
//! TEI's queue holds single inputs, first in, first out, and for a padded model (Gemma3 —
//! EmbeddingGemma — on every device, every model without a flash variant, every CPU backend) a
//! server batch grows while `(n + 1) × longest ≤ max_batch_tokens` and computes `n × longest`
//! tokens (TEI 1.9 `core/src/queue.rs`, `queue_blocking_task`; `notes/tei.md`). Tweets in arrival
//! order (p50 ~27 tokens, p99 ~130) make most of that padding. So [`WaitingTexts`](super::WaitingTexts) holds the texts
//! not yet sent and cuts each request from neighbouring lengths ([`RequestOrder::Length`], the
//! default): what waits at an endpoint is of similar lengths and a server batch pads little.
//! The sweep runs across epochs, up and down (`tei/waiting.rs` says how and why), so small
//! epochs cost no padding. [`RequestOrder::Arrival`] keeps arrival order (for comparison).
//!
//! Each text is counted once with the pool's [`TokenBudget`] and the counts travel with the
//! request (for calibration, for the `tokens` column, for splitting a refused request). The
//! embed operator cuts through [`WaitingTexts`](super::WaitingTexts), [`EndpointPool::embed`](super::EndpointPool::embed)
//! through [`RequestBatcher::cut`]; nothing else packs requests. It never talks to a server.

use std::ops::Range;
use std::sync::Arc;

use super::budget::TokenBudget;
use super::limits::ServerLimits;

/// Bytes a request's envelope takes besides its texts (`{"inputs":[…],"truncate":true}`, or
/// OpenAI's with `"encoding_format":"base64"`), rounded up generously.
const ENVELOPE_BYTES: usize = 256;

/// The bounds of one request. Built from the server's limits; every field is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLimits {
    /// Most texts per request.
    pub max_items: usize,
    /// Most tokens (after truncation) per request.
    pub max_tokens: usize,
    /// Most bytes of JSON-escaped texts per request (the payload limit less the envelope).
    pub max_bytes: usize,
}

impl PackLimits {
    /// The bounds for `limits`, with at most `batch_size` texts per request when given, for an
    /// adaptive concurrency ([`PackLimits::for_server_at`] with no pinned concurrency).
    pub fn for_server(limits: &ServerLimits, batch_size: Option<usize>) -> Self {
        Self::for_server_at(limits, batch_size, None)
    }

    /// The bounds for `limits` when `concurrency` requests are meant to be in flight per server
    /// (a pinned `--concurrency`; None: adaptive, which needs room for at least two).
    ///
    /// TEI takes one permit per input, all at once and without waiting
    /// (`--max-concurrent-requests`, `/info.max_concurrent_requests`): a request of more inputs
    /// than the server has permits is answered 429 every time, whatever else is in flight. So a
    /// request never carries more inputs than the permits. Without `--batch-size`, requests are
    /// also made small enough that `concurrency` of them fit the permits together (two for an
    /// adaptive limit, so the GPU has the next request while the client reads an answer); a
    /// `--batch-size` the permits hold is kept as given.
    ///
    /// ```
    /// # use tweet_embed_operators::tei::{PackLimits, ServerLimits};
    /// let limits = ServerLimits { max_concurrent_requests: 6, ..ServerLimits::tei_defaults("m") };
    /// assert_eq!(PackLimits::for_server(&limits, None).max_items, 3); // 2 requests of 3 fit 6 permits
    /// assert_eq!(PackLimits::for_server(&limits, Some(32)).max_items, 6);
    /// assert_eq!(PackLimits::for_server_at(&limits, None, Some(1)).max_items, 6);
    /// ```
    pub fn for_server_at(limits: &ServerLimits, batch_size: Option<usize>, concurrency: Option<usize>) -> Self {
        let permits = limits.max_concurrent_requests.max(1);
        let client = limits.max_client_batch_size.max(1);
        let items = match batch_size {
            Some(b) => b.min(client),
            None => client.min(permits / concurrency.unwrap_or(2).max(1)),
        };
        // 1% under the limit besides the envelope: the byte count is exact for serde_json, the
        // margin covers a proxy or a server counting differently.
        let bytes = limits.payload_limit.saturating_sub(ENVELOPE_BYTES) / 100 * 99;
        Self {
            max_items: items.min(permits).max(1),
            max_tokens: limits.max_batch_tokens.max(1),
            max_bytes: bytes.max(1),
        }
    }

    /// Whether a request of `items` texts already, taking one more to `tokens` and `bytes`, would
    /// pass a limit (so the next text starts a new request).
    pub(super) fn full(&self, items: usize, tokens: usize, bytes: usize) -> bool {
        items >= self.max_items || tokens > self.max_tokens || bytes > self.max_bytes
    }

    /// Packs items given as `(tokens, bytes)` greedily in order: a request is cut before the item
    /// that would take it past a limit. An item over a limit on its own still gets a request of
    /// its own (the server decides; the pool isolates a refusal).
    pub fn pack(&self, items: impl IntoIterator<Item = (u32, usize)>) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut tokens, mut bytes) = (0, 0usize, 0usize);
        let mut end = 0;
        for (i, (item_tokens, item_bytes)) in items.into_iter().enumerate() {
            let item_tokens = item_tokens as usize;
            if i > start && self.full(i - start, tokens + item_tokens, bytes + item_bytes) {
                out.push(start..i);
                (start, tokens, bytes) = (i, 0, 0);
            }
            tokens += item_tokens;
            bytes += item_bytes;
            end = i + 1;
        }
        if end > start {
            out.push(start..end);
        }
        out
    }
}

/// Bytes `text` takes as a JSON string in a list, as serde_json writes it: quotes, escapes
/// (`\"`, `\\`, `\n`-style, `\u00XX` for other control chars) and the separating comma.
pub fn json_string_len(text: &str) -> usize {
    let escapes: usize = text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    text.len() + escapes + 3
}

/// The order requests are cut in (`--request-order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestOrder {
    /// Neighbouring token lengths, one sweep across epochs (see the module docs): little padding on
    /// padded servers, the same work on unpadded ones.
    #[default]
    Length,
    /// As the texts arrived: what TEI's queue pads most on a padded model.
    Arrival,
}

impl std::str::FromStr for RequestOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "length" => Ok(Self::Length),
            "arrival" => Ok(Self::Arrival),
            other => Err(format!("request order {other:?} is not `length` or `arrival`")),
        }
    }
}

/// Tokens a padded server computes for inputs of these token counts: `n × longest`
/// (TEI's padded batch cost). An estimate of what a request costs a padded GPU.
pub fn padded_tokens(tokens: &[u32]) -> u64 {
    tokens.len() as u64 * u64::from(tokens.iter().copied().max().unwrap_or(0))
}

/// The texts of one TEI request, in order, with their uncalibrated token counts
/// ([`TokenBudget::raw_count`]), so that nothing downstream counts them again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The inputs.
    pub texts: Vec<String>,
    /// `raw_tokens[i]` is the raw count of `texts[i]`.
    pub raw_tokens: Vec<u32>,
}

/// How a list of texts was cut: the requests as index ranges into it, and every text's counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cut {
    /// Contiguous ranges covering every text once, in order; each is one request.
    pub requests: Vec<Range<usize>>,
    /// Raw count per text, for [`Request::raw_tokens`].
    pub raw_tokens: Vec<u32>,
    /// Tokens per text after truncation as the budget counts them now (the `tokens` column).
    pub tokens: Vec<u32>,
}

/// Cuts texts into requests within [`PackLimits`], counting each text once. Cheap to clone.
#[derive(Clone)]
pub struct RequestBatcher {
    limits: PackLimits,
    budget: Arc<TokenBudget>,
    order: RequestOrder,
}

impl RequestBatcher {
    /// A batcher for `limits`, counting with `budget`, cutting in length order.
    pub fn new(limits: PackLimits, budget: Arc<TokenBudget>) -> Self {
        Self { limits, budget, order: RequestOrder::Length }
    }

    /// The same, cutting [`WaitingTexts`](super::WaitingTexts) in `order`.
    pub fn with_order(self, order: RequestOrder) -> Self {
        Self { order, ..self }
    }

    /// The order its [`WaitingTexts`](super::WaitingTexts) cut in.
    pub fn order(&self) -> RequestOrder {
        self.order
    }

    /// The bounds of every request it cuts.
    pub fn limits(&self) -> PackLimits {
        self.limits
    }

    /// The budget it counts with.
    pub fn budget(&self) -> &Arc<TokenBudget> {
        &self.budget
    }

    /// Counts every text once and cuts them, in order, into requests within the limits.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tweet_embed_operators::tei::{PackLimits, RequestBatcher, TokenBudget};
    /// let limits = PackLimits { max_items: 2, max_tokens: 1_000, max_bytes: 1_000_000 };
    /// let batcher = RequestBatcher::new(limits, Arc::new(TokenBudget::estimated(512)));
    /// let cut = batcher.cut(["a", "b", "c"]);
    /// assert_eq!(cut.requests, vec![0..2, 2..3]);
    /// assert_eq!(batcher.budget().texts_counted(), 3);
    /// ```
    pub fn cut<'t>(&self, texts: impl IntoIterator<Item = &'t str>) -> Cut {
        let (mut raw_tokens, mut tokens, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
        for text in texts {
            let raw = self.budget.raw_count(text);
            raw_tokens.push(raw);
            tokens.push(self.budget.calibrated(raw));
            bytes.push(json_string_len(text));
        }
        let requests = self.limits.pack(tokens.iter().copied().zip(bytes));
        Cut { requests, raw_tokens, tokens }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_length_is_what_serde_writes() {
        for text in ["plain", "quo\"te \\ back", "tab\tnew\nline\u{7}bell", "日本 👍🏽", "\u{0}\u{1f}\u{7f}"] {
            let written = serde_json::to_string(text).unwrap().len();
            assert_eq!(json_string_len(text), written + 1, "{text:?}");
        }
    }

    #[test]
    fn pack_cuts_at_each_limit_and_keeps_oversized_items_alone() {
        let limits = PackLimits { max_items: 3, max_tokens: 100, max_bytes: 1000 };
        assert_eq!(limits.pack(vec![(10, 10); 7]), vec![0..3, 3..6, 6..7]);
        assert_eq!(limits.pack(vec![(60, 10), (50, 10), (40, 10), (200, 10), (1, 10)]), vec![0..1, 1..3, 3..4, 4..5]);
        assert_eq!(limits.pack(vec![(1, 600), (1, 400), (1, 1)]), vec![0..2, 2..3]);
        assert!(limits.pack(Vec::new()).is_empty());
    }

    #[test]
    fn a_cut_counts_each_text_once_and_keeps_the_counts() {
        let budget = Arc::new(TokenBudget::estimated(100));
        let batcher = RequestBatcher::new(PackLimits { max_items: 32, max_tokens: 10, max_bytes: 1000 }, budget);
        let cut = batcher.cut(["alpha beta gamma", "hi", "words"]); // 7, 3, 4 tokens
        assert_eq!(cut.tokens, vec![7, 3, 4]);
        assert_eq!(cut.raw_tokens, cut.tokens);
        assert_eq!(cut.requests, vec![0..2, 2..3]);
        assert_eq!(batcher.budget().texts_counted(), 3);
    }
}
