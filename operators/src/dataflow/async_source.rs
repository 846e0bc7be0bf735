//! `async_source`: the one builder of a source operator fed by a tokio task. Both sources (the
//! work-queue scan and the change stream) are this skeleton plus a `SourceState`:
//!
//! - a tokio task reads Mongo and sends messages over a bounded channel (`SourceSender`),
//!   waking the operator through a `SyncActivator`;
//! - the operator holds one capability, follows the process's shared epoch clock, closes its
//!   epoch when due or full (`OpenEpoch`), holds back while too far ahead of the end of the
//!   graph, drains up to `DRAIN` messages per activation, and drops its capability on the
//!   stop signal.
//!
//! What a message means, and what a source keeps between messages, is its `SourceState`: a
//! plain type that unit tests drive without timely. Materialize's `timely-util` async operator
//! builder is the same split (a builder owns the capability and the activations, the logic is
//! handed in).
//!
//! It never reads Mongo itself and never writes anything durable.

use crate::dataflow::source_pacing::{OpenEpoch, SourcePacing};
use crossbeam_channel::{Sender, TryRecvError, TrySendError};
use std::future::Future;
use std::time::Duration;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};
use timely::scheduling::SyncActivator;

/// Messages the channel from a source's task holds before the task waits.
pub(crate) const CHANNEL: usize = 8_192;
/// Messages the operator takes from its channel per activation at most.
pub(crate) const DRAIN: usize = 4_096;
/// How soon a source held back by the end of the graph looks again.
const HELD_BACK_RETRY: Duration = Duration::from_millis(5);

/// The open epoch as a source sees it when the builder asks whether to close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpenView {
    /// Documents emitted in it.
    pub docs: usize,
    /// Whether the checkpoint interval has passed since it opened.
    pub due: bool,
    /// Whether it holds its maximum of documents.
    pub full: bool,
}

/// What the operator does with one message, as its [`SourceState`] decides.
#[derive(Debug, PartialEq)]
pub(crate) enum Step<O, M> {
    /// Emit this at the open epoch, as one more of its documents.
    Emit(O),
    /// Nothing to emit: the message only changed the state.
    Quiet,
    /// The message belongs to the next epoch: close the open one, and take the message again
    /// first at the next activation.
    NextEpoch(M),
    /// The source has emitted everything: drop its capability.
    Finished,
    /// Stop the pass (the stop signal): the source drops its capability at its next activation.
    Stop,
}

/// A source's own decisions, without timely: what each message means and what it keeps
/// between messages. The builder calls it; it never sees a capability.
pub(crate) trait SourceState {
    /// What the task sends.
    type Msg: Send + 'static;
    /// What the operator emits.
    type Out: Clone + 'static;

    /// Whether the source has finished once its task is gone (its channel disconnected). If
    /// not, it holds its epoch until the stop signal (a task that gave up reported a failure,
    /// which stops the run).
    const ENDS_WITH_TASK: bool;

    /// Takes one message from the task.
    fn take(&mut self, msg: Self::Msg) -> Step<Self::Out, Self::Msg>;

    /// Whether to close the open epoch now. By default: when it holds documents and is due or
    /// full.
    fn closes(&self, open: OpenView) -> bool {
        open.docs > 0 && (open.due || open.full)
    }

    /// The epoch `epoch` has ended (the source closed it, or followed the clock past it).
    fn epoch_ended(&mut self, _epoch: u64) {}

    /// The stop signal arrived while the source was at `epoch`; it drops its capability next.
    fn stopping(&mut self, _epoch: u64) {}
}

/// The task's end of the hand-off: sends messages to the operator and wakes it.
pub(crate) struct SourceSender<M> {
    tx: Sender<M>,
    wake: SyncActivator,
}

/// The operator has dropped its receiver: the pass is over, and the task should end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Closed;

