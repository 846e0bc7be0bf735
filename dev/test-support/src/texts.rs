//! Texts for the TEI pool's tests and benches: distinct, so that a vector given to the wrong
//! input shows, and of the kinds a pool must carry unchanged.

/// `n` distinct texts of every kind: short, unicode (accents, CJK, Cyrillic, RTL, emoji ZWJ
/// sequences and flags), whitespace, control characters, quotes and backslashes inside, and every
/// 97th one (`i % 97 == 50`) far over 512 tokens, which the server truncates.
pub fn varied(n: usize) -> Vec<String> {
    let kinds = [
        "just setting up my twttr",
        "café crème brûlée — ça va?",
        "東京は今日も雨です",
        "Привет, как дела?",
        "مرحبا بالعالم",
        "family: 👨‍👩‍👧 and flags 🇺🇸 👍🏽",
        "e\u{301} combining\tand\ncontrol \u{7} chars \"quoted\" \\ back",
    ];
    (0..n)
        .map(|i| {
            let base = format!("{} #{i}", kinds[i % kinds.len()]);
            if i % 97 == 50 {
                format!("{base} {}", "long words repeated ".repeat(400))
            } else {
                base
            }
        })
        .collect()
}

/// `n` distinct tweet-like texts of about 80 bytes (about 25 tokens each), each starting with
/// `tag`, so that the texts of different calls differ too.
pub fn tagged(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag} tweet number {i} about the game tonight, what a finish 🔥 #{}", i % 13)).collect()
}

/// Tweet number `seed`: about 170 bytes (about 50 tokens) with an emoji, a mention and a link,
/// nearly the same length for every `seed`.
pub fn tweet(seed: usize) -> String {
    format!(
        "Just watched the game #{seed} — what a finish!! Can't believe it 😂🔥 @friend{} we need \
         to talk about that last play. Thoughts? https://t.co/x{seed:x}",
        seed % 97
    )
}
