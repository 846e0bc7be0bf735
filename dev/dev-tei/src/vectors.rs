//! Deterministic embeddings: the vector a simulated GPU returns for an input is a pure function of
//! that input, so a test (or the pipeline's own checks) can recompute every row it gets back.
//!
//! This module owns the vector recipe and nothing else; it never looks at configuration,
//! truncation or the network.
//!
//! Recipe, exactly:
//! - seed: `xxh3_64_with_seed(text bytes, TEXT_DOMAIN)` for a text, or
//!   `xxh3_64_with_seed(ids as little-endian u32 bytes, IDS_DOMAIN)` for token ids;
//! - a splitmix64 stream from that seed; each 64-bit draw gives two values, the high 32 bits
//!   first, each value being its top 24 bits mapped to `bits / 2^23 - 1`, so uniform in `[-1, 1)`;
//! - the *raw* vector is the first `dim` values (a prefix of a longer one, so a raw vector at
//!   `dimensions: d` is the first `d` values of the full raw vector);
//! - the *normalized* vector is the raw vector divided by its L2 norm (summed in `f32`, in order).
//!
//! `/embed` returns the normalized vector (`normalize: true`, the default) or the raw one
//! (`normalize: false`); `dimensions: d` means the same recipe at `d` values.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed domain of text inputs, so a text never shares a vector with a token-id input.
const TEXT_DOMAIN: u64 = 0x7465_7874_5f76_3031;
/// Seed domain of token-id inputs.
const IDS_DOMAIN: u64 = 0x6964_735f_7630_3031;

/// The L2-normalized embedding of `text` at `dim` values: what `/embed` returns for an input
/// that was not truncated (for a truncated one, pass the kept part of the text).
pub fn embedding_for(text: &str, dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; dim];
    fill_text(text, true, &mut out);
    out
}

/// The raw (unnormalized) embedding of `text`: what `/embed` returns with `normalize: false`.
pub fn raw_embedding_for(text: &str, dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; dim];
    fill_text(text, false, &mut out);
    out
}

/// The L2-normalized embedding of a token-id input (`inputs: [u32]` or `[[u32]]`), of the ids
/// kept after truncation.
pub fn embedding_for_ids(ids: &[u32], dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; dim];
    fill_ids(ids, true, &mut out);
    out
}

/// Writes the vector of `text` into `out` (its length is the dimension), reusing the buffer.
pub(crate) fn fill_text(text: &str, normalize: bool, out: &mut [f32]) {
    fill(xxh3_64_with_seed(text.as_bytes(), TEXT_DOMAIN), normalize, out);
}

/// Writes the vector of token ids into `out`.
pub(crate) fn fill_ids(ids: &[u32], normalize: bool, out: &mut [f32]) {
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    fill(xxh3_64_with_seed(&bytes, IDS_DOMAIN), normalize, out);
}

fn fill(seed: u64, normalize: bool, out: &mut [f32]) {
    let mut state = seed;
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let draw = splitmix64(&mut state);
        pair[0] = unit((draw >> 32) as u32);
        pair[1] = unit(draw as u32);
    }
    if let [last] = pairs.into_remainder() {
        *last = unit((splitmix64(&mut state) >> 32) as u32);
    }
    if normalize {
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
        // A zero vector has no direction; leaving it raw keeps the output finite.
        if norm > 0.0 {
            out.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Top 24 bits → `[-1, 1)`; 24 bits fit an f32 mantissa, so the mapping is exact.
fn unit(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 8_388_608.0) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_normalized_and_prefix_consistent() {
        let a = embedding_for("hello world", 768);
        assert_eq!(a, embedding_for("hello world", 768));
        assert_ne!(a, embedding_for("hello world!", 768));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        let raw = raw_embedding_for("hello world", 768);
        assert_eq!(&raw[..101], &raw_embedding_for("hello world", 101)[..]);
        assert!(raw.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_ne!(embedding_for_ids(&[1, 2], 8), embedding_for_ids(&[2, 1], 8));
    }
}
