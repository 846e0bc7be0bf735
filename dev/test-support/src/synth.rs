//! Synthetic tweets for the demo, tests and benchmarks: several languages and scripts (RTL,
//! CJK, emoji, combining marks, control characters), duplicate texts, every kind of bad document,
//! retweets and already-embedded documents that the work queue must skip. Deterministic for a
//! seed, so tests can recompute what every document should become.

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};

/// What a generated document is, for reconciling a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has a usable text: must be embedded.
    Good,
    /// In the work queue but without usable text: must be rejected.
    Bad,
    /// A retweet: not in the work queue.
    Retweet,
    /// Already embedded: not in the work queue.
    Marked,
}

const LANGS: [&str; 5] = ["en", "es", "ja", "ar", "pt"];
const DUPLICATES: [&str; 8] = [
    "gm ☀️",
    "This is the way.",
    "¡Vamos! 🇦🇷🇦🇷🇦🇷",
    "おはようございます",
    "RT if you agree",
    "مرحبا بالعالم",
    "lol 😂😂😂",
    "café́ naïve — e\u{301}",
];

/// The `_id` of tweet `i`: ObjectIds in insertion order, a few seconds apart.
pub fn tweet_id(i: u64, seed: u64) -> ObjectId {
    let secs = 1_600_000_000u32 + (i / 4) as u32;
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    b[4..8].copy_from_slice(&(seed as u32).to_be_bytes());
    b[8..].copy_from_slice(&(i as u32).to_be_bytes());
    ObjectId::from_bytes(b)
}

/// The kind of tweet `i` (about 2% retweets, 2% already marked, 1% bad, 10% duplicates).
pub fn kind_of(i: u64, seed: u64) -> Kind {
    match mix(i, seed) % 100 {
        0 | 1 => Kind::Retweet,
        2 | 3 => Kind::Marked,
        4 => Kind::Bad,
        _ => Kind::Good,
    }
}

fn mix(i: u64, seed: u64) -> u64 {
    let mut z = i.wrapping_add(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The text of a good tweet `i`.
pub fn text_of(i: u64, seed: u64) -> String {
    let r = mix(i, seed ^ 0x5eed);
    if r.is_multiple_of(10) {
        return DUPLICATES[(r / 10 % DUPLICATES.len() as u64) as usize].to_string();
    }
    match r % 7 {
        0 => format!("Just watched game #{i}, what a finish!! can't believe it 😂🔥 @friend{} #sports", r % 97),
        1 => format!("¿Alguien más vio el partido {i}? Increíble el gol del minuto {} ⚽", r % 90),
        2 => format!("今日は{i}回目のコーヒー☕ 仕事がんばろう #{}", r % 13),
        3 => format!("شكرا لكم جميعا على الدعم رقم {i} 🙏 #{}", r % 17),
        4 => format!("line one {i}\nline two\twith tab and a control \u{7} char"),
        5 => format!("Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǫ̗̻ text {i} with combining marks and 👩‍👩‍👧‍👦 family"),
        _ => format!("Thread {i}/{}: a longer thought about embeddings, GPUs, batching and why queueing latency is the enemy of throughput. {}", r % 9, "More words. ".repeat((r % 20) as usize)),
    }
}

/// Generates tweet `i`.
pub fn tweet(i: u64, seed: u64) -> Document {
    let kind = kind_of(i, seed);
    let r = mix(i, seed ^ 0x1a6);
    let mut d = doc! {
        "_id": tweet_id(i, seed),
        "lang": LANGS[(r % LANGS.len() as u64) as usize],
        "classified": !r.is_multiple_of(11),
        "created_at": if i.is_multiple_of(2) {
            Bson::DateTime(DateTime::from_millis(1_600_000_000_000 + i as i64 * 1000))
        } else {
            Bson::String("Wed Oct 10 20:19:24 +0000 2018".into())
        },
        "user": {"screen_name": format!("user{}", r % 1000)},
    };
    match kind {
        Kind::Good | Kind::Retweet | Kind::Marked => {
            d.insert("text", text_of(i, seed));
        }
        Kind::Bad => match r % 5 {
            0 => {}
            1 => {
                d.insert("text", 12345);
            }
            2 => {
                d.insert("text", "");
            }
            3 => {
                d.insert("text", " \n\t  ");
            }
            _ => {
                d.insert("text", Bson::Null);
            }
        },
    }
    if kind == Kind::Retweet {
        d.insert("retweeted", true);
    }
    if kind == Kind::Marked {
        d.insert("gemma_embedded_768", true);
    }
    d
}

/// Tweets `from..to`.
pub fn tweets(from: u64, to: u64, seed: u64) -> impl Iterator<Item = Document> {
    (from..to).map(move |i| tweet(i, seed))
}

/// A tweet in the work queue as an old driver or scraper may have stored it, built byte by
/// byte so that its strings can be any bytes, not only UTF-8: `{_id: id, lang, classified:
/// true, text}`. Insert it through a `Collection<RawDocumentBuf>` to send those bytes as they are.
pub fn raw_tweet(id: &str, lang: &[u8], text: &[u8]) -> mongodb::bson::RawDocumentBuf {
    let mut d = vec![0; 4];
    let mut string = |key: &str, v: &[u8]| {
        d.push(0x02);
        d.extend_from_slice(key.as_bytes());
        d.push(0);
        d.extend_from_slice(&((v.len() + 1) as i32).to_le_bytes());
        d.extend_from_slice(v);
        d.push(0);
    };
    string("_id", id.as_bytes());
    string("lang", lang);
    string("text", text);
    d.extend_from_slice(&[0x08, b'c', b'l', b'a', b's', b's', b'i', b'f', b'i', b'e', b'd', 0, 1]);
    d.push(0);
    let n = d.len() as i32;
    d[..4].copy_from_slice(&n.to_le_bytes());
    mongodb::bson::RawDocumentBuf::from_bytes(d).expect("a framed document")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_mixed_and_deterministic() {
        let kinds: Vec<Kind> = (0..10_000).map(|i| kind_of(i, 7)).collect();
        for k in [Kind::Good, Kind::Bad, Kind::Retweet, Kind::Marked] {
            let n = kinds.iter().filter(|x| **x == k).count();
            assert!(n > 50, "{k:?}: {n}");
        }
        assert_eq!(tweet(5, 7), tweet(5, 7));
        assert_ne!(tweet_id(1, 7), tweet_id(2, 7));
        assert!(tweet_id(1, 7) < tweet_id(2, 7));
    }
}
