//! `PassControl`: what worker 0 tells every other worker about a pass of the dataflow, in one
//! process or across a cluster of them — how the pass starts ([`PassStart`]: its first epoch, the
//! scan plan, whether a change stream runs, or that the run is over), and when its sources must
//! stop ([`StopRelay`]).
//!
//! Worker 0 (process 0) owns the checkpoint and decides; the others only learn what it decided,
//! through timely's own channels, so a cluster needs no shared state directory and no second
//! connection between processes. It never carries the pass's data: each message is tiny and
//! travels in its own small dataflow, which holds back no frontier of the main one.

use crate::epoch_clock::StopSignal;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;
use timely::ExchangeData;

/// How a pass starts, as worker 0 decided it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassStart {
    /// The pass's first epoch: one past the last committed.
    pub start_epoch: u64,
    /// The work-queue scan plan as BSON bytes ([`crate::work_queue::ScanPlan::to_bytes`]), or no
    /// scan.
    pub scan: Option<Vec<u8>>,
    /// Whether worker 0 follows a change stream (every worker builds the same graph).
    pub streaming: bool,
    /// The run is over: no pass follows.
    pub finish: bool,
    /// In a cluster, a file worker 0 placed in the output directory: every process must see it
    /// there, since recovery reads and removes every process's files from worker 0's view.
    pub out_marker: Option<String>,
}

impl PassStart {
    /// The message that ends a run.
    pub fn finish() -> PassStart {
        PassStart { start_epoch: 0, scan: None, streaming: false, finish: true, out_marker: None }
    }
}

/// Gives every worker worker 0's `offer` (the others pass `None`), stepping the worker until it
/// arrived. Every worker must call it at the same point, as with any dataflow.
///
/// ```
/// use tweet_embed_operators::pass_control::agree;
/// let got = timely::execute(timely::Config::process(2), |worker| {
///     let offer = (worker.index() == 0).then_some(42u64);
///     agree(worker, offer)
/// })
/// .unwrap()
/// .join();
/// assert!(got.into_iter().all(|r| r.unwrap() == Some(42)));
/// ```
pub fn agree<T: ExchangeData + Clone>(worker: &mut Worker, offer: Option<T>) -> Option<T> {
    let got = Rc::new(RefCell::new(None));
    let sink = got.clone();
    let (mut input, probe): (InputHandle<u64, CapacityContainerBuilder<Vec<T>>>, ProbeHandle<u64>) = worker
        .dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<T>>();
            let (probe, _) = stream
                .broadcast()
                .inspect(move |x| {
                    sink.borrow_mut().replace(x.clone());
                })
                .probe();
            (input, probe)
        });
    if worker.index() == 0 {
        if let Some(v) = offer {
            input.send(v);
        }
    }
    input.close();
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    got.take()
}

/// Relays a stop from worker 0 to every worker: a signal to the run (SIGINT) reaches one process,
/// but every worker's sources must stop for the pass to drain.
pub struct StopRelay {
    input: Option<InputHandle<u64, CapacityContainerBuilder<Vec<()>>>>,
    sent: bool,
}

impl StopRelay {
    /// Builds the relay's dataflow; a stop that arrives trips `local`, the signal this worker's
    /// sources watch. Every worker must build it at the same point.
    ///
    /// ```
    /// use tweet_embed_operators::epoch_clock::StopSignal;
    /// use tweet_embed_operators::pass_control::StopRelay;
    /// let stopped = timely::execute(timely::Config::process(2), |worker| {
    ///     let local = StopSignal::default();
    ///     let mut relay = StopRelay::new(worker, local.clone());
    ///     let leader = StopSignal::default();
    ///     leader.stop();
    ///     while !local.is_stopped() {
    ///         relay.poll(worker.index(), &leader);
    ///         worker.step();
    ///     }
    ///     relay.close();
    ///     while worker.step() {}
    ///     local.is_stopped()
    /// })
    /// .unwrap()
    /// .join();
    /// assert!(stopped.into_iter().all(|r| r.unwrap()));
    /// ```
    pub fn new(worker: &mut Worker, local: StopSignal) -> StopRelay {
        let input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<()>>();
            stream.broadcast().inspect(move |_| local.stop());
            input
        });
        StopRelay { input: Some(input), sent: false }
    }

    /// On worker 0: sends the stop once `stop` is tripped. Elsewhere a no-op.
    pub fn poll(&mut self, worker_index: usize, stop: &StopSignal) {
        if worker_index != 0 || self.sent || !stop.is_stopped() {
            return;
        }
        if let Some(input) = self.input.as_mut() {
            input.send(());
            input.advance_to(1);
        }
        self.sent = true;
    }

    /// Closes this worker's side, so the relay's dataflow can complete with the pass.
    pub fn close(&mut self) {
        self.input = None;
    }
}
