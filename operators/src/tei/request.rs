//! The life of one request of a pool: dispatch, call, and what a failure leads to. Transient
//! failures are retried with exponential backoff and jitter, forever, on whichever endpoint is
//! free; a request the server finds too large is split in halves; a request with an input the
//! server refuses is bisected until that input stands alone and becomes a rejection. A backend
//! error (424, or 500) that follows an input rather than an endpoint — the endpoint answers other
//! requests, and this request fails on [`SUSPECT_ENDPOINTS`] endpoints (or twice on the only
//! one) — is bisected the same way, and the one input it follows becomes a rejection with the
//! server's reason (TEI #61: `CublasError(CUBLAS_STATUS_NOT_SUPPORTED)` for one input's shape);
//! such failures move neither the endpoint's breaker nor its limit. Every vector
//! of an answer is checked (`vectors`): one that is not usable (NaN or infinite components, a zero
//! or non-unit norm, another dimension) is a rejection of its input alone, never a row, and the
//! others of the answer are kept. Only an answer whose vectors all have another dimension is the
//! endpoint's fault (it serves another model now) and is retried elsewhere.
//!
//! This module owns those rules and the backoff. It never chooses an endpoint (see `dispatch`)
//! and never drops an input: every input of a request ends with a vector or a reason.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::batcher::{padded_tokens, Request};
use super::budget::TokenBudget;
use super::dispatch::Dispatcher;
use super::error::{CallError, FailureKind};
use super::stats::Counters;
use super::vectors;

/// The outcome of one input: its vector, or why it has none (e.g.
/// `text the server refuses: Input validation error: ...`).
pub type InputOutcome = Result<Vec<f32>, String>;

/// Distinct endpoints a request must fail on with a backend error, each while answering other
/// requests, before the failure is taken to follow its inputs.
pub(crate) const SUSPECT_ENDPOINTS: usize = 2;
/// How recent an endpoint's last answer must be for its backend error to count against the
/// request's inputs rather than the endpoint.
pub(crate) const ANSWERED_WITHIN: Duration = Duration::from_secs(10);

/// Whether `err` is a backend failure that an input can cause: TEI's 424 `Backend`, or a 500.
fn is_backend_failure(err: &CallError) -> bool {
    err.cause == "424" || err.cause == "500"
}

