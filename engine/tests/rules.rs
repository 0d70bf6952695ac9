//! Data-driven tests: each rule kind with hand-computed expectations.
mod common;
use common::*;
use settle_engine::model::*;

/// (what, spec, hops, revenue in cents, expected hop amounts in cents)
fn check(what: &str, spec: ProgramSpec, hops: usize, revenue: i64, want: &[i64]) {
    let mut w = World::chain(spec, hops);
    let d = w.convert("c1", revenue);
    assert_eq!(amounts(&d), want, "{what}");
    assert_eq!(outcome(&d).2, want.iter().sum::<i64>(), "{what}: pool = sum of hops");
}

#[test]
fn percentage_pool_split_by_shares() {
    // 10% of 12,345.67 = 1,234.567 → half-even 1,234.57. Weights 30/20/50 (closer takes the
    // rest): 370.371, 246.914, 617.285 → floors 370.37 + 246.91 + 617.28 = 1,234.56, the
    // leftover cent goes to the largest fraction (closer, .5).
    check(
        "3 hops",
        spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0),
        3,
        1_234_567,
        &[37037, 24691, 61729],
    );
    // Two hops: the intermediaries' 20% and the 10% rest go to the closer: 30/70.
    check("2 hops", spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0), 2, 100_000, &[3000, 7000]);
    // One hop takes the whole pool.
    check("1 hop", spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0), 1, 100_000, &[10000]);
    // Four hops, two intermediaries share 20% equally.
    check(
        "4 hops",
        spec(shares("30", "20", "40", Position::Originator), percent_pool("10"), 0),
        4,
        100_000,
        &[4000, 1000, 1000, 4000],
    );
}

#[test]
fn flat_cap_and_floor() {
    let mut p = percent_pool("10");
    p.flat = Some(5000);
    p.cap = Some(20000);
    // 10% of 1,000 + 50 flat = 150.
    check("flat", spec(shares("50", "0", "50", Position::Closer), p.clone(), 0), 2, 100_000, &[7500, 7500]);
    // 10% of 10,000 + 50 = 1,050 capped at 200.
    check("cap", spec(shares("50", "0", "50", Position::Closer), p.clone(), 0), 2, 1_000_000, &[10000, 10000]);
    p.flat = None;
    p.cap = None;
    p.floor = Some(2500);
    // 10% of 100 = 10, floored at 25.
    check("floor", spec(shares("50", "0", "50", Position::Closer), p, 0), 2, 10_000, &[1250, 1250]);
}

#[test]
fn per_level_rates() {
    let split = SplitRule::Levels { rates: vec![pct("10"), pct("2"), pct("1")] };
    let pool = PoolRule::default();
    // Closer 10%, next 2%, originator 1% of 1,000.00.
    check("3 levels", spec(split.clone(), pool.clone(), 0), 3, 100_000, &[1000, 2000, 10000]);
    // Two hops: only levels 1 and 2 pay.
    check("2 levels", spec(split.clone(), pool.clone(), 0), 2, 100_000, &[2000, 10000]);
    // Four hops: the fourth level has no rate, earns nothing and gets no mandate.
    check("4 levels", spec(split, pool, 0), 4, 100_000, &[1000, 2000, 10000]);
}

#[test]
fn tiers_tiered_and_marginal() {
    let tiers = vec![Tier { from: 0, percent: pct("5") }, Tier { from: 1_000_000, percent: pct("10") }];
    let mut p = percent_pool("0");
    p.percent = None;
    p.tiers = tiers;
    p.tier_mode = Some(TierMode::Tiered);
    let s = spec(shares("0", "0", "100", Position::Closer), p.clone(), 0);
    let mut w = World::chain(s, 1);
    // First deal 8,000: volume 8,000 < 10,000 → 5% = 400.
    assert_eq!(amounts(&w.convert("c1", 800_000)), vec![40000]);
    // Second deal 4,000: volume reaches 12,000 → the whole deal at 10% = 400.
    assert_eq!(amounts(&w.convert("c2", 400_000)), vec![40000]);
    p.tier_mode = Some(TierMode::Marginal);
    let mut w = World::chain(spec(shares("0", "0", "100", Position::Closer), p, 0), 1);
    w.convert("c1", 800_000);
    // Marginal: 2,000 at 5% (to 10,000) + 2,000 at 10% = 100 + 200 = 300.
    assert_eq!(amounts(&w.convert("c2", 400_000)), vec![30000]);
}

