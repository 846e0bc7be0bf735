//! The token budget: how many tokens a text costs a TEI server after truncation, and how a list
//! of texts is packed into requests that the server accepts.
//!
//! This module owns token counting (the model's `tokenizer.json` when given, else an estimate
//! calibrated online from TEI's `x-compute-tokens`) and packing ([`PackLimits`], like TEI's own
//! `queue.rs`: greedy, in order, cut when a limit would be passed). It never talks to a server
//! and never reorders texts.
//!
//! The estimate itself is [`estimate_tokens`], the one the TEI simulator (`dev-tei`) counts with.

use std::ops::Range;
use std::path::Path;

use parking_lot::Mutex;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::TeiError;
use super::estimate::estimate_tokens;
use super::limits::ServerLimits;

/// Weight of one request's observation in the calibration (an EWMA in log space).
const CALIBRATION_ALPHA: f64 = 0.2;
/// Bounds of the calibration factor: a model whose tokenizer is 5× off the estimate needs its
/// `tokenizer.json`, not a guess.
const SCALE_RANGE: (f64, f64) = (0.2, 5.0);

/// Counts tokens per text after truncation to `max_input_length`. Shared by every request of a
/// pool; all methods take `&self`.
pub struct TokenBudget {
    counter: Counter,
    max_input_length: usize,
    /// Calibration factor of the estimate (1.0 with a tokenizer).
    scale: Mutex<f64>,
}

enum Counter {
    Estimate,
    Tokenizer(Box<Tokenizer>),
}

impl TokenBudget {
    /// A budget counting with the estimate, calibrated by [`TokenBudget::observe`].
    pub fn estimated(max_input_length: usize) -> Self {
        Self { counter: Counter::Estimate, max_input_length, scale: Mutex::new(1.0) }
    }

    /// A budget counting with the model's `tokenizer.json`: special tokens included, truncated to
    /// `max_input_length` from the right, as TEI does.
    pub fn from_tokenizer_file(path: &Path, max_input_length: usize) -> Result<Self, TeiError> {
        let fail =
            |e: &dyn std::fmt::Display| TeiError::Config(format!("cannot load tokenizer {}: {e}", path.display()));
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| fail(&e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_input_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| fail(&e))?;
        Ok(Self { counter: Counter::Tokenizer(Box::new(tokenizer)), max_input_length, scale: Mutex::new(1.0) })
    }

    /// The truncation length it counts to.
    pub fn max_input_length(&self) -> usize {
        self.max_input_length
    }

    /// Whether counts come from the model's tokenizer (else from the calibrated estimate).
    pub fn is_exact(&self) -> bool {
        matches!(self.counter, Counter::Tokenizer(_))
    }

    /// The calibration factor applied to the estimate (1.0 until observed, and with a tokenizer).
    pub fn scale(&self) -> f64 {
        *self.scale.lock()
    }

    /// Tokens of `text` after truncation: exact with a tokenizer, else the calibrated estimate.
    pub fn count(&self, text: &str) -> u32 {
        self.calibrated(self.raw_count(text))
    }

    /// The uncalibrated count of `text`: with a tokenizer, the exact count after truncation;
    /// otherwise the estimate before truncation. Keep it to pass to [`TokenBudget::calibrated`]
    /// and [`TokenBudget::observe`] without counting the text again.
    pub fn raw_count(&self, text: &str) -> u32 {
        let estimate = || u32::try_from(estimate_tokens(text)).unwrap_or(u32::MAX);
        match &self.counter {
            Counter::Estimate => estimate(),
            // A text the tokenizer fails on will be refused by the server; any count will do.
            Counter::Tokenizer(tok) => match tok.encode(text, true) {
                Ok(encoding) => u32::try_from(encoding.len()).unwrap_or(u32::MAX),
                Err(_) => estimate().min(self.max_len()),
            },
        }
    }

    /// Tokens after truncation of a text whose [`TokenBudget::raw_count`] is `raw`.
    pub fn calibrated(&self, raw: u32) -> u32 {
        match self.counter {
            Counter::Tokenizer(_) => raw,
            Counter::Estimate => (self.expected(raw, self.scale()).ceil() as u32).max(1),
        }
    }

    fn max_len(&self) -> u32 {
        u32::try_from(self.max_input_length).unwrap_or(u32::MAX)
    }

    fn expected(&self, raw: u32, scale: f64) -> f64 {
        (f64::from(raw) * scale).min(self.max_input_length as f64)
    }

    /// Calibrates the estimate from one answered request: the raw counts of its texts and the
    /// tokens the server reported (`x-compute-tokens`). A no-op with a tokenizer.
    pub fn observe(&self, raw_counts: &[u32], compute_tokens: u64) {
        if self.is_exact() || compute_tokens == 0 {
            return;
        }
        let mut scale = self.scale.lock();
        let expected: f64 = raw_counts.iter().map(|&raw| self.expected(raw, *scale)).sum();
        if expected <= 0.0 {
            return;
        }
        // Geometric EWMA: a ratio of 2 and one of 1/2 cancel out; one odd request moves it little.
        let ratio = (compute_tokens as f64 / expected).clamp(0.25, 4.0);
        *scale = (*scale * ratio.powf(CALIBRATION_ALPHA)).clamp(SCALE_RANGE.0, SCALE_RANGE.1);
    }

    /// Packs `texts` into requests within `limits`, in order: contiguous index ranges.
    pub fn pack<S: AsRef<str>>(&self, texts: &[S], limits: &PackLimits) -> Vec<Range<usize>> {
        limits.pack(texts.iter().map(|t| (self.count(t.as_ref()), json_string_len(t.as_ref()))))
    }
}

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
    /// The bounds for `limits`, with at most `batch_size` texts per request when given.
    pub fn for_server(limits: &ServerLimits, batch_size: Option<usize>) -> Self {
        let items = batch_size.map_or(limits.max_client_batch_size, |b| b.min(limits.max_client_batch_size));
        // 1% under the limit besides the envelope: the byte count is exact for serde_json, the
        // margin covers a proxy or a server counting differently.
        let bytes = limits.payload_limit.saturating_sub(ENVELOPE_BYTES) / 100 * 99;
        Self { max_items: items.max(1), max_tokens: limits.max_batch_tokens.max(1), max_bytes: bytes.max(1) }
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
            let full = i - start >= self.max_items
                || tokens + item_tokens > self.max_tokens
                || bytes + item_bytes > self.max_bytes;
            if i > start && full {
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
    fn calibration_moves_toward_observed_tokens_and_respects_truncation() {
        let budget = TokenBudget::estimated(100);
        let raw = budget.raw_count("alpha beta gamma"); // 2 + 2 + 1 + 2
        assert_eq!(raw, 7);
        assert_eq!(budget.count("alpha beta gamma"), 7);
        assert_eq!(budget.calibrated(400), 100);
        for _ in 0..50 {
            budget.observe(&[raw, raw], 28);
        }
        assert!((budget.scale() - 2.0).abs() < 0.05, "{}", budget.scale());
        assert!((14..=15).contains(&budget.count("alpha beta gamma")));
        assert_eq!(budget.calibrated(60), 100);
        // Inputs the server truncated tell nothing about the scale.
        let before = budget.scale();
        budget.observe(&[400, 400], 200);
        assert_eq!(budget.scale(), before);
    }
}
