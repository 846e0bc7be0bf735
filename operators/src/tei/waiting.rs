//! Texts waiting to be sent ([`WaitingTexts`]), and the order requests are cut from them: one
//! sweep over token lengths that runs across epochs.
//!
//! A padded server batch holds a few hundred tweets and computes each as long as its longest
//! ([`super::batcher`]'s docs). It pads little only when the requests waiting at the server
//! together were cut from a narrow band of lengths, that is when the requests cut one after
//! another are: one sorted sweep over a few thousand tweets. A sweep per epoch is not that when
//! epochs are small: epochs sized to the checkpoint interval with one sweep each cut the padded
//! figure from 0.92 to 0.51 (`benches/README.md`, backfill_gpus history). So the sweep ignores
//! epochs. It moves up the lengths, then down, taking whatever waits at each length, of any epoch;
//! a request may hold texts of several epochs, each carrying its own.
//!
//! Bounds: a pass takes the texts that waited when it began, and of those that arrive meanwhile
//! ahead of it at most as many again (at least [`MIN_LATE`]: the first epochs of a run arrive
//! while the first pass runs, and belong to it); the others wait for the next pass, which runs
//! the other way. So a pass is never longer than twice what waited when it began (or the floor),
//! and every text is cut within two passes of its arrival: an epoch completes within two passes
//! over what the source's pacing lets in, however texts keep arriving. [`RequestOrder::Arrival`] cuts first in, first out, across epochs alike.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::batcher::{json_string_len, RequestBatcher, RequestOrder};

/// Texts not yet sent, each with the item it belongs to, from which requests are cut in the
/// batcher's [`RequestOrder`]. Items are counted once when pushed.
pub struct WaitingTexts<T> {
    order: RequestOrder,
    queue: BTreeMap<WaitingKey, Waiting<T>>,
    /// Texts waiting per epoch.
    epochs: BTreeMap<u64, usize>,
    sweep: Sweep,
    next_seq: u64,
    /// The least a pass may take of late arrivals ([`MIN_LATE`]).
    min_late: usize,
}

/// Where the sweep is: its direction, the last key it passed (None: a pass starts at the end it
/// moves from), the first arrival that is late for this pass, and how many late arrivals ahead
/// of it the pass may still take.
#[derive(Debug, Clone, Copy)]
struct Sweep {
    up: bool,
    at: Option<WaitingKey>,
    limit: u64,
    late: usize,
}

impl Sweep {
    /// The first of `ahead` (keys in the pass's direction) this pass takes; late arrivals it
    /// passes over (its allowance spent) are noted in `passed`.
    fn first_taken<'k>(
        &self,
        ahead: impl Iterator<Item = &'k WaitingKey>,
        passed: &mut Option<WaitingKey>,
    ) -> Option<WaitingKey> {
        ahead.copied().find(|k| {
            let takes = k.seq < self.limit || self.late > 0;
            if !takes {
                *passed = Some(*k);
            }
            takes
        })
    }
}

/// Late arrivals a pass may take at least: when little waited as it began (the first epochs of
/// a run), the texts that arrive ahead of it are the same sweep, not a new one.
const MIN_LATE: usize = 8_192;

/// Where a text waits in [`WaitingTexts`]: its place in the order (its token count in length
/// order), its arrival, and its epoch. Ordered by place, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaitingKey {
    order: u32,
    seq: u64,
    /// The epoch it was pushed with.
    pub epoch: u64,
}

struct Waiting<T> {
    item: T,
    raw: u32,
    bytes: usize,
}

/// One request cut from [`WaitingTexts`]: its items in order, with each one's epoch and counts
/// (see [`super::Cut`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutItems<T> {
    /// The items, in request order.
    pub items: Vec<T>,
    /// The epoch each item was pushed with.
    pub epochs: Vec<u64>,
    /// Raw count per item, for [`super::Request::raw_tokens`].
    pub raw_tokens: Vec<u32>,
    /// Tokens per item after truncation as the budget counts them now.
    pub tokens: Vec<u32>,
}

impl<T> WaitingTexts<T> {
    /// An empty queue of texts to cut from in `batcher`'s order.
    pub fn new(batcher: &RequestBatcher) -> Self {
        let order = batcher.order();
        // A pass down that took nothing: the first cut turns it into a pass up over all that waits.
        let sweep = Sweep { up: false, at: None, limit: 0, late: 0 };
        WaitingTexts { order, queue: BTreeMap::new(), epochs: BTreeMap::new(), sweep, next_seq: 0, min_late: MIN_LATE }
    }

    #[cfg(test)]
    fn with_min_late(self, min_late: usize) -> Self {
        Self { min_late, ..self }
    }

    /// Adds `item` of `epoch`, whose text `text` reads, counting its tokens with `batcher`'s
    /// budget. Returns where it waits.
    pub fn push(&mut self, batcher: &RequestBatcher, epoch: u64, item: T, text: impl Fn(&T) -> &str) -> WaitingKey {
        let text = text(&item);
        let raw = batcher.budget().raw_count(text);
        let bytes = json_string_len(text);
        let order = match self.order {
            RequestOrder::Arrival => 0,
            RequestOrder::Length => raw,
        };
        let key = WaitingKey { order, seq: self.next_seq, epoch };
        self.next_seq += 1;
        self.queue.insert(key, Waiting { item, raw, bytes });
        *self.epochs.entry(epoch).or_default() += 1;
        key
    }

