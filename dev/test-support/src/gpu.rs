//! Simulated GPUs with a service time, for tests and benches whose requests must queue or
//! overlap (instant GPUs never do).

use std::time::Duration;

use dev_tei::SimConfig;

/// How fast one simulated GPU serves a server batch: `base` plus the batch's tokens at
/// `tokens_per_second`. Everything else is [`SimConfig::default`]'s (768 dimensions, TEI's
/// default limits, no faults).
#[derive(Clone, Copy, Debug)]
pub struct Gpu {
    /// Fixed time per server batch.
    pub base: Duration,
    /// Tokens one GPU computes per second (padding included).
    pub tokens_per_second: f64,
}

impl Gpu {
    /// `gpus` simulated GPUs of this speed.
    pub fn sim(self, gpus: usize) -> SimConfig {
        SimConfig { gpus, base: self.base, tokens_per_second: self.tokens_per_second, ..SimConfig::default() }
    }
}
