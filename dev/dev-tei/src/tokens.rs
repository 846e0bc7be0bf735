//! Token counting and truncation for the simulator: the real model tokenizer when a
//! `tokenizer.json` is given, else a deterministic estimate.
//!
//! This module owns how many tokens an input costs, which part of it survives truncation, and what
//! `/tokenize` shows; the count it returns is the one batching, `x-compute-tokens` and `/tokenize`
//! all use. It never decides limits or errors: callers compare counts with `max_input_length`.
//!
//! ## The estimate ([`estimate_tokens`])
//! The pipeline's own estimate, from `tweet-embed-operators` (its docs define the pieces): `2`
//! special tokens plus one token per piece of [`estimate_pieces`]. The simulator counts,
//! truncates and tokenizes with those pieces, so the pipeline's estimate and the simulator's
//! count agree by construction.
//!
//! A prefix (or suffix) cut at a piece boundary re-counts to exactly its pieces. Truncation keeps
//! whole pieces: to the right it keeps the text up to the end of the last kept piece, to the left
//! from the start of the first kept piece. So a truncated input's vector is
//! [`embedding_for`](crate::embedding_for) of [`estimate_truncate`]`(text, max_input_length)`
//! (right truncation, the default).
//!
//! ## The real tokenizer
//! `tokenizers::Tokenizer::from_file`, padding off, encoding with special tokens, truncating to
//! `max_input_length` (special tokens included) as TEI does. The kept part of a truncated text is
//! cut at the byte offsets of the first/last kept non-special token, in the same way.

use std::ops::Range;
use std::path::Path;

use serde::Serialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use tweet_embed_operators::tei::{estimate_pieces, estimate_tokens, ESTIMATE_SPECIAL_TOKENS};
use xxhash_rust::xxh3::xxh3_64;

/// Special tokens the estimate adds, with Gemma's ids.
const BOS: (u32, &str) = (2, "<bos>");
const EOS: (u32, &str) = (1, "<eos>");
/// Gemma 3's vocabulary size; estimated piece ids fall in `3..VOCAB`.
const VOCAB: u64 = 262_144;

/// The part of `text` the simulator keeps when it truncates to `max_input_length` tokens from the
/// right with the estimate: the whole text when it fits. `max_input_length` counts the 2 special
/// tokens, as TEI's does.
pub fn estimate_truncate(text: &str, max_input_length: usize) -> &str {
    let keep = max_input_length.saturating_sub(ESTIMATE_SPECIAL_TOKENS);
    match estimate_pieces(text).nth(keep) {
        // There is a piece beyond the budget: cut after the last kept one.
        Some(_) if keep == 0 => "",
        Some(_) => {
            let end = estimate_pieces(text).nth(keep - 1).map_or(0, |p| p.end);
            &text[..end]
        }
        None => text,
    }
}

/// Which end of an input truncation removes tokens from; `Right` keeps the beginning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum Direction {
    #[default]
    #[serde(alias = "right")]
    Right,
    #[serde(alias = "left")]
    Left,
}

/// How an input counts: its tokens (after truncation, if asked) and the byte range of the text
/// that was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counted {
    pub tokens: usize,
    pub kept: Range<usize>,
}

/// One token as `/tokenize` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SimpleToken {
    pub id: u32,
    pub text: String,
    pub special: bool,
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

/// The counting strategy of one simulator: shared by all its GPUs.
pub(crate) enum TokenCounter {
    Estimate,
    Real(Box<RealTokenizer>),
}

/// The real tokenizer, pre-configured once per truncation mode so a request never clones it.
pub(crate) struct RealTokenizer {
    plain: Tokenizer,
    right: Tokenizer,
    left: Tokenizer,
}