#[test]
fn spiffs_only_in_their_window() {
    let mut p = percent_pool("10");
    p.spiffs =
        vec![Spiff { name: "Q1 push".into(), from: t(10), until: t(20), percent: Some(pct("5")), flat: Some(1000) }];
    let mut w = World::chain(spec(shares("0", "0", "100", Position::Closer), p, 0), 1);
    w.day = 5;
    assert_eq!(amounts(&w.convert("c1", 100_000)), vec![10000]);
    w.day = 15;
    // 10% + 5% of 1,000 + 10 flat = 160.
    assert_eq!(amounts(&w.convert("c2", 100_000)), vec![16000]);
    w.day = 20;
    assert_eq!(amounts(&w.convert("c3", 100_000)), vec![10000]);
}

#[test]
fn recurring_limit_and_window_and_fx() {
    let mut p = percent_pool("10");
    p.recurring_months = Some(3);
    let mut w = World::chain(spec(shares("0", "0", "100", Position::Closer), p, 0), 1);
    let conv = |w: &mut World, id: &str, month| {
        w.fact(Event::ConversionRecorded {
            conversion: id.into(),
            lead: "l1".into(),
            revenue: usd(10_000),
            occurred_at: t(w.day),
            subscription_month: Some(month),
            fx: None,
        })
    };
    assert_eq!(outcome(&conv(&mut w, "m3", 3)).0, "settled");
    let (o, why, pool) = outcome(&conv(&mut w, "m4", 4));
    assert_eq!((o.as_str(), pool), ("no_commission", 0));
    assert!(why.unwrap().contains("first 3 months"));
    // Outside the 90-day window.
    w.day = 95;
    let (o, why, _) = outcome(&w.convert("late", 10_000));
    assert_eq!(o, "no_commission");
    assert!(why.unwrap().contains("attribution window"));
    // Another currency without a rate: no commission; with one: converted.
    w.day = 1;
    let eur = settle_mandates::money::Amount::from_minor(10_000, "EUR".parse().unwrap()).unwrap();
    let d = w.fact(Event::ConversionRecorded {
        conversion: "eur1".into(),
        lead: "l1".into(),
        revenue: eur,
        occurred_at: t(1),
        subscription_month: None,
        fx: None,
    });
    assert!(outcome(&d).1.unwrap().contains("no fx rate"));
    let d = w.fact(Event::ConversionRecorded {
        conversion: "eur2".into(),
        lead: "l1".into(),
        revenue: eur,
        occurred_at: t(1),
        subscription_month: None,
        fx: Some(FxRate { rate: "1.1".parse().unwrap(), source: "test".into() }),
    });
    // 100 EUR × 1.1 = 110 USD, 10% = 11.00.
    assert_eq!(amounts(&d), vec![1100]);
}

#[test]
fn budget_and_payment_range_hold_instead_of_paying() {
    let mut s = spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0);
    s.budget = Some(Budget { max: 15_000 });
    let mut w = World::chain(s, 2);
    assert_eq!(outcome(&w.convert("c1", 100_000)).0, "settled"); // pool 100 of 150
    let (o, why, _) = outcome(&w.convert("c2", 100_000));
    assert_eq!(o, "held");
    assert!(why.unwrap().contains("budget"));
    let mut s = spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0);
    s.payment_range = Some(PaymentRange { min: 100, max: 4000 });
    let mut w = World::chain(s, 2);
    let d = w.convert("c1", 100_000); // hops 50 each, over 40
    assert_eq!(outcome(&d).0, "held");
    assert!(amounts(&d).is_empty(), "a held conversion issues no mandate");
}
