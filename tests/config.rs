//! Where settings come from — flag > environment > `--config` file > default — as the binary
//! reports them with `config print`, and that secrets never reach its output or a run's logs.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

fn tweet_embed(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(BIN);
    c.args(args);
    // Start from an environment without our variables, whatever the caller's shell has.
    for (k, _) in std::env::vars() {
        if k.starts_with("TWEET_EMBED_") || k == "MONGODB_URI" || k == "TEI_API_KEY" {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run tweet-embed");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("te.toml");
    std::fs::write(
        &file,
        "batch_size = 16\nworkers = 3\nconcurrency = 7\ndrain_timeout = \"2s\"\ntei_urls = [\"http://127.0.0.1:18080/embed\", \"http://127.0.0.1:18081\"]\n",
    )
    .expect("write");
    let f = file.to_str().expect("utf-8 path");
    let (ok, out, err) = tweet_embed(
        &["--config", f, "config", "print", "run", "--out", "o", "--state-dir", "s", "--batch-size", "8"],
        &[("TWEET_EMBED_WORKERS", "5")],
    );
    assert!(ok, "{err}");
    assert_eq!(line(&out, "batch_size"), "batch_size = 8  # flag", "flag over env and file");
    assert_eq!(line(&out, "workers"), "workers = 5  # env", "env over file");
    assert!(line(&out, "tei_urls").ends_with("# file"), "file over default");
    assert_eq!(line(&out, "checkpoint_interval"), "checkpoint_interval = \"5s\"  # default");
    assert_eq!(line(&out, "drain_timeout"), "drain_timeout = \"2s\"  # file", "--drain-timeout like every flag");
    // The same file through TWEET_EMBED_CONFIG.
    let (ok, out, err) =
        tweet_embed(&["config", "print", "backfill", "--out", "o", "--state-dir", "s"], &[("TWEET_EMBED_CONFIG", f)]);
    assert!(ok, "{err}");
    assert_eq!(line(&out, "workers"), "workers = 3  # file");
    assert_eq!(line(&out, "concurrency"), "concurrency = 7  # file");
}

#[test]
fn a_misspelt_key_is_an_error_and_a_bad_file_says_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("te.toml");
    std::fs::write(&file, "batch_szie = 16\n").expect("write");
    let f = file.to_str().expect("utf-8 path");
    let (ok, _, err) = tweet_embed(&["--config", f, "config", "print", "run"], &[]);
    assert!(!ok);
    assert!(err.contains("unknown key `batch_szie`") && err.contains("te.toml"), "{err}");
    std::fs::write(&file, "workers = \n").expect("write");
    let (ok, _, err) = tweet_embed(&["--config", f, "config", "print", "run"], &[]);
    assert!(!ok && err.contains("not valid TOML"), "{err}");
    let (ok, _, err) = tweet_embed(&["--config", "/nonexistent/te.toml", "indexes"], &[]);
    assert!(!ok && err.contains("cannot read --config /nonexistent/te.toml"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn secrets_are_never_printed() {
    let (ok, out, err) = tweet_embed(
        &["config", "print", "run", "--tei-urls", "http://127.0.0.1:1", "--out", "o", "--state-dir", "s"],
        &[("MONGODB_URI", "mongodb://alice:hunter2@127.0.0.1:1/?directConnection=true"), ("TEI_API_KEY", "sk-abc123")],
    );
    assert!(ok, "{err}");
    assert!(!out.contains("hunter2") && !out.contains("sk-abc123"), "{out}");
    assert!(out.contains("mongodb://alice:****@127.0.0.1:1/"), "{out}");
    // A run whose MongoDB cannot be reached: its logs and error must not carry the password.
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let (ok, _, err) = tweet_embed(
        &["--log", "debug", "backfill", "--tei-urls", "http://127.0.0.1:1", "--out", out_dir.to_str().expect("path")],
        &[
            ("MONGODB_URI", "mongodb://alice:hunter2@127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=500"),
            ("TEI_API_KEY", "sk-abc123"),
            ("TWEET_EMBED_STATE_DIR", dir.path().join("state").to_str().expect("path")),
        ],
    );
    assert!(!ok);
    assert!(err.contains("MongoDB is not reachable"), "the run got as far as connecting: {err}");
    assert!(!err.contains("hunter2") && !err.contains("sk-abc123"), "{err}");
}

#[test]
fn the_example_deployment_file_is_valid() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tweet-embed.toml");
    for command in ["run", "backfill", "status"] {
        let (ok, out, err) = tweet_embed(&["--config", file, "config", "print", command], &[]);
        assert!(ok, "{command}: {err}");
        assert!(line(&out, "collection").ends_with("# file"), "{out}");
    }
    let (_, out, _) = tweet_embed(&["--config", file, "config", "print", "run"], &[]);
    assert!(line(&out, "tei_urls").contains("http://127.0.0.1:18083"), "{out}");
}

#[test]
fn zero_where_a_positive_setting_is_needed_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    for (flag, value, says) in [
        ("--delete-within", "0s", "--delete-within must be positive"),
        ("--checkpoint-interval", "0s", "--checkpoint-interval and --delete-within must be positive"),
        ("--target-file-bytes", "0", "`0` is not a positive size"),
    ] {
        // An unreachable MongoDB: the refusal must come first, naming the flag.
        let (ok, _, err) = tweet_embed(
            &[
                "run",
                "--mongo-uri",
                "mongodb://127.0.0.1:1/",
                "--tei-urls",
                "http://127.0.0.1:1",
                "--out",
                d,
                "--state-dir",
                d,
                flag,
                value,
            ],
            &[],
        );
        assert!(!ok, "{flag} {value} was accepted");
        assert!(err.contains(says), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn an_unreachable_mongodb_and_too_many_workers_are_said_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let started = std::time::Instant::now();
    let (ok, _, err) = tweet_embed(
        &[
            "backfill",
            "--workers",
            "4096",
            "--tei-urls",
            "http://127.0.0.1:1",
            "--out",
            out_dir.to_str().expect("path"),
        ],
        &[
            ("MONGODB_URI", "mongodb://alice:hunter2@127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=4000"),
            ("TWEET_EMBED_STATE_DIR", dir.path().join("state").to_str().expect("path")),
        ],
    );
    assert!(!ok && started.elapsed() < std::time::Duration::from_secs(60), "{err}");
    assert!(err.contains("--workers 4096 is more than this machine's"), "{err}");
    // Said while it waits (2 s in), naming the server without the password, then the refusal.
    let waiting = err.lines().find(|l| l.contains("MongoDB does not answer yet")).unwrap_or_else(|| panic!("{err}"));
    assert!(waiting.contains("WARN") && waiting.contains("mongodb://127.0.0.1:1/"), "{waiting}");
    assert!(err.contains("MongoDB is not reachable at mongodb://127.0.0.1:1/"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_db_typo_names_the_databases_and_collections_that_exist() {
    let mongo = dev_mongo::DevMongo::start(dev_mongo::DevMongoConfig::default()).expect("dev-mongo");
    test_support::seed(&mongo, 20, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let (ok, _, err) = tweet_embed(
        &[
            "backfill",
            "--mongo-uri",
            &mongo.uri(),
            "--db",
            "twiter_data",
            "--tei-urls",
            "http://127.0.0.1:1",
            "--out",
            out_dir.to_str().expect("path"),
        ],
        &[("TWEET_EMBED_STATE_DIR", dir.path().join("state").to_str().expect("path"))],
    );
    assert!(!ok);
    let line = err.lines().find(|l| l.contains("no collection twiter_data.tweets")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("the databases are twitter_data") && line.contains("--db"), "{line}");
    // Creating indexes is offered only for a collection not written yet, never as the fix of a typo.
    assert!(line.contains("--create-missing") && line.contains("not written yet"), "{line}");
}

/// Where each heading of a help text starts: its line index, or a panic naming what is missing.
fn heading_at(help: &str, heading: &str) -> usize {
    help.lines().position(|l| l == format!("{heading}:")).unwrap_or_else(|| panic!("no heading {heading}: in\n{help}"))
}

/// The help text's line index of `--flag`.
fn flag_at(help: &str, flag: &str) -> usize {
    help.lines()
        .position(|l| l.trim_start().starts_with(&format!("{flag} ")) || l.trim() == flag)
        .unwrap_or_else(|| panic!("no {flag} in\n{help}"))
}

#[test]
fn help_groups_the_pipeline_flags_in_the_order_of_a_deployment() {
    let order = ["MongoDB", "TEI", "Model", "Output", "Run", "Cluster", "Logging"];
    // A few flags of each heading, as a user looks for them.
    let under = [
        ("MongoDB", &["--mongo-uri", "--db", "--collection", "--text-field", "--mark-field"][..]),
        ("TEI", &["--tei-urls", "--api", "--api-key", "--batch-size", "--concurrency"][..]),
        ("Model", &["--prompt-name", "--dimensions", "--normalize", "--tokenizer"][..]),
        ("Output", &["--out", "--state-dir", "--staging-dir", "--id-type", "--reset-output"][..]),
        ("Run", &["--workers", "--checkpoint-interval", "--drain-timeout", "--metrics-addr"][..]),
        ("Cluster", &["--processes", "--process", "--hostfile"][..]),
        ("Logging", &["--log", "--log-format"][..]),
    ];
    for command in ["backfill", "run"] {
        for help_flag in ["-h", "--help"] {
            let (ok, help, err) = tweet_embed(&[command, help_flag], &[]);
            assert!(ok, "{command} {help_flag}: {err}");
            let at: Vec<usize> = order.iter().map(|h| heading_at(&help, h)).collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{command} {help_flag}: headings out of order {at:?}\n{help}");
            for (heading, flags) in under {
                let i = order.iter().position(|h| *h == heading).expect("a heading");
                let end = at.get(i + 1).copied().unwrap_or(usize::MAX);
                for flag in flags {
                    let line = flag_at(&help, flag);
                    assert!(
                        at[i] < line && line < end,
                        "{command} {help_flag}: {flag} is not under {heading}:\n{help}"
                    );
                }
            }
        }
    }
    // `run`'s own flags are run settings.
    let (_, help, _) = tweet_embed(&["run", "-h"], &[]);
    let (run, cluster) = (heading_at(&help, "Run"), heading_at(&help, "Cluster"));
    for flag in ["--no-backfill", "--no-stream"] {
        assert!((run..cluster).contains(&flag_at(&help, flag)), "{flag} is not under Run:\n{help}");
    }
    // The top-level list starts where a deployment does: the indexes, then the backfill.
    let (ok, help, err) = tweet_embed(&["-h"], &[]);
    assert!(ok, "{err}");
    let command_at = |name: &str| {
        help.lines()
            .position(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{help}"))
    };
    assert!(command_at("indexes") < command_at("backfill"), "{help}");
    assert!(command_at("backfill") < command_at("run"), "{help}");
}

/// Runs `tweet-embed` with `args` (and none of our variables): its exit code and stderr.
fn exit_and_stderr(args: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TWEET_EMBED_") || k == "MONGODB_URI" || k == "TEI_API_KEY" {
            c.env_remove(k);
        }
    }
    let o = c.output().expect("run tweet-embed");
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The one error line a user reads: `tweet-embed: …`, alone on stderr, no panic.
fn the_error_line(code: Option<i32>, err: &str) -> String {
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("tweet-embed: "), "{err}");
    lines[0].to_string()
}

#[test]
fn a_tei_url_without_a_scheme_is_refused_with_the_url_to_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    for (url, fixed) in [("127.0.0.1:8080", "http://127.0.0.1:8080"), ("gpu0:8080/embed", "http://gpu0:8080/embed")] {
        // An unreachable MongoDB: the URL is refused before anything starts.
        let mongo = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=60000";
        for command in ["backfill", "run"] {
            let args = [command, "--mongo-uri", mongo, "--tei-urls", url, "--out", d, "--state-dir", d];
            let (code, err) = exit_and_stderr(&args);
            let line = the_error_line(code, &err);
            assert!(line.contains(&format!("TEI URL {url:?} has no scheme")), "{line}");
            assert!(line.contains(&format!("write {fixed} ")), "{line}");
        }
    }
}

#[test]
fn an_out_that_is_a_file_is_refused_saying_it_must_be_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("vectors.parquet");
    std::fs::write(&file, b"PAR1").expect("write");
    let state = dir.path().join("state");
    let (f, s) = (file.to_str().expect("utf-8 path"), state.to_str().expect("utf-8 path"));
    let mongo = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=60000";
    for command in ["backfill", "run"] {
        let args = [command, "--mongo-uri", mongo, "--tei-urls", "http://127.0.0.1:1", "--out", f, "--state-dir", s];
        let (code, err) = exit_and_stderr(&args);
        let line = the_error_line(code, &err);
        assert!(line.contains(&format!("--out {f} is a file, not a directory")), "{line}");
        let instead = dir.path().join("vectors");
        assert!(line.contains(&format!("e.g. --out {}", instead.display())), "{line}");
    }
    assert_eq!(std::fs::read(&file).expect("read"), b"PAR1", "the file is left as it was");
    assert!(!state.exists(), "nothing started");
}
