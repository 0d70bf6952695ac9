//! The sentences docs/commission-rules.md decides where the rules could be read two
//! ways, each pinned by a scenario: which deals count toward tier volume, which rule
//! version holds a deal, a spiff of an empty window, pools beyond the limit, book
//! totals at their limit, a refund of a deal in another currency, and the exact
//! arithmetic's named examples.
mod common;
use common::*;
use settle_engine::Rejection;
use settle_engine::model::*;
use settle_mandates::money::{Amount, MAX_MINOR_UNITS, Rounding};

fn tiered(mode: TierMode) -> ProgramSpec {
    // 5 % below 10,000.00 of volume, 10 % from there.
    let p = PoolRule {
        tiers: vec![Tier { from: 0, percent: pct("5") }, Tier { from: 1_000_000, percent: pct("10") }],
        tier_mode: Some(mode),
        ..PoolRule::default()
    };
    spec(shares("0", "0", "100", Position::Closer), p, 0)
}

fn refund(w: &mut World, id: &str, conversion: &str, size: RefundSize) -> settle_engine::Decision {
    w.fact(Event::RefundRecorded { refund: id.into(), conversion: conversion.into(), size })
}

fn convert_at(w: &mut World, id: &str, revenue: i64, occurred_day: i64) -> settle_engine::Decision {
    w.fact(Event::ConversionRecorded {
        conversion: id.into(),
        lead: "l1".into(),
        revenue: usd(revenue),
        occurred_at: t(occurred_day),
        subscription_month: None,
        fx: None,
    })
}

#[test]
fn tier_volume_is_gross_of_refunds() {
    let mut w = World::chain(tiered(TierMode::Tiered), 1);
    w.convert("c1", 900_000);
    refund(&mut w, "r1", "c1", RefundSize::Full);
    // Volume 9,000 (the refund does not lower it) + 2,000 reaches the 10 % tier.
    assert_eq!(amounts(&w.convert("c2", 200_000)), vec![20_000]);
}

#[test]
fn tier_volume_follows_log_order_within_the_month_of_occurrence() {
    let mut w = World::chain(tiered(TierMode::Tiered), 1);
    w.day = 20;
    // Recorded first, occurred on day 20.
    convert_at(&mut w, "c1", 900_000, 20);
    // Recorded later but occurred earlier, on day 3 of the same month: the 9,000 recorded
    // before it counts, so it reaches the 10 % tier.
    assert_eq!(amounts(&convert_at(&mut w, "c2", 200_000, 3)), vec![20_000]);
    // A deal of the next month starts from nothing.
    w.day = 40;
    assert_eq!(amounts(&convert_at(&mut w, "c3", 200_000, 40)), vec![10_000]);
}

#[test]
fn tier_volume_counts_converted_revenue_and_not_held_deals() {
    let mut s = tiered(TierMode::Marginal);
    s.budget = Some(Budget { max: 60_000 });
    let mut w = World::chain(s, 1);
    let eur = Amount::from_minor(500_000, "EUR".parse().unwrap()).unwrap();
    // 5,000 EUR at 1.6 = 8,000 USD: 5 % = 400.
    let d = w.fact(Event::ConversionRecorded {
        conversion: "eur".into(),
        lead: "l1".into(),
        revenue: eur,
        occurred_at: t(0),
        subscription_month: None,
        fx: Some(FxRate { rate: "1.6".parse().unwrap(), source: "test".into() }),
    });
    assert_eq!(amounts(&d), vec![40_000]);
    // 4,000 more: 2,000 at 5 % + 2,000 at 10 % = 300, and 400 + 300 is over the budget
    // of 600: held, so its revenue does not count.
    let (o, _, _) = outcome(&w.convert("held", 400_000));
    assert_eq!(o, "held");
    // Volume is still 8,000 (converted, the held deal left out): 1,000 at 5 % = 50.
    assert_eq!(amounts(&w.convert("c3", 100_000)), vec![5_000]);
}

