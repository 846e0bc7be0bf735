//! What the commands print for a person or a pipe to read: summaries, `status`, `config`. A
//! reader that goes away (`tweet-embed status | head -1`) must not turn a finished run into a
//! panic trace and exit 101, which `println!` does on a closed pipe. Logs go to stderr through
//! `tracing`, never here.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout and flushes it. A closed pipe is remembered (see [`closed`]) and
/// otherwise ignored: the reader has gone and the work the text reports is done either way.
/// Another error (a full disk under a redirect) is said once on stderr.
pub fn write(text: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tweet_embed_operators::run::failure::to_stderr(&format!("tweet-embed: writing to stdout: {e}"));
        }
    }
}

/// Whether stdout could not be written to (its reader went away): a command that prints on and
/// on (`status --watch`) stops then.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `println!` for [`write`]: one line to stdout that never panics.
#[macro_export]
macro_rules! say {
    () => { $crate::stdout::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for [`write`].
#[macro_export]
macro_rules! say_raw {
    ($($arg:tt)*) => { $crate::stdout::write(format_args!($($arg)*)) };
}
