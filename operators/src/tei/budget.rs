//! The token budget: how many tokens a text costs a TEI server after truncation.
//!
//! This module owns token counting: the model's `tokenizer.json` when given, else an estimate
//! calibrated online from TEI's `x-compute-tokens`. It never talks to a server and never cuts
//! requests (that is `batcher`'s alone); it counts what it is asked to, and counts how often.
//!
//! The estimate itself is [`estimate_tokens`], the one the TEI simulator (`dev-tei`) counts with.

use std::path::Path;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::TeiError;
use super::estimate::estimate_tokens;

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
    /// Texts counted so far (tokenizer or estimate runs).
    counted: AtomicU64,
    /// Tokens of the prompt TEI prepends to every input (`--prompt-name`), 0 without one.
    prompt: u32,
}

enum Counter {
    Estimate,
    Tokenizer(Box<Tokenizer>),
}

impl TokenBudget {
    /// A budget counting with the estimate, calibrated by [`TokenBudget::observe`].
    pub fn estimated(max_input_length: usize) -> Self {
        Self {
            counter: Counter::Estimate,
            max_input_length,
            scale: Mutex::new(1.0),
            counted: AtomicU64::new(0),
            prompt: 0,
        }
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
        Ok(Self {
            counter: Counter::Tokenizer(Box::new(tokenizer)),
            max_input_length,
            scale: Mutex::new(1.0),
            counted: AtomicU64::new(0),
            prompt: 0,
        })
    }

    /// Counts `tokens` more for every input: the prompt TEI prepends. Counts stay capped at
    /// `max_input_length`, as TEI truncates the prompted input.
    pub fn set_prompt_tokens(&mut self, tokens: u32) {
        self.prompt = tokens;
    }

    /// The prompt's tokens added to every input.
    pub fn prompt_tokens(&self) -> u32 {
        self.prompt
    }

    /// The truncation length it counts to.
    pub fn max_input_length(&self) -> usize {
        self.max_input_length
    }

    /// Whether counts come from the model's tokenizer (else from the calibrated estimate).
    pub fn is_exact(&self) -> bool {
        matches!(self.counter, Counter::Tokenizer(_))
    }

    /// Texts counted since the budget was made: each is one run of the tokenizer (or of the
    /// estimate). The batcher counts each distinct text once, so this stays at the texts sent.
    pub fn texts_counted(&self) -> u64 {
        self.counted.load(Ordering::Relaxed)
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
        self.counted.fetch_add(1, Ordering::Relaxed);
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
        let text = match self.counter {
            Counter::Tokenizer(_) => raw,
            Counter::Estimate => (self.expected(raw, self.scale()).ceil() as u32).max(1),
        };
        text.saturating_add(self.prompt).min(self.max_len())
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
        // The server's count includes the prompt of every input; the estimate is of the texts.
        let prompts = f64::from(self.prompt) * raw_counts.len() as f64;
        let compute_tokens = (compute_tokens as f64 - prompts).max(1.0);
        let expected: f64 = raw_counts.iter().map(|&raw| self.expected(raw, *scale)).sum();
        if expected <= 0.0 {
            return;
        }
        // Geometric EWMA: a ratio of 2 and one of 1/2 cancel out; one odd request moves it little.
        let ratio = (compute_tokens / expected).clamp(0.25, 4.0);
        *scale = (*scale * ratio.powf(CALIBRATION_ALPHA)).clamp(SCALE_RANGE.0, SCALE_RANGE.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