#[test]
fn tier_volume_spans_rule_versions_and_counts_a_released_deal_from_its_release() {
    let mut s = tiered(TierMode::Tiered);
    s.budget = Some(Budget { max: 40_000 });
    let mut w = World::chain(s.clone(), 1);
    assert_eq!(amounts(&w.convert("c1", 800_000)), vec![40_000]); // 5 % of 8,000, budget full
    assert_eq!(outcome(&w.convert("c2", 100_000)).0, "held");
    // Version 2 raises the budget; the volume of version 1's deals carries over.
    w.day = 1;
    let mut v2 = s;
    v2.budget = Some(Budget { max: 10_000_000 });
    w.fact(Event::ProgramAmended { effective_from: t(1), spec: v2 });
    // Before the release: volume 8,000 + 1,500 = 9,500, still 5 %.
    assert_eq!(amounts(&w.convert("c3", 150_000)), vec![7_500]);
    let d = w.fact(Event::ConversionReleased { conversion: "c2".into() });
    assert_eq!(amounts(&d), vec![5_000], "a release pays what was computed when recorded");
    // After it: 9,500 + 1,000 + 500 = 11,000 reaches 10 %.
    assert_eq!(amounts(&w.convert("c4", 50_000)), vec![5_000]);
}

#[test]
fn budget_and_range_of_the_version_in_force_at_occurrence_hold_a_new_deal() {
    let mut s = spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0);
    s.payment_range = Some(PaymentRange { min: 1, max: 1_000 });
    let mut w = World::chain(s.clone(), 2);
    w.day = 10;
    let mut v2 = s;
    v2.payment_range = Some(PaymentRange { min: 1, max: 1_000_000 });
    w.fact(Event::ProgramAmended { effective_from: t(10), spec: v2 });
    // Occurred on day 5, under version 1: hops of 50.00 are over its 10.00 limit.
    let (o, why, _) = outcome(&convert_at(&mut w, "old", 100_000, 5));
    assert_eq!(o, "held");
    assert!(why.unwrap().contains("outside the allowed range"));
    // Occurred on day 10, under version 2: paid.
    assert_eq!(amounts(&convert_at(&mut w, "new", 100_000, 10)), vec![5_000, 5_000]);
}

#[test]
fn a_spiff_whose_window_is_empty_is_accepted_and_adds_nothing() {
    let mut p = percent_pool("10");
    p.spiffs = vec![Spiff { name: "none".into(), from: t(0), until: t(0), percent: Some(pct("50")), flat: None }];
    let mut w = World::chain(spec(shares("0", "0", "100", Position::Closer), p.clone(), 0), 1);
    assert_eq!(amounts(&w.convert("c1", 100_000)), vec![10_000]);
    p.spiffs[0].until = t(-1);
    let mut w = World::new();
    let e = w.try_fact(Event::ProgramPublished { spec: spec(shares("0", "0", "100", Position::Closer), p, 0) });
    assert!(e.unwrap_err().to_string().contains("ends before it starts"));
}

#[test]
fn a_pool_beyond_the_limit_refuses_the_deal_and_records_nothing() {
    let mut p = percent_pool("0");
    p.percent = None;
    p.flat = Some(MAX_MINOR_UNITS);
    p.spiffs = vec![Spiff { name: "s".into(), from: t(0), until: t(99), percent: None, flat: Some(1) }];
    // Accepted at publication: the pool depends on the deal.
    let mut w = World::chain(spec(shares("0", "0", "100", Position::Closer), p, 0), 1);
    let before = w.engine.state().clone();
    let e = w.try_fact(Event::ConversionRecorded {
        conversion: "big".into(),
        lead: "l1".into(),
        revenue: usd(100),
        occurred_at: t(0),
        subscription_month: None,
        fx: None,
    });
    assert!(matches!(e, Err(Rejection::Money(_))), "{e:?}");
    assert_eq!(&before, w.engine.state(), "nothing changed");
}

#[test]
fn a_book_total_at_its_limit_refuses_the_next_mandate() {
    let mut p = percent_pool("0");
    p.percent = None;
    p.flat = Some(MAX_BOOK_TOTAL / 2 + 1);
    let mut w = World::chain(spec(shares("0", "0", "100", Position::Closer), p, 0), 1);
    w.convert("c1", 100);
    let before = w.engine.state().clone();
    let e = w.try_fact(Event::ConversionRecorded {
        conversion: "c2".into(),
        lead: "l1".into(),
        revenue: usd(100),
        occurred_at: t(0),
        subscription_month: None,
        fx: None,
    });
    let msg = e.unwrap_err().to_string();
    assert!(msg.contains("would have earned more than"), "{msg}");
    assert_eq!(&before, w.engine.state(), "nothing changed");
    assert_eq!(w.engine.state().books["p0"].earned, MAX_BOOK_TOTAL / 2 + 1);
}

