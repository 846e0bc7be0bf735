//! A tiny word-level `tokenizer.json` built in place, so tests of the real-tokenizer paths need
//! no download. Shared by the simulator's and the pool's tests.

/// A word-level `tokenizer.json` (`[CLS] words [SEP]`, unknown words one `[UNK]` each).
pub fn word_tokenizer(dir: &std::path::Path) -> std::path::PathBuf {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::Tokenizer;

    let vocab = ["[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat"];
    let model = WordLevel::builder()
        .vocab(vocab.iter().enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .unwrap()
        .special_tokens(vec![("[CLS]", 1), ("[SEP]", 2)])
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    tokenizer.with_post_processor(Some(template));
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).unwrap();
    path
}
