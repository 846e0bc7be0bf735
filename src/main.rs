//! The `tweet-embed` binary: parse flags, set up logging, run the library, and turn errors into
//! one line and a non-zero exit.

use clap::Parser;
use tweet_embed::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Backfill(args) => {
            tweet_embed::pipeline::backfill(&args).map(|s| tweet_embed::pipeline::print_summary("backfill", &s, &args))
        }
        Command::Run(args) => tweet_embed::run::stop_on_signals()
            .and_then(|stop| tweet_embed::run::run(&args, stop))
            .map(|s| tweet_embed::pipeline::print_summary("run", &s, &args.pipeline)),
        Command::Status(args) => tweet_embed::status::run(args),
        Command::Indexes(args) => tweet_embed::indexes::run(args),
        Command::Consolidate(args) => {
            tweet_embed::consolidate::run(&args).map(|s| println!("{}", tweet_embed::consolidate::summary_line(&s)))
        }
        Command::Demo(args) => tweet_embed::demo::run(args),
        Command::DevMongo(args) => tweet_embed::devmongo::run(args),
        Command::DevTei(args) => tweet_embed::devtei::run(args),
    };
    if let Err(err) = result {
        eprintln!("tweet-embed: {err:#}");
        std::process::exit(1);
    }
}
