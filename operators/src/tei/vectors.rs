//! The check of every vector a server returns, before it can become a row: the dimension, every
//! component finite, a non-zero norm, and a unit norm.
//!
//! This module owns what a usable vector is and the reason given for one that is not; it never
//! decides what happens to the input (the request turns a refused vector into a rejection of that
//! input alone) and never talks to a server.
//!
//! ## What the client assumes of the norm
//! TEI normalizes unless told not to: `POST /embed` takes `normalize` (default `true`) and this
//! client sends `normalize: true` explicitly; `POST /v1/embeddings` has no such option and always
//! normalizes (TEI 1.9's OpenAI handler passes `normalize = true`). So every vector this client
//! asks for must have an L2 norm of 1, within [`NORM_TOLERANCE`] (room for a half-precision model
//! whose output is normalized in `f32`). A server that does not normalize is caught at start, on
//! the probe, rather than turning every input into a rejection.
//!
//! Servers have been seen returning all-NaN vectors for a few inputs (an overflow in a
//! half-precision model); on TEI's JSON route those arrive as `null`s, which the endpoint decodes
//! to NaN so that they are refused here, one input at a time.

/// Largest distance of a vector's L2 norm from 1 that still counts as normalized.
pub(crate) const NORM_TOLERANCE: f64 = 1e-2;

/// Whether `vector` is usable as a row of a dataset of `dim`-dimensional vectors, normalized
/// when `unit` is set; if not, why (a reason without numbers before its first `:`, so its kind is
/// a metric label of bounded cardinality).
///
/// ```text
/// the server returned a vector with NaN components
/// the server returned a vector with infinite components
/// the server returned a zero vector
/// the server returned a vector that is not of unit norm: norm 3.2171, normalization was asked for
/// the server returned a vector of another dimension: 384 values, not 768
/// the server returned no vector for this text
/// ```
pub(crate) fn check(vector: &[f32], dim: usize, unit: bool) -> Result<(), String> {
    if vector.is_empty() {
        return Err("the server returned no vector for this text".to_string());
    }
    if vector.len() != dim {
        return Err(format!("the server returned a vector of another dimension: {} values, not {dim}", vector.len()));
    }
    let (mut nan, mut infinite, mut squares) = (false, false, 0f64);
    for &v in vector {
        nan |= v.is_nan();
        infinite |= v.is_infinite();
        squares += f64::from(v) * f64::from(v);
    }
    if nan {
        return Err("the server returned a vector with NaN components".to_string());
    }
    if infinite {
        return Err("the server returned a vector with infinite components".to_string());
    }
    if squares == 0.0 {
        return Err("the server returned a zero vector".to_string());
    }
    let norm = squares.sqrt();
    if unit && (norm - 1.0).abs() > NORM_TOLERANCE {
        return Err(format!(
            "the server returned a vector that is not of unit norm: norm {norm:.4}, normalization was asked for"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_bad_vector_has_its_reason() {
        let unit = |d: usize| vec![(1.0 / d as f64).sqrt() as f32; d];
        assert_eq!(check(&unit(768), 768, true), Ok(()));
        assert_eq!(check(&[3.0, 4.0], 2, false), Ok(()));
        let reason = |v: &[f32], dim: usize| check(v, dim, true).unwrap_err();
        let mut nan = unit(768);
        nan[17] = f32::NAN;
        assert_eq!(reason(&nan, 768), "the server returned a vector with NaN components");
        assert_eq!(reason(&[f32::NAN; 4], 4), "the server returned a vector with NaN components");
        assert_eq!(reason(&[f32::INFINITY, 0.0], 2), "the server returned a vector with infinite components");
        assert_eq!(reason(&[f32::NEG_INFINITY, f32::NAN], 2), "the server returned a vector with NaN components");
        assert_eq!(reason(&[0.0; 8], 8), "the server returned a zero vector");
        assert!(
            reason(&[3.0, 4.0], 2).starts_with("the server returned a vector that is not of unit norm: norm 5.0000")
        );
        assert!(reason(&unit(384), 768).contains("another dimension: 384 values, not 768"));
        assert_eq!(reason(&[], 768), "the server returned no vector for this text");
        // Half precision rounding is within the tolerance.
        let mut rough = unit(768);
        rough[0] *= 1.2;
        assert_eq!(check(&rough, 768, true), Ok(()));
    }
}
