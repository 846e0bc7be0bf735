//! What the TEI pool must return for each input: the simulator's vector of that very text.

use dev_tei::{embedding_for, estimate_truncate};
use tweet_embed_operators::tei::InputOutcome;

/// The 768-dimension vector the simulator returns for `text`, which it first truncates from the
/// right to 512 tokens (a text under 512 tokens is embedded whole).
pub fn expected(text: &str) -> Vec<f32> {
    embedding_for(estimate_truncate(text, 512), 768)
}

/// Asserts that `outcomes` has one outcome per text, in order, each the vector of its own text
/// ([`expected`]); panics naming the first input that was rejected or got another vector.
pub fn assert_all_embedded(texts: &[String], outcomes: &[InputOutcome]) {
    assert_eq!(outcomes.len(), texts.len());
    for (i, (text, outcome)) in texts.iter().zip(outcomes).enumerate() {
        match outcome {
            Ok(vector) => assert!(vector == &expected(text), "input {i} got another text's vector"),
            Err(reason) => panic!("input {i} rejected: {reason}"),
        }
    }
}
