//! The backfill's passes: another while the work queue has documents, each after the first over
//! whole partitions; an error if a pass read none of what remains (something keeps the scan from
//! seeing them, and another pass would not either).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{anyhow, bail};

use super::engine::Engine;
use super::passes::{PassPlan, Planner};
use crate::dataflow::epoch_clock::StopSignal;
use crate::mongo::error::{describe, retry};

pub(crate) fn backfill_planner(engine: Arc<Engine>) -> Planner {
    let (mut passes, mut last_done) = (0usize, 0u64);
    Box::new(move || {
        if passes > 0 {
            let t = &engine.totals;
            let done = t.embedded.load(Ordering::Relaxed) + t.rejected.load(Ordering::Relaxed);
            let q = &engine.queue;
            let remaining = engine
                .runtime
                .block_on(retry(&q.retry, "counting the work queue", || q.remaining()))
                .map_err(|e| anyhow!("counting the work queue: {}", describe(&e)))?;
            if remaining == 0 {
                return Ok(None);
            }
            if done == last_done {
                bail!("{remaining} documents remain in the work queue but this pass read none of them");
            }
            last_done = done;
        }
        let q = &engine.queue;
        if passes == 0 {
            if let Some(example) = engine.runtime.block_on(q.left_out_as_retweeted_false()) {
                tracing::warn!("{}", q.retweeted_false_warning(&example));
            }
        }
        let parts = engine
            .runtime
            .block_on(retry(&q.retry, "reading the work queue's partitions", || q.partitions()))
            .map_err(|e| anyhow!("reading the work queue's partitions: {}", describe(&e)))?;
        if parts.is_empty() {
            return Ok(None);
        }
        passes += 1;
        Ok(Some(PassPlan { scan: Some(passes > 1), stream: None, stop: StopSignal::default() }))
    })
}