impl<M> SourceSender<M> {
    /// Sends `msg`, waiting while the channel is full (the operator is woken to drain it).
    /// Blocking keeps the channel bounded: it runs under `block_in_place`, so the task must run
    /// on a multi-threaded runtime, never on a timely worker.
    pub(crate) fn send(&self, msg: M) -> Result<(), Closed> {
        tokio::task::block_in_place(|| send_blocking(&self.tx, msg, &self.wake))
    }

    /// Wakes the operator.
    pub(crate) fn wake(&self) {
        let _ = self.wake.activate();
    }
}

/// Sends `msg`, waiting while the channel is full; `Err` once the receiver is gone.
fn send_blocking<M>(tx: &Sender<M>, mut msg: M, wake: &SyncActivator) -> Result<(), Closed> {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(m)) => {
                let _ = wake.activate();
                msg = m;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(TrySendError::Disconnected(_)) => return Err(Closed),
        }
    }
}

/// What follows a drain.
enum After {
    /// Come back for more input, and to close the epoch on time.
    Wait,
    NextEpoch,
    Finished,
    Stop,
}

/// A source operator named `name` on `scope`. With `start` (`None` on a worker without this
/// source, which then holds nothing), `task` is spawned on `runtime` with the sending end of
/// the channel, and `state` decides what each message means; the operator starts at
/// `pacing.start_epoch`, moving the shared clock up to it.
pub(crate) fn async_source<'scope, S, F, T>(
    scope: Scope<'scope, u64>,
    name: &str,
    runtime: tokio::runtime::Handle,
    pacing: SourcePacing,
    start: Option<(S, F)>,
) -> StreamVec<'scope, u64, S::Out>
where
    S: SourceState + 'static,
    F: FnOnce(SourceSender<S::Msg>) -> T + 'static,
    T: Future<Output = ()> + Send + 'static,
{
    source(scope, name, move |cap, info| {
        let wake = scope.worker().sync_activator_for(info.address.to_vec());
        let me = scope.activator_for(info.address.clone());
        let mut live = start.map(|(state, task)| {
            let (tx, rx) = crossbeam_channel::bounded::<S::Msg>(CHANNEL);
            runtime.spawn(task(SourceSender { tx, wake }));
            (state, rx)
        });
        let mut cap = live.is_some().then_some(cap);
        if let Some(c) = cap.as_mut() {
            c.downgrade(&pacing.clock.advance_to(pacing.start_epoch));
        }
        let mut open = OpenEpoch::new();
        // A message held for the next epoch.
        let mut held: Option<S::Msg> = None;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if pacing.stop.is_stopped() {
                if let Some((state, _)) = live.as_mut() {
                    state.stopping(*c.time());
                }
                cap = None;
                // Dropping the receiver ends the task at its next send.
                live = None;
                return;
            }
            let Some((state, rx)) = live.as_mut() else { return };
            let before = *c.time();
            if open.follow(&pacing, c) {
                state.epoch_ended(before);
            }
            let view = OpenView { docs: open.docs(), due: open.due(&pacing), full: open.full(&pacing) };
            if state.closes(view) {
                state.epoch_ended(*c.time());
                open.close(&pacing, c);
            }
            if open.held_back(&pacing, *c.time()) {
                me.activate_after(HELD_BACK_RETRY);
                return;
            }
            let mut after = After::Wait;
            {
                let mut session = output.session(c);
                for _ in 0..DRAIN {
                    let msg = match held.take() {
                        Some(msg) => msg,
                        None => match rx.try_recv() {
                            Ok(msg) => msg,
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                if S::ENDS_WITH_TASK {
                                    after = After::Finished;
                                }
                                break;
                            }
                        },
                    };
                    match state.take(msg) {
                        Step::Emit(out) => {
                            session.give(out);
                            open.add();
                            if open.full(&pacing) || open.docs_ahead() >= pacing.max_docs_ahead {
                                break;
                            }
                        }
                        Step::Quiet => {}
                        Step::NextEpoch(msg) => {
                            held = Some(msg);
                            after = After::NextEpoch;
                            break;
                        }
                        Step::Finished => {
                            after = After::Finished;
                            break;
                        }
                        Step::Stop => {
                            after = After::Stop;
                            break;
                        }
                    }
                }
            }
            match after {
                After::Wait => me.activate_after(open.next_wake(&pacing, !rx.is_empty())),
                After::NextEpoch => {
                    state.epoch_ended(*c.time());
                    open.close(&pacing, c);
                    me.activate();
                }
                // Everything before the stop is emitted; the next activation drops the
                // capability.
                After::Stop => {
                    pacing.stop.stop();
                    me.activate();
                }
                After::Finished => cap = None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;
    use timely::dataflow::operators::{Inspect, Probe};
    use timely::dataflow::ProbeHandle;

    /// Emits every number but 0 (the end) and 9 (stop the pass); sends 3 to the next epoch once.
    struct Numbers {
        deferred: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl SourceState for Numbers {
        type Msg = u32;
        type Out = u32;
        const ENDS_WITH_TASK: bool = true;

        fn take(&mut self, n: u32) -> Step<u32, u32> {
            match n {
                0 => Step::Finished,
                9 => Step::Stop,
                3 if !self.deferred => {
                    self.deferred = true;
                    Step::NextEpoch(3)
                }
                n => Step::Emit(n),
            }
        }

        fn epoch_ended(&mut self, epoch: u64) {
            self.log.lock().push(format!("ended {epoch}"));
        }

        fn stopping(&mut self, epoch: u64) {
            self.log.lock().push(format!("stopping {epoch}"));
        }
    }

    /// Runs a source whose task sends `sent` from epoch 5 until its capability is gone: what it
    /// emitted at which epoch, what its state was told, the clock's epoch, and whether the pass
    /// was stopped.
    fn run(sent: &'static [u32]) -> (Vec<(u64, u32)>, Vec<String>, u64, bool) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let handle = rt.handle().clone();
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Numbers { deferred: false, log: log.clone() };
        let (got, clock, stopped) = timely::execute_directly(move |worker| {
            let probe = ProbeHandle::new();
            let pacing = SourcePacing::new(5, Duration::from_secs(600), 10_000, probe.clone());
            let (clock, stop) = (pacing.clock.clone(), pacing.stop.clone());
            let got = Arc::new(Mutex::new(Vec::new()));
            let sink = got.clone();
            worker.dataflow::<u64, _, _>(|scope| {
                let task = move |tx: SourceSender<u32>| async move {
                    for &n in sent {
                        if tx.send(n).is_err() {
                            return;
                        }
                    }
                    tx.wake();
                };
                async_source(scope, "Numbers", handle, pacing, Some((state, task)))
                    .inspect_core(move |event| {
                        if let Ok((stamp, data)) = event {
                            let t = *stamp.expect_singleton();
                            sink.lock().extend(data.iter().map(|n| (t, *n)));
                        }
                    })
                    .probe_with(&probe);
            });
            while !probe.done() {
                worker.step_or_park(Some(Duration::from_millis(5)));
            }
            let got = got.lock().clone();
            (got, clock.now(), stop.is_stopped())
        });
        let log = log.lock().clone();
        (got, log, clock, stopped)
    }

    #[test]
    fn emits_in_order_and_moves_a_held_message_to_the_next_epoch() {
        let (got, log, clock, stopped) = run(&[1, 2, 3, 4, 0]);
        assert_eq!(got, vec![(5, 1), (5, 2), (6, 3), (6, 4)]);
        assert_eq!(log, vec!["ended 5"]);
        assert_eq!((clock, stopped), (6, false));
    }

    #[test]
    fn a_stop_emits_what_came_before_and_nothing_after() {
        let (got, log, clock, stopped) = run(&[1, 9, 2]);
        assert_eq!(got, vec![(5, 1)]);
        assert_eq!(log, vec!["stopping 5"]);
        assert_eq!((clock, stopped), (5, true));
    }

    #[test]
    fn a_task_that_ends_ends_a_source_that_ends_with_it() {
        let (got, log, _, stopped) = run(&[1, 2]);
        assert_eq!(got, vec![(5, 1), (5, 2)]);
        assert!(log.is_empty() && !stopped);
    }
}
