//! How the vectors are made: `--prompt-name`, `--dimensions`, `--normalize` and
//! `--truncation-direction` reach the server (dev-tei shows what it received), the written width
//! follows `--dimensions`, budgets count the prompt, impossible options fail at start with one
//! line, and the dataset's identity (checkpoint and every file's metadata) refuses a restart that
//! would add other vectors — until `--reset-output`.

use std::process::{Command, Stdio};

use dev_tei::{embedding_for, raw_embedding_for, Received, SimConfig};
use mongodb::bson::doc;
use test_support::expect::{python_with, read_rows};
use test_support::proc::pipeline_cmd;
use test_support::{files, seed, Fixture, Seeded, Stack};
use tweet_embed_operators::run::Engine;
use tweet_embed_operators::table::checkpoint::CheckpointStore;
use tweet_embed_operators::tei::{EmbedOptions, EndpointPool, PoolConfig, TruncationDirection};

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

fn marked(stack: &Stack) -> u64 {
    let coll = stack.coll();
    stack
        .rt
        .block_on(async { coll.count_documents(doc! {"gemma_embedded_768": {"$exists": true}}).await })
        .expect("count")
}

#[test]
fn options_reach_the_server_and_the_vectors_have_the_asked_width() {
    let Fixture { stack, seeded, dir: _dir, mut args } =
        Fixture::new(Stack::start(2, dev_tei::FaultConfig::default()), Seeded { n: 800, seed: 81 }, 2);
    args.tei.options = EmbedOptions {
        prompt_name: Some("document".into()),
        dimensions: Some(256),
        normalize: Some(false),
        truncation_direction: Some(TruncationDirection::Left),
    };
    let summary = Engine::connect(args.clone()).and_then(Engine::backfill).expect("backfill");
    assert!(summary.embedded > 0);
    // The server saw every option on the native route.
    let seen = stack.tei.as_ref().expect("tei").options_seen();
    let wanted = Received {
        prompt_name: Some("document".into()),
        dimensions: Some(256),
        normalize: Some(false),
        truncation_direction: Some("left".into()),
    };
    assert!(seen.contains_key(&wanted), "{seen:?}");
    // Every request carries them, but one: the start-up probe that learns the prompt's length.
    let without: u64 = seen.iter().filter(|(r, _)| *r != &wanted).map(|(_, n)| n).sum();
    assert_eq!(without, 1, "{seen:?}");
    assert!(seen.keys().all(|r| r.dimensions == Some(256) && r.normalize == Some(false)), "{seen:?}");
    // The vectors are the prompted text's, at 256 dimensions, not normalized.
    let rows = read_rows(&args.out);
    assert_eq!(rows.vectors.len() as u64, summary.embedded);
    let coll = stack.coll();
    let docs: Vec<mongodb::bson::Document> = stack.rt.block_on(async {
        let mut c = coll.find(doc! {"gemma_embedded_768": true}).limit(20).await.expect("find");
        let mut v = Vec::new();
        while c.advance().await.expect("advance") {
            v.push(c.deserialize_current().expect("doc"));
        }
        v
    });
    assert!(!docs.is_empty());
    for d in docs.iter().filter(|d| rows.vectors.contains_key(&d.get_object_id("_id").expect("oid").to_hex())) {
        let id = d.get_object_id("_id").expect("oid").to_hex();
        let text = format!("title: none | text: {}", d.get_str("text").expect("text"));
        let v = &rows.vectors[&id];
        assert_eq!(v.len(), 256);
        assert_eq!(v, &raw_embedding_for(&text, 256), "{id}");
        assert_ne!(v, &embedding_for(&text, 256));
    }
    let _ = seeded;
    // Every file's key-value metadata carries the identity, as pyarrow reads it.
    let py = python_with("pyarrow");
    let script = r#"
import glob, json, sys
import pyarrow.parquet as pq
files = glob.glob(sys.argv[1] + "/*.parquet") + glob.glob(sys.argv[1] + "/_rejects/*.parquet")
assert files, "no files"
for f in files:
    meta = pq.read_metadata(f).metadata
    ident = json.loads(meta[b"tweet_embed.identity"])
    assert ident["dim"] == 256 and ident["prompt_name"] == "document", ident
    assert ident["normalize"] is False and ident["truncation_direction"] == "left", ident
    assert ident["model_id"] == "google/embeddinggemma-300m" and ident["model_sha"], ident
    assert ident["text_field"] == "text" and ident["mark_field"] == "gemma_embedded_768", ident
    assert meta[b"tweet_embed.dim"] == b"256", meta
print(len(files), "files carry the identity")
"#;
    let o = Command::new(&py).args(["-c", script]).arg(&args.out).output().expect("python");
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // The checkpoint records it, and `status` shows it.
    let cp = CheckpointStore::open(&args.state_dir).unwrap().load().unwrap().expect("checkpoint");
    let identity = cp.identity().expect("identity");
    assert_eq!((identity.dim, identity.prompt_name.as_deref()), (256, Some("document")));
    let o = Command::new(BIN)
        .args(["status", "--mongo-uri", &args.mongo.uri, "--state-dir"])
        .arg(&args.state_dir)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("dataset     google/embeddinggemma-300m@"), "{text}");
    assert!(text.contains("256 dims · prompt document · not normalized · truncation left"), "{text}");
}