#[test]
fn a_refund_of_a_deal_in_another_currency_claws_back_its_share_of_the_original_revenue() {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    let jpy = Amount::from_minor(10_000, "JPY".parse().unwrap()).unwrap();
    // 10,000 JPY at 0.0067 USD = 67.00 USD; pool 6.70; 3.35 each.
    let d = w.fact(Event::ConversionRecorded {
        conversion: "jp".into(),
        lead: "l1".into(),
        revenue: jpy,
        occurred_at: t(0),
        subscription_month: None,
        fx: Some(FxRate { rate: "0.0067".parse().unwrap(), source: "test".into() }),
    });
    assert_eq!(amounts(&d), vec![335, 335]);
    // A third of the yen: target 670 × 3,333 / 10,000 = 223.311 → 223, split 112 / 111.
    let refund_jpy = Amount::from_minor(3_333, "JPY".parse().unwrap()).unwrap();
    let d = refund(&mut w, "r1", "jp", RefundSize::Amount(refund_jpy));
    assert_eq!(amounts(&d), vec![112, 111]);
}

#[test]
fn the_worked_examples_rule_ties_go_to_the_lower_hop_on_refunds() {
    // 30/20/40, rest to the closer, 3 hops: 11.68 USD → pool 117 → 35 / 23 / 59. A
    // refund of 3.89 → target 117 × 389 / 1168 = 38.96… → 39, over holds 35/23/59 every
    // exact part has fraction 2/3, so the one unit left goes to hop 0.
    let cases = [(1168, 389, [35, 23, 59], [12, 8, 19])];
    for (revenue, refunded, pay, claw) in cases {
        let mut w = World::chain(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0), 3);
        assert_eq!(amounts(&w.convert("c", revenue)), pay);
        let d = refund(&mut w, "r", "c", RefundSize::Amount(usd(refunded)));
        assert_eq!(amounts(&d), claw, "revenue {revenue}, refund {refunded}");
    }
}

#[test]
fn a_whole_clawback_target_is_not_a_unit_short_under_floor_and_toward_zero() {
    for rounding in [Rounding::Floor, Rounding::TowardZero] {
        let mut s = spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0);
        s.pool_rounding = rounding;
        let mut w = World::chain(s, 1);
        assert_eq!(amounts(&w.convert("c", 30_000)), vec![3_000]);
        let d = refund(&mut w, "r", "c", RefundSize::Amount(usd(10_000)));
        assert_eq!(amounts(&d), vec![1_000], "{rounding:?}");
    }
}

#[test]
fn a_clawback_target_a_hair_above_a_half_rounds_up() {
    let mut p = percent_pool("0");
    p.percent = None;
    p.flat = Some(400_000_000_000_001);
    let mut w = World::chain(spec(shares("30", "20", "40", Position::Closer), p, 0), 1);
    w.convert("c", 999_999_999_999_999);
    let d = refund(&mut w, "r", "c", RefundSize::Amount(usd(928_571_428_571_428)));
    assert_eq!(amounts(&d), vec![371_428_571_428_573]);
}

#[test]
fn a_refund_fraction_is_exact() {
    let mut s = spec(shares("0", "0", "100", Position::Closer), percent_pool("10"), 0);
    s.pool_rounding = Rounding::Floor;
    let mut w = World::chain(s, 1);
    // Pool: 99,999,999,999,999.9 floored.
    assert_eq!(amounts(&w.convert("c", 999_999_999_999_999)), vec![99_999_999_999_999]);
    // 999,999,999,999,999 × 0.3333333333333333333333333333 = 333,333,333,333,332.99…967:
    // floored exactly, the refund is …332 (a 28-digit decimal product rounds it to …333).
    let f = "0.3333333333333333333333333333".parse().unwrap();
    let d = refund(&mut w, "r", "c", RefundSize::Fraction(f));
    // Target 99,999,999,999,999 × 333,333,333,333,332 / 999,999,999,999,999 =
    // 33,333,333,333,332.9999… floored.
    assert_eq!(amounts(&d), vec![33_333_333_333_332]);
}

