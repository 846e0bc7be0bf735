//! Strings that are not valid UTF-8, stored as old drivers and scrapers wrote them: one bad
//! field costs that document alone. A text that is not UTF-8 is rejected with its reason and
//! marked `false`; a `lang` that is not UTF-8 is decoded lossily and the tweet embedded; every
//! other document is embedded exactly once and the backfill ends.

use dev_tei::FaultConfig;
use test_support::expect::check_run;
use test_support::invalid_utf8::{check_bad_tweets, insert_bad_tweets};
use test_support::{Fixture, Seeded, Stack};
use tweet_embed_operators::run::Engine;

#[test]
fn a_text_that_is_not_utf8_is_rejected_and_the_backfill_goes_on() {
    let Fixture { stack, seeded, dir: _dir, args } =
        Fixture::new(Stack::start(2, FaultConfig::default()), Seeded { n: 3_000, seed: 17 }, 2);
    insert_bad_tweets(&stack);
    let summary = Engine::connect(args.clone()).and_then(Engine::backfill).expect("backfill ends");
    assert_eq!(summary.embedded as usize + summary.rejected as usize, seeded.eligible() + 2);
    check_run(&stack, &seeded, &args.out);
    check_bad_tweets(&stack, &args.out);
}