/// What one request of an `embed` call needs from the pool.
pub(crate) struct Shared {
    pub dispatcher: Dispatcher,
    pub budget: Arc<TokenBudget>,
    pub counters: Counters,
    pub dim: usize,
    /// Whether vectors must be of unit length (`--normalize`, TEI's default true).
    pub normalized: bool,
    /// The embedding options every request carries.
    pub options: super::options::EmbedOptions,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// How a request ended.
pub(crate) enum Step {
    /// Outcomes for the inputs of `range`, in order.
    Done(Range<usize>, Vec<InputOutcome>),
    /// The request became smaller ones, to run on their own.
    Split(Vec<Range<usize>>),
}

/// Runs the request for `request.texts[range]` until it ends in outcomes or a split.
pub(crate) async fn run(shared: Arc<Shared>, request: Arc<Request>, range: Range<usize>) -> Step {
    let texts = &request.texts[range.clone()];
    let raw = &request.raw_tokens[range.clone()];
    let tokens: Vec<u32> = raw.iter().map(|&r| shared.budget.calibrated(r)).collect();
    let budget_tokens: u64 = tokens.iter().map(|&t| u64::from(t)).sum();
    // What a padded server computes for it, every input padded to the longest.
    let padded = padded_tokens(&tokens);
    let counters = &shared.counters;
    let mut attempt: u32 = 0;
    // Endpoints this request failed on with a backend error while they answered others.
    let mut failed_on: Vec<usize> = Vec::new();
    loop {
        let lease = shared.dispatcher.acquire(padded, texts.len() as u64, &failed_on).await;
        Counters::add(&counters.requests, 1);
        let started = Instant::now();
        let result = lease.endpoint().embed(texts).await.and_then(|reply| {
            let first = reply.vectors.first().map_or(0, Vec::len);
            match first {
                dim if dim != 0 && dim != shared.dim && reply.vectors.iter().all(|v| v.len() == dim) => {
                    Err(CallError::transport(
                        FailureKind::Rejected,
                        "dimension",
                        format!("returned vectors of dimension {dim}, not the pool's {}", shared.dim),
                    ))
                }
                _ => Ok(reply),
            }
        });
        let err = match result {
            Ok(reply) => {
                let outcomes: Vec<InputOutcome> = reply
                    .vectors
                    .into_iter()
                    .map(|v| vectors::check(&v, shared.dim, shared.normalized).map(|()| v))
                    .collect();
                let refused: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
                let invalid = refused.len();
                if let Some(reason) = refused.first() {
                    lease.invalid_vectors(invalid, reason);
                }
                let valid = texts.len() - invalid;
                lease.finish(Ok((valid, reply.compute_tokens.unwrap_or(budget_tokens))));
                counters.latency(started.elapsed());
                Counters::add(&counters.succeeded, 1);
                Counters::add(&counters.embedded, valid as u64);
                Counters::add(&counters.rejected, invalid as u64);
                Counters::add(&counters.invalid_vectors, invalid as u64);
                Counters::add(&counters.budget_tokens, budget_tokens);
                Counters::add(&counters.padded_tokens, padded);
                if let Some(tokens) = reply.compute_tokens {
                    Counters::add(&counters.compute_tokens, tokens);
                    shared.budget.observe(raw, tokens);
                }
                return Step::Done(range, outcomes);
            }
            Err(err) => err,
        };
        let url = lease.endpoint().url().to_string();
        if is_backend_failure(&err) && lease.answered_within(ANSWERED_WITHIN) {
            failed_on.push(lease.index());
            lease.finish_input_failure(&err);
            let mut distinct = failed_on.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let only_one = shared.dispatcher.slots.len() == 1;
            if distinct.len() >= SUSPECT_ENDPOINTS || (only_one && failed_on.len() >= SUSPECT_ENDPOINTS) {
                if range.len() > 1 {
                    Counters::add(&counters.bisections, 1);
                    tracing::debug!(endpoint = %url, error = %err, inputs = range.len(), "TEI backend fails on a request's inputs; bisecting");
                    return Step::Split(halves(range));
                }
                Counters::add(&counters.rejected, 1);
                let reason = format!(
                    "text the servers fail on: {} (on {} endpoint{}, which embed other texts)",
                    err.message,
                    distinct.len(),
                    if distinct.len() == 1 { "" } else { "s" }
                );
                tracing::warn!(endpoint = %url, %reason, "an input the TEI backend cannot compute is rejected; the others go on");
                return Step::Done(range, vec![Err(reason)]);
            }
        } else {
            if err.is_connect() || err.cause == "connection" {
                lease.hold_out_for_check(&err.to_string());
            }
            lease.finish(Err(&err));
        }
        match err.kind {
            FailureKind::Transient | FailureKind::Rejected => {
                counters.retry(&err.cause);
                attempt = attempt.saturating_add(1);
                let delay = backoff(attempt, shared.retry_initial, shared.retry_max);
                tracing::debug!(endpoint = %url, error = %err, attempt, ?delay, inputs = texts.len(), "TEI call failed; retrying");
                tokio::time::sleep(delay).await;
            }
            FailureKind::TooLarge if range.len() > 1 => {
                Counters::add(&counters.splits, 1);
                tracing::debug!(endpoint = %url, error = %err, inputs = range.len(), "TEI request too large; splitting");
                return Step::Split(halves(range));
            }
            FailureKind::InputRefused if range.len() > 1 => {
                Counters::add(&counters.bisections, 1);
                return Step::Split(halves(range));
            }
            FailureKind::TooLarge | FailureKind::InputRefused => {
                Counters::add(&counters.rejected, 1);
                let reason = match err.cause.as_str() {
                    "payload" => format!("text too large for one request: {}", err.message),
                    _ => format!("text the server refuses: {}", err.message),
                };
                tracing::debug!(endpoint = %url, %reason, "TEI refuses an input");
                return Step::Done(range, vec![Err(reason)]);
            }
        }
    }
}

fn halves(range: Range<usize>) -> Vec<Range<usize>> {
    let mid = range.start + range.len() / 2;
    vec![range.start..mid, mid..range.end]
}

/// Delay before retry `attempt` (1-based): `initial` doubling up to `max`, with jitter over the
/// upper half so requests that failed together do not come back together.
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let ceiling = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    ceiling.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_with_jitter() {
        let (initial, max) = (Duration::from_millis(50), Duration::from_secs(5));
        for attempt in 1..40 {
            let ceiling = Duration::from_millis(50 * (1u64 << (attempt - 1).min(20))).min(max);
            let d = backoff(attempt, initial, max);
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
        assert_eq!(halves(3..8), vec![3..5, 5..8]);
    }
}
