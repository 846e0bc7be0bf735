//! What the benchmarks share: settings from the environment and medians.

/// The environment variable `name` parsed as `T`, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median of `v` by `key` (the upper one of an even count). Panics on an empty `v`.
pub fn median_by<T>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    assert!(!v.is_empty(), "the median of nothing");
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v.swap_remove(v.len() / 2)
}

/// The median of `v` (the upper one of an even count). Panics on an empty `v`.
pub fn median(v: Vec<f64>) -> f64 {
    median_by(v, |x| *x)
}
