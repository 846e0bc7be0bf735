//! `VectorCache`: the vectors of recently embedded texts, so a text that recurs across epochs
//! ("gm ☀️", copypasta) is embedded once, not once per epoch. Dedup already merges copies
//! within an epoch; texts are routed to workers by hash, so every copy of a text meets this
//! worker's cache.
//!
//! Admission: most tweets are unique, and caching them would evict the few that recur, so a text
//! is cached only if it already repeated (several documents in its epoch) or its hash was seen
//! before (a doorkeeper set of hashes, as in TinyLFU). Eviction: two generations approximate
//! LRU in O(1): inserts and hits go to `current`; when it holds half the capacity it becomes
//! `previous` and the old `previous` is dropped. Memory is bounded by the capacity (a 768-float
//! vector is 3 KiB) plus 8 bytes per doorkeeper hash. It never returns a vector for a different
//! text: entries keep their text and a hash match with another text is a miss.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The cache of one worker.
#[derive(Debug)]
pub struct VectorCache {
    half: usize,
    current: HashMap<u64, (String, Arc<Vec<f32>>)>,
    previous: HashMap<u64, (String, Arc<Vec<f32>>)>,
    /// Hashes of texts seen once, cleared when it reaches `16 × capacity`.
    seen: HashSet<u64>,
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
            hits: 0,
        }
    }

    /// The vector of `text` (hash `h`), if cached; a hit keeps it in the current generation.
    pub fn get(&mut self, h: u64, text: &str) -> Option<Arc<Vec<f32>>> {
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
        let (t, v) = self.previous.remove(&h)?;
        if t != text {
            self.previous.insert(h, (t, v));
            return None;
        }
        self.hits += 1;
        let out = v.clone();
        self.put_entry(h, t, v);
        Some(out)
    }

    /// Offers the vector of `text` (hash `h`), which `copies` documents of one epoch carried: it
    /// is cached if the text repeated or was seen before, else only its hash is remembered.
    pub fn offer(&mut self, h: u64, text: &str, vector: &[f32], copies: usize) {
        if self.half == 0 {
            return;
        }
        if copies > 1 || self.seen.remove(&h) {
            self.put_entry(h, text.to_string(), Arc::new(vector.to_vec()));
        } else {
            if self.seen.len() >= self.half * 32 {
                self.seen.clear();
            }
            self.seen.insert(h);
        }
    }

    fn put_entry(&mut self, h: u64, text: String, vector: Arc<Vec<f32>>) {
        if self.current.len() >= self.half {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(h, (text, vector));
    }

    /// Texts answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Vectors held now.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
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
        c.offer(1, "gm", &[1.0], 5);
        for i in 0..100u64 {
            // Unique texts are seen twice each (so admitted) and churn the cache.
            c.offer(1_000 + i, &format!("t{i}"), &[i as f32], 1);
            c.offer(1_000 + i, &format!("t{i}"), &[i as f32], 1);
            // "gm" recurs every few texts, so it is never evicted.
            if i % 3 == 0 {
                assert_eq!(c.get(1, "gm").as_deref(), Some(&vec![1.0]), "at {i}");
            }
            assert!(c.len() <= 8);
        }
        assert_eq!(c.get(1, "not gm"), None, "a hash match with another text is a miss");
        assert_eq!(c.get(1_000, "t0"), None, "old texts are evicted");
        assert!(VectorCache::new(0).get(1, "gm").is_none());
        // A text met once is not cached; met again, it is.
        let mut c = VectorCache::new(8);
        c.offer(7, "once", &[7.0], 1);
        assert_eq!(c.get(7, "once"), None);
        c.offer(7, "once", &[7.0], 1);
        assert_eq!(c.get(7, "once").as_deref(), Some(&vec![7.0]));
    }
}
