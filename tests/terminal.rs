//! The progress display on a real terminal: `demo` run under a pseudo-terminal (util-linux
//! `script`) draws the bar with its figures, and the summary follows; a `backfill` whose one
//! epoch commits only at its end shows the work embedded meanwhile as not yet committed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tweet-embed");

#[test]
fn demo_under_a_pseudo_terminal_shows_the_bar_and_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("demo");
    let cmd = format!("{BIN} demo --tweets 30000 --dir {}", demo.display());
    let out = Command::new("script")
        .args(["-q", "-e", "-f", "-c", &cmd, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "200")
        .output()
        .expect("util-linux `script` runs the demo under a pseudo-terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed under a terminal:\n{screen}\n{}", String::from_utf8_lossy(&out.stderr));
    // indicatif redraws the line in place: the bar and its figures, then the summary.
    for figure in ["docs/s", "tok/s", "ETA", "rejected", "retries", "in-flight/limit", "epoch"] {
        assert!(screen.contains(figure), "no `{figure}` on the terminal:\n{screen}");
    }
    assert!(screen.contains("=>") || screen.contains("=="), "no bar on the terminal:\n{screen}");
    assert!(screen.contains("\r") || screen.contains("\x1b["), "the line was not redrawn in place");
    assert!(screen.contains("documents embedded"), "no summary:\n{screen}");
    // The demo's GPUs are padded (EmbeddingGemma in TEI): the summary says how much was padding.
    let padding = screen.lines().find(|l| l.contains("padding            :")).expect("a padding line in the summary");
    let share: f64 = padding
        .split("real / computed ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no real / computed figure in {padding:?}"));
    assert!((0.5..=1.0).contains(&share), "{padding}");
}

/// `(done, not yet committed)` of every `D/T done · N embedded, not yet committed` on `screen`.
fn progress_figures(screen: &str) -> Vec<(u64, u64)> {
    let number = |s: &str| s.trim().replace(',', "").parse::<u64>().ok();
    screen
        .match_indices(" embedded, not yet committed")
        .filter_map(|(i, _)| {
            let frame = &screen[..i];
            let (head, uncommitted) = frame.rsplit_once(" done · ")?;
            let figures = head.rsplit_once("] ").map_or(head, |(_, f)| f);
            let done = figures.split('/').next()?;
            Some((number(done)?, number(uncommitted)?))
        })
        .collect()
}

#[test]
fn a_long_epoch_shows_its_work_before_it_commits() {
    // One simulated GPU at 20,000 tokens/s, so the backfill lasts seconds, and a checkpoint
    // interval of an hour: the documents commit as one epoch when the work queue is done. Until
    // then the committed count stands at 0; the line must show the work going on.
    let test_support::Fixture { stack: _stack, seeded, dir: _dir, args } = test_support::Fixture::new(
        test_support::Stack::start_with(dev_tei::SimConfig { gpus: 1, seed: 7, ..Default::default() }),
        test_support::Seeded { n: 2_000, seed: 11 },
        1,
    );
    let pipeline = test_support::proc::pipeline_cmd(BIN, "backfill", &args);
    let mut words: Vec<String> = vec![BIN.to_string()];
    let mut interval_next = false;
    for a in pipeline.get_args().map(|a| a.to_string_lossy().to_string()) {
        words.push(if interval_next { "1h".to_string() } else { a.clone() });
        interval_next = a == "--checkpoint-interval";
    }
    assert!(words.iter().any(|w| w == "1h"), "{words:?}");
    let out = Command::new("script")
        .args(["-q", "-e", "-f", "-c", &words.join(" "), "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "250")
        .output()
        .expect("util-linux `script` runs the backfill under a pseudo-terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "backfill failed under a terminal:\n{screen}");
    assert!(screen.contains("documents embedded"), "no summary:\n{screen}");
    let figures = progress_figures(&screen);
    assert!(!figures.is_empty(), "no `embedded, not yet committed` on the terminal:\n{screen}");
    // While the epoch is open: nothing done (committed), and the work embedded so far shown.
    let open = figures.iter().filter(|(done, uncommitted)| *done == 0 && *uncommitted > 0).count();
    assert!(open > 0, "work not yet committed never showed: {figures:?}\n{screen}");
    let eligible = seeded.eligible() as u64;
    assert!(figures.iter().all(|(d, u)| d + u <= eligible), "more than the {eligible} documents: {figures:?}");
}
