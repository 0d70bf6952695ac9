//! The plain-language account of a program's rules names every rule that shapes a number,
//! with the program's own figures.
mod common;

use common::*;
use settle_engine::model::*;

#[test]
fn shares_program_is_explained_with_its_figures() {
    let mut pool = percent_pool("12.5");
    pool.cap = Some(500_000);
    pool.floor = Some(1_000);
    let mut s = spec(shares("30", "20", "40", Position::Closer), pool, 14);
    s.budget = Some(Budget { max: 10_000_000 });
    s.payment_range = Some(PaymentRange { min: 100, max: 200_000 });
    let text = s.explain().join("\n");
    for want in [
        "Pool of a deal: 12.5% of revenue.",
        "capped at 5000.00 USD per deal",
        "at least 10.00 USD per deal",
        "limited to 100000.00 USD per calendar month",
        "originator 30%, intermediaries 20% shared equally, closer 40%",
        "goes to the closer",
        "largest remainder",
        "between 1.00 USD and 2000.00 USD",
        "held 14 days",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn levels_program_is_explained_level_by_level() {
    let mut pool = percent_pool("0");
    pool.percent = None;
    let s = spec(SplitRule::Levels { rates: vec![pct("10"), pct("2"), pct("1")] }, pool, 0);
    let text = s.explain().join("\n");
    assert!(text.contains("10% / 2% / 1%, closer first"), "{text}");
    assert!(text.contains("level 1 = closer"), "{text}");
    assert!(!text.contains("capped"), "no cap was set:\n{text}");
    // Another program reads differently: the account follows the rules, it is not canned.
    let mut other = s.clone();
    other.split = SplitRule::Levels { rates: vec![pct("7")] };
    assert_ne!(other.explain(), s.explain());
}
