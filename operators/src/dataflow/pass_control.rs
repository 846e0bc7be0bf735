//! `PassControl`: what worker 0 tells every other worker about a pass of the dataflow, in one
//! process or across a cluster of them — how the pass starts ([`PassStart`]: its first epoch, the
//! scan plan, whether a change stream runs, or that the run is over), and, while it runs, when its
//! sources must stop and which epoch they are at ([`PassRelay`]).
//!
//! Worker 0 (process 0) owns the checkpoint and decides; the others only learn what it decided,
//! through timely's own channels, so a cluster needs no shared state directory and no second
//! connection between processes. It never carries the pass's data: each message is tiny and
//! travels in its own small dataflow, which holds back no frontier of the main one.

use crate::dataflow::epoch_clock::{EpochClock, StopSignal};
use crate::table::output::IdType;
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
    /// The work-queue scan plan as BSON bytes ([`crate::mongo::work_queue::ScanPlan::to_bytes`]), or no
    /// scan.
    pub scan: Option<Vec<u8>>,
    /// Whether worker 0 follows a change stream (every worker builds the same graph).
    pub streaming: bool,
    /// The run is over: no pass follows.
    pub finish: bool,
    /// Why, when it ended with an error on process 0.
    pub failed: Option<String>,
    /// In a cluster, a file worker 0 placed in the output directory: every process must see it
    /// there, since recovery reads and removes every process's files from worker 0's view.
    pub out_marker: Option<String>,
    /// The dataset's identity as the leading process recorded it (JSON): a process whose
    /// settings or servers would make other vectors refuses the pass.
    pub identity: Option<String>,
    /// The type of the output's `id` column, as the leading process's checkpoint records it.
    pub id_type: IdType,
}

impl PassStart {
    /// The message that ends a run; `failed` says why when it ends with an error.
    pub fn finish(failed: Option<String>) -> PassStart {
        PassStart {
            start_epoch: 0,
            scan: None,
            streaming: false,
            finish: true,
            failed,
            out_marker: None,
            identity: None,
            id_type: IdType::ExtJson,
        }
    }
}

/// Gives every worker worker 0's `offer` (the others pass `None`), stepping the worker until it
/// arrived, or `None` once `abort` says to stop waiting (worker 0 failed and will send nothing).
/// Every worker must call it at the same point, as with any dataflow.
///
/// ```
/// use tweet_embed_operators::dataflow::pass_control::agree;
/// let got = timely::execute(timely::Config::process(2), |worker| {
///     let offer = (worker.index() == 0).then_some(42u64);
///     agree(worker, offer, &|| false)
/// })
/// .unwrap()
/// .join();
/// assert!(got.into_iter().all(|r| r.unwrap() == Some(42)));
/// ```
pub fn agree<T: ExchangeData + Clone>(worker: &mut Worker, offer: Option<T>, abort: &dyn Fn() -> bool) -> Option<T> {
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
        if abort() {
            return None;
        }
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    got.take()
}

/// What a [`PassRelay`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Signal {
    /// Stop reading (from worker 0).
    Stop,
    /// A process's sources reached this epoch.
    Epoch(u64),
}

/// Relays what every worker must hear during a pass: a stop from worker 0 (a signal to the run,
/// SIGINT, reaches one process, but every worker's sources must stop for the pass to drain), and
/// each process's epoch, so the processes' epoch clocks move together. A process whose sources
/// sat at an older epoch would hold the frontier back there and throttle every other process's
/// sources to that epoch plus their lead; with the relay the newest epoch anywhere is every
/// process's epoch, as the shared clock makes it among one process's workers.
pub struct PassRelay {
    input: Option<InputHandle<u64, CapacityContainerBuilder<Vec<Signal>>>>,
    stop_sent: bool,
    epoch_sent: u64,
}

impl PassRelay {
    /// Builds the relay's dataflow; a stop that arrives trips `local`, the signal this worker's
    /// sources watch, and an epoch moves `clock` on. Every worker must build it at the same point.
    ///
    /// ```
    /// use tweet_embed_operators::dataflow::epoch_clock::{EpochClock, StopSignal};
    /// use tweet_embed_operators::dataflow::pass_control::PassRelay;
    /// let heard = timely::execute(timely::Config::process(2), |worker| {
    ///     // Each worker has its own clock and stop here, as processes of a cluster do.
    ///     let (local, clock) = (StopSignal::default(), EpochClock::new(1));
    ///     let mut relay = PassRelay::new(worker, local.clone(), clock.clone());
    ///     let leader = StopSignal::default();
    ///     leader.stop();
    ///     if worker.index() == 1 {
    ///         clock.advance_to(7);
    ///     }
    ///     while !local.is_stopped() || clock.now() < 7 {
    ///         relay.poll(worker.index(), true, &leader, &clock);
    ///         worker.step();
    ///     }
    ///     relay.close();
    ///     while worker.step() {}
    ///     (local.is_stopped(), clock.now())
    /// })
    /// .unwrap()
    /// .join();
    /// assert!(heard.into_iter().all(|r| r.unwrap() == (true, 7)));
    /// ```
    pub fn new(worker: &mut Worker, local: StopSignal, clock: EpochClock) -> PassRelay {
        let input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<Signal>>();
            stream.broadcast().inspect(move |signal| match signal {
                Signal::Stop => local.stop(),
                Signal::Epoch(e) => {
                    clock.advance_to(*e);
                }
            });
            input
        });
        PassRelay { input: Some(input), stop_sent: false, epoch_sent: 0 }
    }

    /// Sends what is new: on worker 0, the stop once `stop` is tripped; on a worker that speaks
    /// for its process (`speaks`: one per process), the clock's epoch when it moved on.
    pub fn poll(&mut self, worker_index: usize, speaks: bool, stop: &StopSignal, clock: &EpochClock) {
        let Some(input) = self.input.as_mut() else { return };
        let mut sent = false;
        if worker_index == 0 && !self.stop_sent && stop.is_stopped() {
            input.send(Signal::Stop);
            self.stop_sent = true;
            sent = true;
        }
        let now = clock.now();
        if speaks && now > self.epoch_sent {
            input.send(Signal::Epoch(now));
            self.epoch_sent = now;
            sent = true;
        }
        if sent {
            input.flush();
        }
    }

    /// Closes this worker's side, so the relay's dataflow can complete with the pass.
    pub fn close(&mut self) {
        self.input = None;
    }
}