    /// The item waiting at `key`, if it still waits.
    pub fn get(&self, key: &WaitingKey) -> Option<&T> {
        self.queue.get(key).map(|w| &w.item)
    }

    /// Texts waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a text of `epoch` still waits.
    pub fn holds_epoch(&self, epoch: u64) -> bool {
        self.epochs.contains_key(&epoch)
    }

    /// The earliest epoch with a text waiting.
    pub fn first_epoch(&self) -> Option<u64> {
        self.epochs.keys().next().copied()
    }

    /// Cuts the next request: texts where the sweep is, in its direction, until the next would
    /// take the request past `batcher`'s limits. `keep` sees each item (and where it waited) as
    /// it is taken and may answer it itself (a cached vector, say) by returning None; the others
    /// go in the request. None when nothing is left to send.
    pub fn next_request(
        &mut self,
        batcher: &RequestBatcher,
        mut keep: impl FnMut(WaitingKey, T) -> Option<T>,
    ) -> Option<CutItems<T>> {
        let limits = batcher.limits();
        let mut cut = CutItems { items: Vec::new(), epochs: Vec::new(), raw_tokens: Vec::new(), tokens: Vec::new() };
        let (mut tokens, mut bytes) = (0usize, 0usize);
        while let Some(key) = self.next_key() {
            let Some(waiting) = self.queue.get(&key) else { break };
            let item_tokens = batcher.budget().calibrated(waiting.raw);
            let full = limits.full(cut.items.len(), tokens + item_tokens as usize, bytes + waiting.bytes);
            if full && !cut.items.is_empty() {
                break;
            }
            // Taken: the sweep moves past it.
            self.sweep.at = Some(key);
            if key.seq >= self.sweep.limit {
                self.sweep.late = self.sweep.late.saturating_sub(1);
            }
            let Some(waiting) = self.remove(&key) else { break };
            let Some(item) = keep(key, waiting.item) else { continue };
            tokens += item_tokens as usize;
            bytes += waiting.bytes;
            cut.items.push(item);
            cut.epochs.push(key.epoch);
            cut.raw_tokens.push(waiting.raw);
            cut.tokens.push(item_tokens);
        }
        (!cut.items.is_empty()).then_some(cut)
    }

    /// The key the sweep takes next, turning it at an end; None when nothing waits.
    fn next_key(&mut self) -> Option<WaitingKey> {
        if self.queue.is_empty() {
            return None;
        }
        if self.order == RequestOrder::Arrival {
            return self.queue.keys().next().copied();
        }
        // Two tries: this pass, then (at its end) a new pass the other way, which takes every
        // text waiting now and so finds one.
        for _ in 0..2 {
            let sweep = self.sweep;
            let from = sweep.at.map_or(Bound::Unbounded, Bound::Excluded);
            let mut passed = None;
            let found = if sweep.up {
                sweep.first_taken(self.queue.range((from, Bound::Unbounded)).map(|(k, _)| k), &mut passed)
            } else {
                sweep.first_taken(self.queue.range((Bound::Unbounded, from)).rev().map(|(k, _)| k), &mut passed)
            };
            if let Some(key) = found {
                // Late arrivals passed on the way are the next pass's, not scanned again by this one.
                if passed.is_some() {
                    self.sweep.at = passed;
                }
                return Some(key);
            }
            let late = self.queue.len().max(self.min_late);
            self.sweep = Sweep { up: !sweep.up, at: None, limit: self.next_seq, late };
        }
        None
    }

