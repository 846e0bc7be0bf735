//! `VectorCache`: the vectors of recently embedded texts, so a text that recurs across epochs
//! ("gm ☀️", copypasta) is embedded once, not once per epoch. Dedup already merges copies
//! within an epoch; texts are routed to workers by hash, so every copy of a text meets this
//! worker's cache.
//!
//! Admission: most tweets are unique, and caching them would evict the few that recur, so a text
//! enters the main cache only if it already repeated (several documents in its epoch) or its
//! hash was seen before (a doorkeeper set of hashes, as in TinyLFU). Any other text waits in a
//! small first-in-first-out window (an eighth of the capacity), from which a repeat promotes it,
//! as in W-TinyLFU: a recurring text whose first copy came alone in its epoch is still embedded
//! once. Eviction: two generations approximate LRU in O(1): inserts and hits go to `current`;
//! when it holds half the capacity it becomes `previous` and the old `previous` is dropped.
//! Memory is bounded by the capacity and its window (a 768-float vector is 3 KiB) plus 8 bytes
//! per doorkeeper hash. It never returns a vector for a different text: entries keep their text
//! and a hash match with another text is a miss.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// A cached text's vector and its token count (the row's `tokens`, so a hit counts nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The vector.
    pub vector: Arc<Vec<f32>>,
    /// Tokens counted for the text, after truncation.
    pub tokens: u32,
}

/// The cache of one worker.
#[derive(Debug)]
pub struct VectorCache {
    half: usize,
    current: HashMap<u64, (String, Cached)>,
    previous: HashMap<u64, (String, Cached)>,
    /// Hashes of texts seen once, cleared when it reaches `16 × capacity`.
    seen: HashSet<u64>,
    /// Texts seen once, newest last, at most `window_cap` of them.
    window: HashMap<u64, (String, Cached)>,
    window_order: VecDeque<u64>,
    window_cap: usize,
    hits: u64,
}

impl VectorCache {
    /// A cache of about `capacity` vectors (0 disables it).
    pub fn new(capacity: usize) -> VectorCache {
        VectorCache {
            half: capacity / 2,
            current: HashMap::new(),
            previous: HashMap::new(),
            seen: HashSet::new(),
            window: HashMap::new(),
            window_order: VecDeque::new(),
            window_cap: capacity.div_ceil(8),
            hits: 0,
        }
    }

    /// The vector of `text` (hash `h`), if cached; a hit keeps it in the current generation.
    pub fn get(&mut self, h: u64, text: &str) -> Option<Cached> {
        if self.half == 0 {
            return None;
        }
        if let Some((t, v)) = self.current.get(&h) {
            if t == text {
                self.hits += 1;
                return Some(v.clone());
            }
            return None;
        }
        let from_window = !self.previous.contains_key(&h);
        let (t, v) = if from_window { self.window.remove(&h)? } else { self.previous.remove(&h)? };
        if t != text {
            if from_window {
                self.window.insert(h, (t, v));
            } else {
                self.previous.insert(h, (t, v));
            }
            return None;
        }
        // A repeat: out of the window for good (its hash leaves the order at the next compaction).
        self.seen.remove(&h);
        self.hits += 1;
        let out = v.clone();
        self.put_entry(h, t, v);
        Some(out)
    }

    /// Offers the vector of `text` (hash `h`, `tokens` counted), which `copies` documents of one
    /// epoch carried: it is cached if the text repeated or was seen before, else it waits in the
    /// window and its hash is remembered.
    pub fn offer(&mut self, h: u64, text: &str, vector: &[f32], tokens: u32, copies: usize) {
        let cached = || Cached { vector: Arc::new(vector.to_vec()), tokens };
        if self.half == 0 {
            return;
        }
        if copies > 1 || self.seen.remove(&h) {
            self.window.remove(&h);
            self.put_entry(h, text.to_string(), cached());
            return;
        }
        if self.seen.len() >= self.half * 32 {
            self.seen.clear();
        }
        self.seen.insert(h);
        while self.window.len() >= self.window_cap {
            let Some(old) = self.window_order.pop_front() else { break };
            self.window.remove(&old);
        }
        self.window.insert(h, (text.to_string(), cached()));
        self.window_order.push_back(h);
        if self.window_order.len() > self.window_cap * 4 {
            // Promoted texts leave their hash behind in the order; drop those.
            let window = &self.window;
            self.window_order.retain(|h| window.contains_key(h));
        }
    }

    fn put_entry(&mut self, h: u64, text: String, vector: Cached) {
        if self.current.len() >= self.half {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(h, (text, vector));
    }

    /// Texts answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Vectors held now, the window's included.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len() + self.window.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recurring_texts_stay_and_the_size_is_bounded() {
        let mut c = VectorCache::new(8);
        c.offer(1, "gm", &[1.0], 3, 5);
        for i in 0..100u64 {
            // Unique texts are seen twice each (so admitted) and churn the cache.
            c.offer(1_000 + i, &format!("t{i}"), &[i as f32], 3, 1);
            c.offer(1_000 + i, &format!("t{i}"), &[i as f32], 3, 1);
            // "gm" recurs every few texts, so it is never evicted.
            if i % 3 == 0 {
                assert_eq!(c.get(1, "gm").map(|c| c.vector.to_vec()), Some(vec![1.0]), "at {i}");
            }
            assert!(c.len() <= 8 + 1, "the capacity and its window");
        }
        assert_eq!(c.get(1, "not gm"), None, "a hash match with another text is a miss");
        assert_eq!(c.get(1_000, "t0"), None, "old texts are evicted");
        assert!(VectorCache::new(0).get(1, "gm").is_none());
        // A text met once waits in the window: met again soon, it is a hit, and then cached.
        let mut c = VectorCache::new(16);
        c.offer(7, "once", &[7.0], 3, 1);
        assert_eq!(c.get(7, "not once"), None, "a hash match with another text is a miss");
        assert_eq!(c.get(7, "once").map(|c| c.vector.to_vec()), Some(vec![7.0]));
        for i in 0..10u64 {
            c.offer(100 + i, &format!("u{i}"), &[0.0], 3, 1);
        }
        assert_eq!(c.get(7, "once").map(|c| c.vector.to_vec()), Some(vec![7.0]), "promoted out of the window");
        // Unique texts only pass through the window: it holds an eighth of the capacity.
        assert_eq!(c.get(100, "u0"), None, "evicted from the window by newer texts");
        assert!(c.len() <= 1 + 2);
        // Texts that always recur at once leave the window before it fills: the order stays bounded.
        for i in 0..1_000u64 {
            c.offer(10_000 + i, &format!("p{i}"), &[0.0], 3, 1);
            assert!(c.get(10_000 + i, &format!("p{i}")).is_some());
        }
        assert!(c.window_order.len() <= 2 * 4 + 1);
        // Pushed out of the window before it recurred, a text is admitted when offered again.
        let mut c = VectorCache::new(8);
        c.offer(7, "late", &[7.0], 3, 1);
        c.offer(8, "other", &[8.0], 3, 1);
        assert_eq!(c.get(7, "late"), None);
        c.offer(7, "late", &[7.0], 3, 1);
        assert_eq!(c.get(7, "late").map(|c| c.vector.to_vec()), Some(vec![7.0]));
    }
}