#[test]
fn budgets_count_the_prompt_tei_prepends() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    // A small batch budget: 24 texts of ~40 tokens would fit it without their prompt, not with it.
    let sim = SimConfig { gpus: 1, instant: true, max_batch_tokens: 1_000, ..SimConfig::default() };
    let tei = rt.block_on(dev_tei::DevTei::start(sim)).expect("dev-tei");
    let mut config = PoolConfig::new(tei.urls());
    config.options.prompt_name = Some("Classification".into());
    let pool = rt.block_on(EndpointPool::connect(config)).expect("pool");
    let prompt = pool.budget().prompt_tokens();
    // dev-tei counts with the pipeline's estimate: the prompt's words, no special tokens twice.
    let expected = tweet_embed_operators::tei::estimate_tokens("task: classification | query: a")
        - tweet_embed_operators::tei::estimate_tokens("a");
    assert_eq!(prompt as usize, expected, "the prompt's tokens, learned from the server");
    let texts: Vec<String> =
        (0..200).map(|i| format!("tweet {i}: {}", "words of a longer tweet about the match ".repeat(4))).collect();
    let outcomes = rt.block_on(pool.embed(texts));
    assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
    let most = tei.max_request_tokens();
    assert!(most <= 1_000, "a request carried {most} tokens with the prompts, over max_batch_tokens 1000");
    assert!(most > 800, "requests are packed close to the budget: {most}");
}