impl TokenCounter {
    /// Loads `tokenizer.json` for counting up to `max_input_length` tokens.
    pub fn from_file(path: &Path, max_input_length: usize) -> Result<Self, String> {
        let mut plain = Tokenizer::from_file(path).map_err(|e| e.to_string())?;
        plain.with_padding(None);
        plain.with_truncation(None).map_err(|e| e.to_string())?;
        let truncating = |direction| {
            let mut tok = plain.clone();
            tok.with_truncation(Some(TruncationParams {
                direction,
                max_length: max_input_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map(|_| ())
            .map_err(|e| e.to_string())?;
            Ok::<_, String>(tok)
        };
        let right = truncating(TruncationDirection::Right)?;
        let left = truncating(TruncationDirection::Left)?;
        Ok(Self::Real(Box::new(RealTokenizer { plain, right, left })))
    }

    /// Counts `text`, truncated to `truncate_to` tokens when given. Errors are tokenizer failures.
    pub fn count(&self, text: &str, truncate_to: Option<(usize, Direction)>) -> Result<Counted, String> {
        match self {
            Self::Estimate => Ok(estimate_count(text, truncate_to)),
            Self::Real(real) => real.count(text, truncate_to),
        }
    }

    /// The tokens of `text` as `/tokenize` lists them (never truncated, as in TEI).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<SimpleToken>, String> {
        match self {
            Self::Estimate => Ok(estimate_tokenize(text, add_special)),
            Self::Real(real) => real.tokenize(text, add_special),
        }
    }
}

fn estimate_count(text: &str, truncate_to: Option<(usize, Direction)>) -> Counted {
    let all = 0..text.len();
    let Some((max, direction)) = truncate_to else {
        return Counted { tokens: estimate_tokens(text), kept: all };
    };
    let keep = max.saturating_sub(ESTIMATE_SPECIAL_TOKENS);
    let pieces: Vec<Range<usize>> = estimate_pieces(text).collect();
    if pieces.len() <= keep {
        return Counted { tokens: ESTIMATE_SPECIAL_TOKENS + pieces.len(), kept: all };
    }
    let kept = match (direction, keep) {
        (_, 0) => 0..0,
        (Direction::Right, _) => 0..pieces[keep - 1].end,
        (Direction::Left, _) => pieces[pieces.len() - keep].start..text.len(),
    };
    Counted { tokens: ESTIMATE_SPECIAL_TOKENS + keep, kept }
}

fn estimate_tokenize(text: &str, add_special: bool) -> Vec<SimpleToken> {
    let special =
        |(id, text): (u32, &str)| SimpleToken { id, text: text.to_string(), special: true, start: None, stop: None };
    let mut tokens = Vec::new();
    if add_special {
        tokens.push(special(BOS));
    }
    tokens.extend(estimate_pieces(text).map(|range| {
        let piece = &text[range.clone()];
        SimpleToken {
            id: 3 + (xxh3_64(piece.as_bytes()) % (VOCAB - 3)) as u32,
            text: piece.to_string(),
            special: false,
            start: Some(range.start),
            stop: Some(range.end),
        }
    }));
    if add_special {
        tokens.push(special(EOS));
    }
    tokens
}

impl RealTokenizer {
    fn count(&self, text: &str, truncate_to: Option<(usize, Direction)>) -> Result<Counted, String> {
        let tokenizer = match truncate_to {
            None => &self.plain,
            Some((_, Direction::Right)) => &self.right,
            Some((_, Direction::Left)) => &self.left,
        };
        let encoding = tokenizer.encode(text, true).map_err(|e| e.to_string())?;
        let mut kept = 0..text.len();
        // Overflowing pieces exist exactly when truncation dropped tokens.
        if !encoding.get_overflowing().is_empty() {
            let offsets = encoding
                .get_offsets()
                .iter()
                .zip(encoding.get_special_tokens_mask())
                .filter(|(_, special)| **special == 0)
                .map(|(offsets, _)| *offsets);
            // Offsets of byte-level tokens may fall inside a char: widen to char boundaries so
            // the kept part is always a valid slice.
            kept = match truncate_to {
                Some((_, Direction::Left)) => {
                    let mut start = offsets.map(|o| o.0).min().unwrap_or(text.len());
                    while !text.is_char_boundary(start) {
                        start -= 1;
                    }
                    start..text.len()
                }
                _ => {
                    let mut end = offsets.map(|o| o.1).max().unwrap_or(0).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    0..end
                }
            };
        }
        Ok(Counted { tokens: encoding.len(), kept })
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<SimpleToken>, String> {
        let encoding = self.plain.encode(text, add_special).map_err(|e| e.to_string())?;
        let tokens = encoding
            .get_ids()
            .iter()
            .zip(encoding.get_offsets())
            .zip(encoding.get_special_tokens_mask())
            .zip(encoding.get_tokens())
            .map(|(((&id, &(start, stop)), &special), token)| {
                if special == 1 {
                    SimpleToken { id, text: token.clone(), special: true, start: None, stop: None }
                } else {
                    let bytes = text.as_bytes().get(start..stop).unwrap_or_default();
                    SimpleToken {
                        id,
                        text: String::from_utf8_lossy(bytes).into_owned(),
                        special: false,
                        start: Some(start),
                        stop: Some(stop),
                    }
                }
            })
            .collect();
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_counts_pieces() {
        assert_eq!(estimate_tokens(""), 2);
        assert_eq!(estimate_tokens("   "), 2);
        assert_eq!(estimate_tokens("word"), 3);
        assert_eq!(estimate_tokens("words"), 4);
        assert_eq!(estimate_tokens("hi, there!"), 2 + 1 + 1 + 2 + 1);
        assert_eq!(estimate_tokens("日本語"), 2 + 3);
        assert_eq!(estimate_tokens("привет"), 2 + 3);
        assert_eq!(estimate_tokens("👍🏽"), 2 + 2);
    }

    #[test]
    fn truncation_keeps_whole_pieces_and_recounts_exactly() {
        let text = "alpha beta, gamma delta epsilon 日本語 👍 zeta";
        for max in 3..estimate_tokens(text) {
            let kept = estimate_truncate(text, max);
            assert_eq!(estimate_tokens(kept), max, "{max}: {kept:?}");
            assert!(text.starts_with(kept));
            let left = estimate_count(text, Some((max, Direction::Left)));
            assert_eq!(left.tokens, max);
            assert_eq!(estimate_tokens(&text[left.kept.clone()]), max);
        }
        assert_eq!(estimate_truncate(text, 1000), text);
    }
}
