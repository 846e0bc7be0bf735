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
//! order (p50 ~27 tokens, p99 ~130) make most of that padding. So [`WaitingTexts`] holds the texts
//! not yet sent and cuts each request from neighbouring lengths ([`RequestOrder::Length`], the
//! default): what waits at an endpoint is of similar lengths and a server batch pads little.
//! Within an epoch the sweep goes up in even epochs and down in odd ones, so the requests of one
//! epoch's end and the next epoch's start are of the same lengths too (no long-then-short seam),
//! and an earlier epoch is always cut before a later one, so epochs still complete in order.
//! Requests never mix epochs. [`RequestOrder::Arrival`] keeps arrival order (for comparison).
//!
//! Each text is counted once with the pool's [`TokenBudget`] and the counts travel with the
//! request (for calibration, for the `tokens` column, for splitting a refused request). The
//! embed operator cuts through [`WaitingTexts`], [`EndpointPool::embed`](super::EndpointPool::embed)
//! through [`RequestBatcher::cut`]; nothing else packs requests. It never talks to a server.

use std::collections::BTreeMap;
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
    fn full(&self, items: usize, tokens: usize, bytes: usize) -> bool {
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
    /// Neighbouring token lengths, epoch by epoch (see the module docs): little padding on
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

    /// The same, cutting [`WaitingTexts`] in `order`.
    pub fn with_order(self, order: RequestOrder) -> Self {
        Self { order, ..self }
    }

    /// The order its [`WaitingTexts`] cut in.
    pub fn order(&self) -> RequestOrder {
        self.order
    }

    /// An empty queue of texts to cut from, in this batcher's order.
    pub fn waiting<T>(&self) -> WaitingTexts<T> {
        WaitingTexts { order: self.order, queue: BTreeMap::new(), next_seq: 0 }
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

/// Texts not yet sent, each with the item it belongs to, from which requests are cut in the
/// batcher's [`RequestOrder`]. Items are counted once when pushed. Made by
/// [`RequestBatcher::waiting`].
pub struct WaitingTexts<T> {
    order: RequestOrder,
    /// The first entry is the next to cut.
    queue: BTreeMap<WaitingKey, Waiting<T>>,
    next_seq: u64,
}

/// Where a text waits in [`WaitingTexts`]: its epoch, its place in the order, its arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaitingKey {
    /// The epoch it was pushed with.
    pub epoch: u64,
    order: u32,
    seq: u64,
}

struct Waiting<T> {
    item: T,
    raw: u32,
    bytes: usize,
}

/// One request cut from [`WaitingTexts`]: its items in order, all of one epoch, with their
/// counts (see [`Cut`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutItems<T> {
    /// The epoch every item was pushed with.
    pub epoch: u64,
    /// The items, in request order.
    pub items: Vec<T>,
    /// Raw count per item, for [`Request::raw_tokens`].
    pub raw_tokens: Vec<u32>,
    /// Tokens per item after truncation as the budget counts them now.
    pub tokens: Vec<u32>,
}

impl<T> WaitingTexts<T> {
    /// Adds `item` of `epoch`, whose text `text` reads, counting its tokens with `batcher`'s
    /// budget.
    /// Returns where it waits.
    pub fn push(&mut self, batcher: &RequestBatcher, epoch: u64, item: T, text: impl Fn(&T) -> &str) -> WaitingKey {
        let text = text(&item);
        let raw = batcher.budget.raw_count(text);
        let bytes = json_string_len(text);
        let key = match self.order {
            RequestOrder::Arrival => 0,
            // Up in even epochs, down in odd ones: one epoch ends where the next begins.
            RequestOrder::Length if epoch.is_multiple_of(2) => raw,
            RequestOrder::Length => u32::MAX - raw,
        };
        let key = WaitingKey { epoch, order: key, seq: self.next_seq };
        self.next_seq += 1;
        self.queue.insert(key, Waiting { item, raw, bytes });
        key
    }

    /// The item waiting at `key`, if it still waits.
    pub fn get(&self, key: &WaitingKey) -> Option<&T> {
        self.queue.get(key).map(|w| &w.item)
    }

    /// Texts waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a text of `epoch` still waits.
    pub fn holds_epoch(&self, epoch: u64) -> bool {
        let (first, last) =
            (WaitingKey { epoch, order: 0, seq: 0 }, WaitingKey { epoch, order: u32::MAX, seq: u64::MAX });
        self.queue.range(first..=last).next().is_some()
    }

