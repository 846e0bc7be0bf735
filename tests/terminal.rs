//! The progress display on a real terminal: `demo` run under a pseudo-terminal (util-linux
//! `script`) draws the bar with its figures, and the summary follows.

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
