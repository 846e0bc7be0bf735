//! [`GpuState`]: everything the requests of one simulated GPU share — its configuration, token
//! counter, permits, queue, metrics, faults and `/info` body. The routes and the embed handler
//! read it; only `DevTei::start` builds it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::config::SimConfig;
use super::faults::Faults;
use super::gpu::GpuQueue;
use super::metrics::Metrics;
use super::tokens::TokenCounter;

/// Everything the requests of one GPU share.
pub(crate) struct GpuState {
    pub config: Arc<SimConfig>,
    pub tokenizer: Arc<TokenCounter>,
    pub permits: Semaphore,
    pub queue: GpuQueue,
    pub metrics: Arc<Metrics>,
    pub faults: Faults,
    /// `/info`'s body, fixed for the GPU's life.
    pub info: Bytes,
    /// Texts embedded and how often, while a test records them ([`crate::DevTei::record_texts`]).
    pub texts: parking_lot::Mutex<Option<std::collections::HashMap<String, u32>>>,
    /// The embedding options of the requests received, and how many carried each.
    pub options: parking_lot::Mutex<std::collections::BTreeMap<Received, u64>>,
    /// The most tokens one request carried (prompts included, after truncation).
    pub max_request_tokens: std::sync::atomic::AtomicUsize,
}

/// The embedding options a request carried, as sent (`None`: not in the request).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Received {
    /// `prompt_name`.
    pub prompt_name: Option<String>,
    /// `dimensions`.
    pub dimensions: Option<usize>,
    /// `normalize`.
    pub normalize: Option<bool>,
    /// `truncation_direction`, lower case.
    pub truncation_direction: Option<String>,
}

impl GpuState {
    /// Counts a request's options.
    pub(crate) fn note_options(&self, received: Received) {
        *self.options.lock().entry(received).or_insert(0) += 1;
    }
}