    /// The earliest epoch with a text waiting.
    pub fn first_epoch(&self) -> Option<u64> {
        self.queue.keys().next().map(|key| key.epoch)
    }

    /// Cuts the next request: texts from the front, of the front's epoch, until the next would
    /// take the request past `batcher`'s limits. `keep` sees each item (and where it waited) as
    /// it is taken and may answer it itself (a cached vector, say) by returning None; the others
    /// go in the request. None when nothing waits, or when `keep` took every item of the
    /// front's epoch (call again to go on).
    pub fn next_request(
        &mut self,
        batcher: &RequestBatcher,
        mut keep: impl FnMut(WaitingKey, T) -> Option<T>,
    ) -> Option<CutItems<T>> {
        let epoch = self.first_epoch()?;
        let limits = batcher.limits;
        let mut cut = CutItems { epoch, items: Vec::new(), raw_tokens: Vec::new(), tokens: Vec::new() };
        let (mut tokens, mut bytes) = (0usize, 0usize);
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().epoch != epoch {
                break;
            }
            let key = *entry.key();
            let waiting = entry.get();
            let item_tokens = batcher.budget.calibrated(waiting.raw);
            let full = limits.full(cut.items.len(), tokens + item_tokens as usize, bytes + waiting.bytes);
            if !cut.items.is_empty() && full {
                break;
            }
            let waiting = entry.remove();
            let Some(item) = keep(key, waiting.item) else { continue };
            tokens += item_tokens as usize;
            bytes += waiting.bytes;
            cut.items.push(item);
            cut.raw_tokens.push(waiting.raw);
            cut.tokens.push(item_tokens);
        }
        (!cut.items.is_empty()).then_some(cut)
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

    fn batcher(order: RequestOrder, max_items: usize) -> RequestBatcher {
        let limits = PackLimits { max_items, max_tokens: 1_000, max_bytes: 1_000_000 };
        RequestBatcher::new(limits, Arc::new(TokenBudget::estimated(512))).with_order(order)
    }

    /// A text of `n` estimated tokens (two special tokens and `n - 2` words).
    fn text(n: usize) -> String {
        vec!["w"; n - 2].join(" ")
    }

    fn drain(waiting: &mut WaitingTexts<(usize, String)>, batcher: &RequestBatcher) -> Vec<(u64, Vec<usize>)> {
        std::iter::from_fn(|| {
            let cut = waiting.next_request(batcher, |_, t| Some(t))?;
            Some((cut.epoch, cut.items.into_iter().map(|(i, _)| i).collect()))
        })
        .collect()
    }

    #[test]
    fn length_order_sweeps_up_then_down_and_never_mixes_epochs() {
        let b = batcher(RequestOrder::Length, 2);
        let mut waiting = b.waiting();
        // Epoch 1 pushed first, epoch 0 later: the earlier epoch is still cut first.
        for (i, n) in [(10, 9), (11, 3), (12, 6)] {
            waiting.push(&b, 1, (i, text(n)), |t| &t.1);
        }
        for (i, n) in [(0, 7), (1, 3), (2, 12), (3, 5), (4, 4)] {
            waiting.push(&b, 0, (i, text(n)), |t| &t.1);
        }
        assert_eq!(
            drain(&mut waiting, &b),
            vec![(0, vec![1, 4]), (0, vec![3, 0]), (0, vec![2]), (1, vec![10, 12]), (1, vec![11])]
        );
        assert!(waiting.is_empty());
    }

    #[test]
    fn arrival_order_keeps_arrival_and_keep_can_answer_items() {
        let b = batcher(RequestOrder::Arrival, 3);
        let mut waiting = b.waiting();
        for (i, n) in [9, 3, 6, 4].into_iter().enumerate() {
            waiting.push(&b, 0, (i, text(n)), |t| &t.1);
        }
        // Item 1 answered by `keep` (say, from a cache): the request fills up with the next.
        let cut = waiting.next_request(&b, |_, t| (t.0 != 1).then_some(t)).expect("a request");
        assert_eq!(cut.items.iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(cut.tokens, vec![9, 6, 4]);
        assert_eq!(b.budget().texts_counted(), 4, "counted once, when pushed");
        assert!(!waiting.holds_epoch(0));
        assert_eq!(padded_tokens(&cut.tokens), 27);
    }
}
