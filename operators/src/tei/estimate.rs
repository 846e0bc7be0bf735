//! The token estimate: what a text costs a TEI server when no `tokenizer.json` is given. The
//! pipeline counts with it before it calibrates from TEI's `x-compute-tokens` ([`TokenBudget`]),
//! and the TEI simulator (the `dev-tei` crate) counts, truncates and tokenizes with the same
//! pieces ([`estimate_pieces`]), so the two agree by construction.
//!
//! [`estimate_tokens`] is `2` special tokens (`<bos>` and `<eos>`, as Gemma adds) plus one token
//! per *piece*, where the pieces of a text are, scanning left to right:
//! - whitespace: nothing (it is folded into the next piece, as SentencePiece does);
//! - a run of alphanumeric chars (`char::is_alphanumeric`, any script): split greedily into
//!   chunks of at most 4 UTF-8 bytes (a char is never split), one piece each. That is `⌈n/4⌉` for
//!   ASCII words, about 2 chars a piece for Cyrillic or Greek, and 1 per CJK char;
//! - any other char (punctuation, symbols, emoji, joiners, variation selectors): one piece per
//!   code point, so a ZWJ emoji sequence costs one token per code point.
//!
//! The estimate is monotone in prefix length, and a prefix (or suffix) cut at a piece boundary
//! re-counts to exactly its pieces.
//!
//! [`TokenBudget`]: super::TokenBudget

use std::ops::Range;

/// Special tokens the estimate adds to every text (`<bos>` and `<eos>`).
pub const ESTIMATE_SPECIAL_TOKENS: usize = 2;

/// Estimated tokens of `text`, special tokens included, before truncation (see the module docs).
pub fn estimate_tokens(text: &str) -> usize {
    ESTIMATE_SPECIAL_TOKENS + estimate_pieces(text).count()
}

/// The estimate's pieces of `text`, as byte ranges, left to right (see the module docs).
pub fn estimate_pieces(text: &str) -> EstimatePieces<'_> {
    EstimatePieces { text, pos: 0 }
}

/// The iterator of [`estimate_pieces`].
#[derive(Debug, Clone)]
pub struct EstimatePieces<'a> {
    text: &'a str,
    pos: usize,
}

impl Iterator for EstimatePieces<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let rest = &self.text[self.pos..];
        let skip = rest.find(|c: char| !c.is_whitespace())?;
        let start = self.pos + skip;
        let mut chars = self.text[start..].chars();
        let first = chars.next()?;
        let mut end = start + first.len_utf8();
        if first.is_alphanumeric() {
            // Extend the chunk while the run continues and the chunk stays within 4 bytes.
            for c in chars {
                if !c.is_alphanumeric() || end - start + c.len_utf8() > 4 {
                    break;
                }
                end += c.len_utf8();
            }
        }
        self.pos = end;
        Some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_matches_the_documented_rules() {
        assert_eq!(estimate_tokens(""), 2);
        assert_eq!(estimate_tokens("   "), 2);
        assert_eq!(estimate_tokens("words"), 4);
        assert_eq!(estimate_tokens("hi, there!"), 7);
        assert_eq!(estimate_tokens("日本語"), 5);
        assert_eq!(estimate_tokens("привет"), 5);
        assert_eq!(estimate_tokens("👍🏽"), 4);
    }
}
