//! The `tweet-embed` binary: parse flags, set up logging, run the library, and turn errors into
//! one line and a non-zero exit.

use clap::FromArgMatches;
use tweet_embed::cli::{Cli, Command, LogFormat};

fn main() {
    // The config file's values become the flags' defaults, under flags and environment.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (command, from_file) = match tweet_embed::config_file::layered(tweet_embed::cli::command(), &argv) {
        Ok(layered) => layered,
        Err(err) => {
            tweet_embed_operators::run::failure::to_stderr(&format!("tweet-embed: {err:#}"));
            std::process::exit(2);
        }
    };
    let matches = command.clone().get_matches_from(argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log write that fails (stderr a closed pipe) must not report itself with `eprintln!`, which
    // panics there and kills whichever thread logged, the signal listener included.
    // Colour only on a terminal, and never with NO_COLOR set (no-color.org): log files written
    // through `2>`, `tee` or nohup must not carry escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .log_internal_errors(false);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    tweet_embed::cluster::exit_on_lost_peer();
    let result = match cli.command {
        Command::Backfill(args) => tweet_embed::backfill::run(&args),
        Command::Run(args) => tweet_embed::run::run(&args),
        Command::Config(args) => tweet_embed::config_file::run(args, &command, &from_file),
        Command::Autotune(args) => tweet_embed::autotune::run(*args),
        Command::Status(args) => tweet_embed::status::run(args),
        Command::Indexes(args) => tweet_embed::indexes::run(args),
        Command::Requeue(args) => tweet_embed::requeue::run(args),
        Command::Reconcile(args) => tweet_embed::reconcile::run(args),
        Command::Consolidate(args) => tweet_embed::consolidate::run(&args)
            .map(|s| tweet_embed::say!("{}", tweet_embed::consolidate::summary_line(&s))),
        #[cfg(feature = "dev")]
        Command::Demo(args) => tweet_embed::demo::run(args),
        #[cfg(feature = "dev")]
        Command::DevMongo(args) => dev_mongo::run(args),
        #[cfg(feature = "dev")]
        Command::DevTei(args) => dev_tei::run(args),
    };
    if let Err(err) = result {
        tweet_embed_operators::run::failure::to_stderr(&format!("tweet-embed: {err:#}"));
        std::process::exit(1);
    }
}