/// The one error line a failed start leaves (`tweet-embed: …`), after checking it is the only
/// one, with no panic, no relayed TEI flag the user never set and no blame on the base64 route.
fn start_error(o: &std::process::Output, flags: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{flags:?}: {err}");
    assert!(!err.contains("panicked"), "{flags:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("tweet-embed: ")).collect();
    assert_eq!(lines.len(), 1, "{flags:?}: one error line: {err}");
    // The first and only message is the real refusal: nothing before it blames the route.
    assert!(!err.contains("base64") && !err.contains("not usable"), "{flags:?}: {err}");
    assert!(!err.contains("default-prompt-name"), "{flags:?}: a server flag the user never set: {err}");
    lines[0].to_string()
}

#[test]
fn an_unknown_prompt_or_an_impossible_dimension_fails_at_start_with_one_line() {
    let stack = Stack::start(1, dev_tei::FaultConfig::default());
    seed(&stack.mongo, 50, 83);
    let marked_before = marked(&stack);
    let says_prompts = "has no prompt named \"nope\": its model's prompts are query, document, Retrieval-query";
    let says_width = "its model's vectors have 768 dimensions; use --dimensions 768 or fewer";
    for (flags, says) in [
        (&["--prompt-name", "nope"][..], &[says_prompts, "give one of them to --prompt-name"][..]),
        // TEI's own reason is relayed, then what to do; never "/v1/embeddings with base64".
        (
            &["--dimensions", "1000"][..],
            &["refuses --dimensions 1000 (`dimensions` should be smaller than the maximum embedding", says_width][..],
        ),
        (&["--dimensions", "1000", "--api", "tei"][..], &["refuses --dimensions 1000", says_width][..]),
        (&["--dimensions", "1000", "--api", "openai"][..], &["refuses --dimensions 1000", says_width][..]),
        (&["--prompt-name", "document", "--api", "openai"][..], &["--prompt-name needs TEI's native route"][..]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = stack.args(dir.path(), 1);
        let o = pipeline_cmd(BIN, "backfill", &args).args(flags).stderr(Stdio::piped()).output().expect("run");
        let line = start_error(&o, flags);
        for part in says {
            assert!(line.contains(part), "{flags:?}: {line}");
        }
        assert!(files::names(&args.out).iter().all(|n| !n.ends_with(".parquet")), "nothing written");
    }
    // A model without prompts: said so, not TEI's words about a server flag.
    let bare = SimConfig { gpus: 1, instant: true, prompts: Vec::new(), ..SimConfig::default() };
    let bare = stack.rt.block_on(dev_tei::DevTei::start(bare)).expect("dev-tei");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = stack.args(dir.path(), 1);
    args.tei.urls = bare.urls();
    let flags = ["--prompt-name", "document"];
    let o = pipeline_cmd(BIN, "backfill", &args).args(flags).stderr(Stdio::piped()).output().expect("run");
    let line = start_error(&o, &flags);
    assert!(
        line.contains("has no prompts, so no --prompt-name document") && line.contains("drop --prompt-name"),
        "{line}"
    );
    assert_eq!(marked(&stack), marked_before, "nothing marked");
}

#[test]
fn a_restart_that_would_make_other_vectors_is_refused_until_reset() {
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, dev_tei::FaultConfig::default()), Seeded { n: 6_000, seed: 85 }, 2);
    // The first run dies after its first commit: part of the queue is done.
    let status =
        pipeline_cmd(BIN, "backfill", &args).env("TWEET_EMBED_CRASH_AFTER_COMMIT", "1").status().expect("first run");
    assert!(!status.success());
    let before = (marked(&stack), files::names(&args.out), files::names(&args.staging_dir()));
    assert!(before.0 > 0 || !before.2.is_empty());
    // Another dimension: refused with one line naming the old and new values; nothing changes.
    let o = pipeline_cmd(BIN, "backfill", &args)
        .args(["--dimensions", "256"])
        .stderr(Stdio::piped())
        .output()
        .expect("second run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("dimension 768 → 256") && err.contains("--reset-output"), "{err}");
    assert!(!err.contains("panicked"), "one line, no panic from a thread still counting: {err}");
    assert_eq!(
        (marked(&stack), files::names(&args.out), files::names(&args.staging_dir())),
        before,
        "nothing written or marked"
    );
    // A simulator of another model (and revision): refused too.
    let other = SimConfig {
        gpus: 1,
        instant: true,
        model_id: "other/embedder".into(),
        model_sha: Some("0ther".into()),
        ..SimConfig::default()
    };
    let other = stack.rt.block_on(dev_tei::DevTei::start(other)).expect("dev-tei");
    let mut elsewhere = args.clone();
    elsewhere.tei.urls = other.urls();
    let o = pipeline_cmd(BIN, "backfill", &elsewhere).stderr(Stdio::piped()).output().expect("third run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("model google/embeddinggemma-300m → other/embedder"), "{err}");
    assert!(err.contains("model revision (model_sha)") && err.contains("→ 0ther"), "{err}");
    assert_eq!(
        (marked(&stack), files::names(&args.out), files::names(&args.staging_dir())),
        before,
        "nothing written or marked"
    );
    // The same settings resume and finish, exactly once.
    assert!(pipeline_cmd(BIN, "backfill", &args).status().expect("resume").success());
    test_support::expect::check_run(&stack, &seeded, &args.out);
    // Another prompt with --reset-output: everything again, at the new settings.
    let o = pipeline_cmd(BIN, "backfill", &args)
        .args(["--prompt-name", "document", "--reset-output"])
        .stderr(Stdio::piped())
        .output()
        .expect("reset run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // Log lines written to a pipe (a log file, `tee`, nohup) carry no colour codes.
    assert!(err.contains(" INFO ") && !err.contains('\x1b'), "{err}");
    // The marks were cleared, the ones an earlier system set included: every tweet but the
    // retweets is embedded again (or rejected again), once.
    let rows = read_rows(&args.out);
    use test_support::synth::{kind_of, Kind};
    let again = (0..seeded.n).filter(|i| !matches!(kind_of(*i, seeded.seed), Kind::Retweet)).count();
    assert_eq!(rows.vectors.len() + rows.rejects.len(), again, "every document again");
    assert!(rows.counts.values().all(|n| *n == 1));
    assert!(rows.vectors.values().all(|v| v.len() == 768));
    let cp = CheckpointStore::open(&args.state_dir).unwrap().load().unwrap().expect("checkpoint");
    assert_eq!(cp.identity().and_then(|i| i.prompt_name).as_deref(), Some("document"));
}
