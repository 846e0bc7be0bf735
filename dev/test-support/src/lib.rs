//! What tweet-embed's tests, benches and demo share: synthetic tweets ([`synth`]), seeding a work
//! queue in dev-mongo ([`seed`], [`seed_work_queue`], [`fresh_work_queue`]), the dev stack of
//! dev-mongo plus simulated TEI GPUs ([`Stack`]), the exactly-once check of a run's output
//! ([`expect`]), child processes ([`proc`]), a child's peak memory for benchmarks ([`peak_rss`])
//! a tiny `tokenizer.json` ([`word_tokenizer`]), texts of tweet-like lengths ([`lengths`]),
//! bounded waits ([`wait`]), the benchmarks' settings and medians ([`bench`]), the start of a
//! pipeline test ([`Fixture`]), simulated GPUs with a service time ([`gpu`]), texts for the TEI
//! pool ([`texts`]) and the vectors it must return ([`embedded`]), and directory listings
//! ([`files`]).
//!
//! It knows the engine (`tweet-embed-operators`) and the two dev servers, never the CLI: what
//! needs the `tweet-embed` crate's flags stays with the tests that use them.
//!
//! ```no_run
//! use test_support::{seed, Stack};
//! let stack = Stack::start(2, dev_tei::FaultConfig::default());
//! let seeded = seed(&stack.mongo, 1_000, 7);
//! println!("{} to embed at {}, GPUs at {:?}", seeded.eligible(), stack.mongo.uri(), stack.tei_urls());
//! ```

pub mod bench;
pub mod embedded;
pub mod expect;
pub mod files;
mod fixture;
pub mod gpu;
pub mod invalid_utf8;
pub mod lengths;
pub mod peak_rss;
pub mod proc;
pub mod seed;
mod stack;
pub mod synth;
pub mod texts;
pub mod wait;
pub mod word_tokenizer;

pub use fixture::Fixture;
pub use seed::{
    create_indexes, fresh_work_queue, insert_docs, insert_range, insert_tweets, seed, seed_work_queue, Seeded,
};
pub use stack::Stack;
pub use word_tokenizer::word_tokenizer;
