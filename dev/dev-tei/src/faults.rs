//! Fault injection of one simulated GPU: error rate, dropped connections, slow answers,
//! unhealthy state and vectors that are not numbers, settable at start (flags) and at run time
//! (hooks on the handle).
//!
//! This module owns the per-request verdict and its seeded RNG; it never touches sockets (the
//! server acts on a verdict) and never decides the GPU's up/down state (the server's listener
//! does). Every verdict draws the same four numbers whatever the rates are, so a run with a given
//! `--seed` and request order is reproducible even when rates change mid-run. Which texts get a
//! NaN vector depends on the text alone ([`returns_nan`]), not on the RNG, so a test knows them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed domain of the NaN fault's draw per text.
const NAN_DOMAIN: u64 = 0x6e61_6e5f_6661_756c;

/// Rates of the random faults, each a probability per model request (`/embed`,
/// `/v1/embeddings`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Fraction of requests answered with an error: half 503 `Unhealthy`, half 424 `Backend`.
    pub error_rate: f64,
    /// Fraction of requests whose connection is closed without an answer.
    pub drop_rate: f64,
    /// Fraction of requests answered `slow` late.
    pub slow_rate: f64,
    /// Extra latency of a slow request.
    pub slow: Duration,
    /// Fraction of texts whose vector is all NaN, on both routes (JSON `null`s, as TEI writes
    /// NaN, or base64 NaN bytes): a model overflowing in half precision. Which texts is
    /// [`returns_nan`] of the text, the same on every GPU and every run.
    pub nan_rate: f64,
    /// Any request holding an input that contains this text is answered 424 `Backend`
    /// (`CublasError(CUBLAS_STATUS_NOT_SUPPORTED)`, as TEI issue #61 reports for inputs a backend
    /// cannot compute), on every attempt: a poisoned input, not a failing GPU.
    pub poison: Option<String>,
}

/// Whether a GPU whose [`FaultConfig::nan_rate`] is `rate` returns an all-NaN vector for `text`
/// (the whole input as sent, before truncation). Token-id inputs never do.
pub fn returns_nan(text: &str, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let draw = (xxh3_64_with_seed(text.as_bytes(), NAN_DOMAIN) >> 11) as f64 / (1u64 << 53) as f64;
    draw < rate
}

/// What to do with one model request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Serve it, after `extra` more time.
    Serve { extra: Duration },
    /// Close the connection without answering.
    Drop,
    /// Answer 503 `Unhealthy`.
    Unhealthy,
    /// Answer 424 `Backend`.
    Backend,
}

pub(crate) struct Faults {
    config: Mutex<FaultConfig>,
    unhealthy: AtomicBool,
    rng: Mutex<fastrand::Rng>,
}

impl Faults {
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        Self {
            config: Mutex::new(config),
            unhealthy: AtomicBool::new(false),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    pub fn set_unhealthy(&self, unhealthy: bool) {
        self.unhealthy.store(unhealthy, Ordering::SeqCst);
    }

    pub fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::SeqCst)
    }

    pub fn update(&self, change: impl FnOnce(&mut FaultConfig)) {
        change(&mut self.config.lock());
    }

    /// The poisoned text now, if any.
    pub fn poison(&self) -> Option<String> {
        self.config.lock().poison.clone()
    }

    /// The NaN fault's rate now.
    pub fn nan_rate(&self) -> f64 {
        self.config.lock().nan_rate
    }

    /// The verdict for the next model request.
    pub fn decide(&self) -> Verdict {
        let (drop, error, kind, slow) = {
            let mut rng = self.rng.lock();
            (rng.f64(), rng.f64(), rng.bool(), rng.f64())
        };
        if self.is_unhealthy() {
            return Verdict::Unhealthy;
        }
        let config = self.config.lock();
        if drop < config.drop_rate {
            Verdict::Drop
        } else if error < config.error_rate {
            if kind {
                Verdict::Unhealthy
            } else {
                Verdict::Backend
            }
        } else if slow < config.slow_rate {
            Verdict::Serve { extra: config.slow }
        } else {
            Verdict::Serve { extra: Duration::ZERO }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_respected_and_reproducible() {
        let config = FaultConfig { error_rate: 0.3, ..Default::default() };
        let run = || {
            let faults = Faults::new(config.clone(), 7);
            (0..2000).map(|_| faults.decide()).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let errors = a.iter().filter(|v| matches!(v, Verdict::Unhealthy | Verdict::Backend)).count();
        assert!((500..700).contains(&errors), "{errors}");
        assert!(a.contains(&Verdict::Backend) && a.contains(&Verdict::Unhealthy));
    }

    #[test]
    fn nan_texts_are_a_fixed_fraction_chosen_by_the_text() {
        let texts: Vec<String> = (0..10_000).map(|i| format!("text {i}")).collect();
        let nan = texts.iter().filter(|t| returns_nan(t, 0.02)).count();
        assert!((150..250).contains(&nan), "{nan}");
        assert!(texts.iter().all(|t| !returns_nan(t, 0.0)));
        assert!(texts.iter().all(|t| returns_nan(t, 1.0)));
        assert!(texts.iter().filter(|t| returns_nan(t, 0.02)).all(|t| returns_nan(t, 0.05)), "nested by rate");
    }
}