#[test]
fn v1_rule_versions_keep_their_known_defects_for_replay() {
    // The same facts under a spec recorded without `allocation` (v1): the issue's
    // examples of its 28-digit division, which older logs recorded and must replay.
    let v1 = |mut s: ProgramSpec| {
        s.allocation = None;
        s
    };
    let mut w = World::chain(v1(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0)), 3);
    assert_eq!(amounts(&w.convert("c", 1168)), vec![35, 23, 59]);
    let d = refund(&mut w, "r", "c", RefundSize::Amount(usd(389)));
    assert_eq!(amounts(&d), vec![12, 7, 20], "v1: equal thirds compared unequal");
    let mut s = v1(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0));
    s.pool_rounding = Rounding::Floor;
    let mut w = World::chain(s, 1);
    w.convert("c", 30_000);
    let d = refund(&mut w, "r", "c", RefundSize::Amount(usd(10_000)));
    assert_eq!(amounts(&d), vec![999], "v1: a whole target one unit short under floor");
    // Every mandate names the arithmetic it was computed with.
    let now = spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0);
    assert_eq!(v1(now.clone()).rounding_id(), "largest_remainder.v1+pool.half_even");
    assert_eq!(now.rounding_id(), "largest_remainder.v2+pool.half_even");
}

#[test]
fn a_deal_whose_pool_rounds_to_zero_signs_nothing() {
    let s = spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0);
    let mut w = World::chain(s.clone(), 2);
    // 10 % of 0.01 USD is a tenth of a cent: the pool rounds to 0.
    let d = w.convert("tiny", 1);
    let (o, why, pool) = outcome(&d);
    assert_eq!((o.as_str(), pool), ("no_commission", 0));
    assert!(why.unwrap().contains("rounds to 0"));
    assert!(amounts(&d).is_empty(), "no mandate for nothing");
    // An older log's v1 rules signed two mandates of 0; they replay so.
    let mut old = s;
    old.allocation = None;
    let mut w = World::chain(old, 2);
    assert_eq!(amounts(&w.convert("tiny", 1)), vec![0, 0]);
}

#[test]
fn a_hop_owed_nothing_gets_no_mandate_and_cannot_be_settled() {
    // Levels 10 / 2 on three hops: the originator is beyond the rates and owed 0.
    let split = SplitRule::Levels { rates: vec![pct("10"), pct("2")] };
    let mut w = World::chain(spec(split.clone(), PoolRule::default(), 0), 3);
    let d = w.convert("c", 100_000);
    assert_eq!(amounts(&d), vec![2_000, 10_000], "no mandate for hop 0");
    let ids: Vec<String> = d
        .outputs
        .iter()
        .filter_map(|o| match &o.envelope.event {
            Event::MandateIssued { mandate_id, .. } => Some(mandate_id.clone()),
            _ => None,
        })
        .collect();
    assert!(ids.iter().all(|id| !id.ends_with("_0")), "{ids:?}");
    let zero = ids[0].replace("_1", "_0");
    let e = w.try_fact(Event::SettlementConfirmed {
        settlement: "s0".into(),
        batch: None,
        partner: "p0".into(),
        rail: "book".into(),
        confirmation_id: "c".into(),
        mandate_ids: vec![zero.clone()],
    });
    assert!(matches!(e, Err(Rejection::NotFound(_))), "{zero}: {e:?}");
    // A refund claws back from the hops that were paid only.
    let d = refund(&mut w, "r", "c", RefundSize::Full);
    assert_eq!(amounts(&d), vec![2_000, 10_000]);
    // Under v1 the hop of 0 had its mandate.
    let mut old = spec(split, PoolRule::default(), 0);
    old.allocation = None;
    let mut w = World::chain(old, 3);
    assert_eq!(amounts(&w.convert("c", 100_000)), vec![0, 2_000, 10_000]);
}

#[test]
fn deals_at_a_zero_percent_first_tier_build_the_volume_that_reaches_the_next() {
    let p = PoolRule {
        tiers: vec![Tier { from: 0, percent: pct("0") }, Tier { from: 1_000_000, percent: pct("10") }],
        tier_mode: Some(TierMode::Tiered),
        ..PoolRule::default()
    };
    let mut w = World::chain(spec(shares("0", "0", "100", Position::Closer), p, 0), 1);
    for i in 0..9 {
        let (o, _, pool) = outcome(&w.convert(&format!("c{i}"), 100_000));
        assert_eq!((o.as_str(), pool), ("no_commission", 0), "deal {i}: 0 % below 10,000.00");
    }
    // The tenth 1,000.00 brings the month's volume to 10,000.00: the whole deal at 10 %.
    assert_eq!(amounts(&w.convert("c9", 100_000)), vec![10_000]);
}
