//! Texts of tweet-like token lengths, for measuring padding: lengths log-normal with median 27
//! and σ 0.65 (p90 ≈ 62, p99 ≈ 123 tokens, as issue 17 measured tweets), within 4..=300, each text
//! of exactly that many tokens under the pipeline's estimate (which the simulator counts with).

/// Token length of text `i`, deterministic.
pub fn tweet_tokens(i: u64) -> usize {
    let unit = |k: u64| {
        let mut z = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(k);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    // Box–Muller.
    let normal = (-2.0 * unit(1).max(1e-12).ln()).sqrt() * (2.0 * std::f64::consts::PI * unit(2)).cos();
    ((27f64.ln() + 0.65 * normal).exp().round() as usize).clamp(4, 300)
}

/// A text of exactly `tokens` estimated tokens (two special tokens and `tokens - 2` words of
/// four hex digits), distinct per `seed`.
pub fn text_of_tokens(tokens: usize, seed: u64) -> String {
    let words: Vec<String> = (0..tokens.max(3) - 2)
        .map(|i| format!("{:04x}", (seed as usize).wrapping_mul(7919).wrapping_add(i * 31) % 0xffff))
        .collect();
    words.join(" ")
}

/// Text `i` of the tweet-length mix.
pub fn tweet_length_text(i: u64) -> String {
    text_of_tokens(tweet_tokens(i), i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_tweet_quantiles_and_exact_lengths() {
        let mut lengths: Vec<usize> = (0..20_000).map(tweet_tokens).collect();
        lengths.sort_unstable();
        let q = |p: f64| lengths[((lengths.len() as f64) * p) as usize];
        assert!((24..=30).contains(&q(0.5)), "p50 {}", q(0.5));
        assert!((55..=70).contains(&q(0.9)), "p90 {}", q(0.9));
        assert!((105..=145).contains(&q(0.99)), "p99 {}", q(0.99));
        let budget = tweet_embed_operators::tei::TokenBudget::estimated(512);
        for i in 0..50 {
            assert_eq!(budget.count(&tweet_length_text(i)) as usize, tweet_tokens(i));
        }
    }
}