    fn remove(&mut self, key: &WaitingKey) -> Option<Waiting<T>> {
        let waiting = self.queue.remove(key)?;
        if let Some(count) = self.epochs.get_mut(&key.epoch) {
            *count -= 1;
            if *count == 0 {
                self.epochs.remove(&key.epoch);
            }
        }
        Some(waiting)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tei::{padded_tokens, PackLimits, TokenBudget};

    fn batcher(order: RequestOrder, max_items: usize) -> RequestBatcher {
        let limits = PackLimits { max_items, max_tokens: 1_000, max_bytes: 1_000_000 };
        RequestBatcher::new(limits, Arc::new(TokenBudget::estimated(512))).with_order(order)
    }

    /// A text of `n` estimated tokens (two special tokens and `n - 2` words).
    fn text(n: usize) -> String {
        vec!["w"; n - 2].join(" ")
    }

    fn drain(waiting: &mut WaitingTexts<(usize, String)>, batcher: &RequestBatcher) -> Vec<Vec<usize>> {
        std::iter::from_fn(|| Some(cut(waiting, batcher)?.0)).collect()
    }

    fn cut(waiting: &mut WaitingTexts<(usize, String)>, batcher: &RequestBatcher) -> Option<(Vec<usize>, Vec<u64>)> {
        let cut = waiting.next_request(batcher, |_, t| Some(t))?;
        Some((cut.items.into_iter().map(|(i, _)| i).collect(), cut.epochs))
    }

    #[test]
    fn length_order_sweeps_up_then_down_across_epochs() {
        let b = batcher(RequestOrder::Length, 2);
        let mut waiting = WaitingTexts::new(&b);
        for (i, n) in [(10, 9), (11, 3), (12, 6)] {
            waiting.push(&b, 1, (i, text(n)), |t| &t.1);
        }
        for (i, n) in [(0, 7), (1, 3), (2, 12), (3, 5), (4, 4)] {
            waiting.push(&b, 0, (i, text(n)), |t| &t.1);
        }
        // Up the lengths, whatever the epoch: 3 3 | 4 5 | 6 7 | 9 12.
        assert_eq!(cut(&mut waiting, &b), Some((vec![11, 1], vec![1, 0])));
        assert_eq!(drain(&mut waiting, &b), vec![vec![4, 3], vec![12, 0], vec![10, 2]]);
        assert!(waiting.is_empty() && !waiting.holds_epoch(0) && waiting.first_epoch().is_none());
    }

    #[test]
    fn texts_arriving_ahead_join_the_pass_and_those_behind_wait_for_the_pass_back() {
        let b = batcher(RequestOrder::Length, 1);
        let mut waiting = WaitingTexts::new(&b).with_min_late(0);
        for (i, n) in [(0, 4), (1, 6), (2, 8)] {
            waiting.push(&b, 0, (i, text(n)), |t| &t.1);
        }
        assert_eq!(drain_one(&mut waiting, &b), Some(0)); // 4, going up
                                                          // A 10 arrives ahead of the sweep and a 3 behind it.
        waiting.push(&b, 1, (3, text(10)), |t| &t.1);
        waiting.push(&b, 1, (4, text(3)), |t| &t.1);
        assert_eq!(drain_one(&mut waiting, &b), Some(1)); // 6
        assert_eq!(drain_one(&mut waiting, &b), Some(2)); // 8
        assert_eq!(drain_one(&mut waiting, &b), Some(3)); // the 10 joined the pass up
        assert_eq!(drain(&mut waiting, &b), vec![vec![4]]); // the 3, on the pass down
    }

    #[test]
    fn a_pass_takes_at_most_as_many_late_arrivals_as_waited_when_it_began() {
        let b = batcher(RequestOrder::Length, 1);
        let mut waiting = WaitingTexts::new(&b).with_min_late(0);
        for (i, n) in [(0, 4), (1, 9)] {
            waiting.push(&b, 0, (i, text(n)), |t| &t.1);
        }
        assert_eq!(drain_one(&mut waiting, &b), Some(0)); // 4; the pass may take 2 late ones
        for i in 2..6 {
            waiting.push(&b, 1, (i, text(6)), |t| &t.1);
        }
        // Two late 6s, then the 9 that waited, then (turned) the other two 6s.
        assert_eq!(drain(&mut waiting, &b), vec![vec![2], vec![3], vec![1], vec![5], vec![4]]);
    }

    fn drain_one(waiting: &mut WaitingTexts<(usize, String)>, b: &RequestBatcher) -> Option<usize> {
        cut(waiting, b).map(|(items, _)| items[0])
    }

    #[test]
    fn a_pass_ends_however_texts_keep_arriving_at_its_place() {
        // Every cut, another text of the sweep's length arrives. A sweep that took every late
        // arrival would stay at length 5 for ever; this one turns.
        let b = batcher(RequestOrder::Length, 1);
        let mut waiting = WaitingTexts::new(&b).with_min_late(0);
        waiting.push(&b, 0, (0, text(5)), |t| &t.1);
        waiting.push(&b, 0, (1, text(9)), |t| &t.1);
        let mut taken = Vec::new();
        for i in 2..8 {
            waiting.push(&b, 0, (i, text(5)), |t| &t.1);
            taken.push(drain_one(&mut waiting, &b).expect("a text"));
        }
        assert!(taken.contains(&1), "the 9 was cut within two passes: {taken:?}");
    }

    #[test]
    fn arrival_order_keeps_arrival_and_keep_can_answer_items() {
        let b = batcher(RequestOrder::Arrival, 3);
        let mut waiting = WaitingTexts::new(&b);
        for (i, n) in [9, 3, 6, 4].into_iter().enumerate() {
            waiting.push(&b, 0, (i, text(n)), |t| &t.1);
        }
        // Item 1 answered by `keep` (say, from a cache): the request fills up with the next.
        let cut = waiting.next_request(&b, |_, t| (t.0 != 1).then_some(t)).expect("a request");
        assert_eq!(cut.items.iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(cut.tokens, vec![9, 6, 4]);
        assert_eq!(b.budget().texts_counted(), 4, "counted once, when pushed");
        assert!(!waiting.holds_epoch(0));
        assert_eq!(padded_tokens(&cut.tokens), 27);
    }
}
