//! Property tests of the engine's laws over random programs, chains, deals and refunds.
mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use settle_engine::model::*;
use settle_engine::{Engine, EngineConfig, Envelope};
use settle_mandates::money::Amount;

#[derive(Debug, Clone)]
enum Op {
    /// Revenue, subscription month, and an FX rate in thousandths (the deal is then in
    /// EUR).
    Convert(i64, Option<u32>, Option<u32>),
    RefundPart(usize, u8),
    /// A deal naming a lead no partner registered (no commission).
    ConvertDirect(i64),
    /// A fraction of the revenue, in thousandths (1..=1000).
    RefundFraction(usize, u16),
    /// A new pool percentage (tenths), from today.
    Amend(u32),
    RefundFull(usize),
    Advance(i64),
    Settle(usize),
    Batch(usize),
    Answer(bool),
    RaiseBudget,
    Release(usize),
}

fn arb_split() -> impl Strategy<Value = SplitRule> {
    prop_oneof![
        (0u32..=40, 0u32..=30, 0u32..=30, 0usize..3).prop_map(|(o, i, c, r)| SplitRule::Shares {
            originator: pct(&o.to_string()),
            intermediaries: pct(&i.to_string()),
            closer: pct(&c.to_string()),
            remaining: [Position::Originator, Position::Intermediaries, Position::Closer][r],
        }),
        prop::collection::vec(0u32..=1500, 1..4).prop_map(|r| SplitRule::Levels {
            rates: r.into_iter().map(|x| pct(&format!("{}.{:02}", x / 100, x % 100))).collect()
        }),
    ]
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (1i64..50_000_000, prop::option::weighted(0.2, 1u32..24), prop::option::weighted(0.1, 1u32..3000))
                .prop_map(|(r, m, fx)| Op::Convert(r, m, fx)),
            2 => (any::<usize>(), 1u8..100).prop_map(|(i, p)| Op::RefundPart(i, p)),
            1 => (any::<usize>(), 1u16..=1000).prop_map(|(i, f)| Op::RefundFraction(i, f)),
            1 => (1i64..50_000_000).prop_map(Op::ConvertDirect),
            1 => (0u32..=300).prop_map(Op::Amend),
            1 => any::<usize>().prop_map(Op::RefundFull),
            1 => (1i64..40).prop_map(Op::Advance),
            1 => any::<usize>().prop_map(Op::Settle),
            1 => any::<usize>().prop_map(Op::Batch),
            1 => any::<bool>().prop_map(Op::Answer),
            1 => Just(Op::RaiseBudget),
            2 => any::<usize>().prop_map(Op::Release),
        ],
        1..40,
    )
}

/// The rest of a program's rules: floor, volume tiers, spiffs, recurring limit, payment
/// range, end of validity.
#[derive(Debug, Clone)]
struct Extras {
    floor: Option<i64>,
    /// Tier rates in tenths of a percent, from volumes 0, 1·step, 2·step, ...; marginal?
    tiers: Option<(Vec<u32>, i64, bool)>,
    /// (first day, days, percent in tenths, flat).
    spiffs: Vec<(i64, i64, Option<u32>, Option<i64>)>,
    recurring_months: Option<u32>,
    payment_range: Option<(i64, i64)>,
    valid_days: Option<i64>,
}

fn arb_extras() -> impl Strategy<Value = Extras> {
    (
        prop::option::weighted(0.3, 0i64..200_000),
        prop::option::weighted(0.3, (prop::collection::vec(0u32..=300, 1..4), 100_000i64..20_000_000, any::<bool>())),
        prop::collection::vec((0i64..30, 1i64..30, prop::option::of(0u32..=100), prop::option::of(0i64..50_000)), 0..3),
        prop::option::weighted(0.3, 1u32..12),
        prop::option::weighted(0.3, (0i64..50_000, 0i64..2_000_000)),
        prop::option::weighted(0.15, 5i64..60),
    )
        .prop_map(|(floor, tiers, spiffs, recurring_months, payment_range, valid_days)| Extras {
            floor,
            tiers,
            spiffs,
            recurring_months,
            payment_range,
            valid_days,
        })
}

fn tenths(x: u32) -> Percent {
    pct(&format!("{}.{}", x / 10, x % 10))
}

fn spec_of(
    split: SplitRule,
    percent: u32,
    flat: Option<i64>,
    cap: Option<i64>,
    holding: u32,
    budget: Option<i64>,
    x: &Extras,
) -> ProgramSpec {
    let levels = matches!(split, SplitRule::Levels { .. });
    let mut pool = percent_pool(&format!("{}.{}", percent / 10, percent % 10));
    if levels {
        pool.percent = None;
    } else {
        pool.flat = flat;
        if let Some((rates, step, marginal)) = &x.tiers {
            pool.percent = None;
            pool.tiers = (0i64..).zip(rates).map(|(i, r)| Tier { from: i * step, percent: tenths(*r) }).collect();
            pool.tier_mode = Some(if *marginal { TierMode::Marginal } else { TierMode::Tiered });
        }
    }
    pool.cap = cap;
    pool.floor = x.floor.map(|f| cap.map_or(f, |c| f.min(c)));
    pool.spiffs = x
        .spiffs
        .iter()
        .enumerate()
        .map(|(i, (from, days, p, flat))| Spiff {
            name: format!("spiff {i}"),
            from: t(*from),
            until: t(from + days),
            percent: p.map(tenths),
            flat: *flat,
        })
        .collect();
    pool.recurring_months = x.recurring_months;
    let mut s = spec(split, pool, holding);
    s.budget = budget.map(|max| Budget { max });
    s.payment_range = x.payment_range.map(|(min, width)| PaymentRange { min, max: min + width });
    s.valid_until = x.valid_days.map(t);
    s
}

/// Ids of `partner`'s payable mandates, in log order.
fn payable(engine: &Engine, partner: &str) -> Vec<String> {
    let st = engine.state();
    st.conversions
        .iter()
        .flat_map(|(cs, c)| {
            c.hops
                .iter()
                .enumerate()
                .filter(|(_, h)| h.partner == partner && h.status == settle_engine::state::HopStatus::Payable)
                .map(|(i, _)| c.mandate_id(cs, i))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs ops; returns the facts fed (for replay) and checks every law on the way.
fn run(spec: ProgramSpec, hops: usize, ops: &[Op]) -> (Vec<(Envelope, u64)>, Engine) {
    let mut w = World::chain(spec, hops);
    let mut facts: Vec<(Envelope, u64)> = Vec::new();
    // Conversions fed, with their revenue (in USD, or EUR with an FX rate).
    let mut convs: Vec<(String, Amount)> = Vec::new();
    let mut issued: BTreeMap<String, i64> = BTreeMap::new();
    let mut clawed: BTreeMap<String, i64> = BTreeMap::new();
    let mut paid: BTreeMap<String, i64> = BTreeMap::new();
    for (n, op) in ops.iter().enumerate() {
        let event = match op {
            Op::Convert(rev, month, fx) => {
                let id = format!("c{n}");
                let (revenue, fx) = match fx {
                    None => (usd(*rev), None),
                    Some(r) => (
                        Amount::from_minor(*rev, "EUR".parse().unwrap()).unwrap(),
                        Some(FxRate { rate: Decimal::new(i64::from(*r), 3), source: "test".into() }),
                    ),
                };
                convs.push((id.clone(), revenue));
                Event::ConversionRecorded {
                    conversion: id,
                    lead: "l1".into(),
                    revenue,
                    occurred_at: t(w.day),
                    subscription_month: *month,
                    fx,
                }
            }
            Op::ConvertDirect(rev) => {
                let id = format!("c{n}");
                convs.push((id.clone(), usd(*rev)));
                Event::ConversionRecorded {
                    conversion: id,
                    lead: format!("unregistered-{n}"),
                    revenue: usd(*rev),
                    occurred_at: t(w.day),
                    subscription_month: None,
                    fx: None,
                }
            }
            Op::RefundFraction(i, f) if !convs.is_empty() => {
                let (id, _) = &convs[i % convs.len()];
                Event::RefundRecorded {
                    refund: format!("r{n}"),
                    conversion: id.clone(),
                    size: RefundSize::Fraction(Decimal::new(i64::from(*f), 3)),
                }
            }
            Op::Amend(p) => {
                let mut spec = w.engine.state().programs["prg"].latest().spec.clone();
                if spec.pool.percent.is_none() {
                    continue;
                }
                spec.pool.percent = Some(tenths(*p));
                Event::ProgramAmended { spec, effective_from: t(w.day) }
            }
            Op::RefundPart(i, p) if !convs.is_empty() => {
                let (id, rev) = &convs[i % convs.len()];
                Event::RefundRecorded {
                    refund: format!("r{n}"),
                    conversion: id.clone(),
                    size: RefundSize::Amount(
                        Amount::from_minor((rev.minor_units() * i64::from(*p) / 100).max(1), rev.currency()).unwrap(),
                    ),
                }
            }
            Op::RefundFull(i) if !convs.is_empty() => {
                let (id, _) = &convs[i % convs.len()];
                Event::RefundRecorded { refund: format!("r{n}"), conversion: id.clone(), size: RefundSize::Full }
            }
            Op::Advance(d) => {
                w.day += d;
                Event::HoldsAdvanced { to: t(w.day) }
            }
            Op::Settle(p) => {
                let partner = format!("p{}", p % hops);
                let ids = payable(&w.engine, &partner);
                if ids.is_empty() {
                    continue;
                }
                Event::SettlementConfirmed {
                    settlement: format!("s{n}"),
                    batch: None,
                    partner,
                    rail: "book".into(),
                    confirmation_id: format!("x{n}"),
                    mandate_ids: ids,
                }
            }
            Op::Batch(p) => {
                let partner = format!("p{}", p % hops);
                let ids = payable(&w.engine, &partner);
                if ids.is_empty() {
                    continue;
                }
                Event::PayoutBatched { batch: format!("b{n}"), partner, rail: "sepa".into(), mandate_ids: ids }
            }
            Op::Answer(ok) => {
                let st = w.engine.state();
                let Some((id, b)) =
                    st.batches.iter().find(|(_, b)| b.status == settle_engine::state::BatchStatus::Open)
                else {
                    continue;
                };
                let (batch, partner, ids) = (Some(id.clone()), b.partner.clone(), b.mandate_ids.clone());
                if *ok {
                    Event::SettlementConfirmed {
                        settlement: format!("s{n}"),
                        batch,
                        partner,
                        rail: "sepa".into(),
                        confirmation_id: format!("x{n}"),
                        mandate_ids: ids,
                    }
                } else {
                    Event::SettlementFailed {
                        settlement: format!("s{n}"),
                        batch,
                        partner,
                        rail: "sepa".into(),
                        error: "AC04".into(),
                        mandate_ids: ids,
                    }
                }
            }
            Op::RaiseBudget => {
                let mut spec = w.engine.state().programs["prg"].latest().spec.clone();
                let Some(b) = &mut spec.budget else { continue };
                b.max = b.max.saturating_mul(4).min(10_i64.pow(15));
                Event::ProgramAmended { spec, effective_from: t(w.day) }
            }
            Op::Release(i) => {
                let held: Vec<compact_str::CompactString> =
                    w.engine.state().conversions.values().filter(|c| c.held.is_some()).map(|c| c.id).collect();
                if held.is_empty() {
                    continue;
                }
                Event::ConversionReleased { conversion: held[i % held.len()].to_string() }
            }
            _ => continue,
        };
        let env =
            Envelope { v: 1, at: t(w.day), by: "vendor:admin".into(), key: Some(format!("k{n}")), cause: None, event };
        let seq = w.seq;
        let before = w.engine.state().conversions.clone();
        let Ok(d) = w.engine.decide(env.clone(), seq) else { continue }; // e.g. refund beyond what is left
        w.seq += 1 + d.outputs.len() as u64;
        if matches!(env.event, Event::ProgramAmended { .. }) {
            // An amendment never touches a past conversion: amounts, pool, rule version,
            // refunds, holds and payment states stay as they were.
            assert_eq!(&before, &w.engine.state().conversions, "an amendment changed past conversions");
        }
        // The stored bytes are RFC 8785 of the envelope, as the reference implementation
        // writes it, whatever path the crate takes.
        for e in std::iter::once(&d.fact).chain(d.outputs.iter().map(|o| &o.envelope)) {
            let reference = serde_json_canonicalizer::to_vec(&serde_json::to_value(e).unwrap()).unwrap();
            assert_eq!(e.to_bytes(), reference, "canonical bytes of {e:?}");
        }
        facts.push((env, seq));
        // Σ hops = pool, and no negative pool.
        let mut sum = 0;
        for o in &d.outputs {
            match &o.envelope.event {
                Event::MandateIssued { partner, amount, .. } => {
                    assert!(amount.minor_units() >= 0);
                    sum += amount.minor_units();
                    *issued.entry(partner.clone()).or_default() += amount.minor_units();
                }
                Event::ClawbackIssued { partner, amount, .. } => {
                    assert!(amount.minor_units() > 0);
                    *clawed.entry(partner.clone()).or_default() += amount.minor_units();
                }
                Event::PayoutBooked { partner, paid: p, .. } => {
                    *paid.entry(partner.clone()).or_default() += p.minor_units()
                }
                Event::ConversionOutcome { outcome, pool, .. } => {
                    assert!(pool.minor_units() >= 0, "negative pool");
                    if outcome == "settled" {
                        assert_eq!(sum, pool.minor_units(), "hops must sum to the pool");
                    }
                }
                _ => {}
            }
        }
    }
    let st = w.engine.state();
    for c in st.conversions.values() {
        for h in &c.hops {
            assert!(h.clawed <= h.amount && h.clawed >= 0, "clawed {} of {}", h.clawed, h.amount);
        }
        if c.refunded == c.revenue.minor_units() {
            assert!(c.hops.iter().all(|h| h.clawed == h.amount), "a full refund claws back everything");
        }
    }
    // Balances equal the sum of their postings.
    for (p, b) in &st.books {
        assert_eq!(b.earned, issued.get(p).copied().unwrap_or(0), "earned of {p}");
        assert_eq!(b.clawed_back, clawed.get(p).copied().unwrap_or(0), "clawed of {p}");
        assert_eq!(b.paid, paid.get(p).copied().unwrap_or(0), "paid of {p}");
        assert_eq!(b.earned - b.clawed_back, b.on_hold + b.payable + b.in_payout + b.paid);
        let in_flight: i64 = st
            .batches
            .values()
            .filter(|x| x.partner == *p && x.status == settle_engine::state::BatchStatus::Open)
            .map(|x| x.amount.minor_units())
            .sum();
        assert_eq!(b.in_payout, in_flight, "in payout of {p} is its open batches");
        let clawed_in_flight: i64 = st
            .batches
            .values()
            .filter(|x| x.partner == *p && x.status == settle_engine::state::BatchStatus::Open)
            .map(|x| x.clawed)
            .sum();
        assert_eq!(b.clawed_in_payout, clawed_in_flight, "clawbacks in flight of {p}");
        // What is payable is backed by payable mandates: never more than they are worth
        // (less where clawbacks of paid money are still owed).
        let backing: i64 = st
            .conversions
            .values()
            .flat_map(|c| c.hops)
            .filter(|h| h.partner == *p && h.status == settle_engine::state::HopStatus::Payable)
            .map(|h| h.amount - h.clawed)
            .sum();
        assert!(b.payable <= backing, "payable {} of {p} exceeds its payable mandates' {backing}", b.payable);
    }
    // A hop is batched exactly when an open batch holds it.
    let in_open: std::collections::BTreeSet<&String> = st
        .batches
        .values()
        .filter(|x| x.status == settle_engine::state::BatchStatus::Open)
        .flat_map(|x| &x.mandate_ids)
        .collect();
    for (cs, c) in st.conversions.iter() {
        for (i, h) in c.hops.iter().enumerate() {
            let id = c.mandate_id(cs, i);
            // A hop owed nothing has no mandate to resolve; every other hop resolves.
            let want = (h.status != settle_engine::state::HopStatus::Nothing).then_some((cs, i));
            assert_eq!(st.mandate_hop(&id).map(|(s, j, _)| (s, j)), want, "{id} resolves to its hop");
            assert_eq!(h.status == settle_engine::state::HopStatus::Batched, in_open.contains(&id), "{id}");
        }
    }
    (facts, w.engine)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn splits_clawbacks_and_books_hold_their_laws(
        split in arb_split(), percent in 0u32..=300, flat in prop::option::of(0i64..100_000), cap in prop::option::of(0i64..5_000_000),
        holding in 0u32..30, hops in 1usize..=MAX_HOPS, ops in arb_ops(), budget in prop::option::of(1_000i64..5_000_000),
        extras in arb_extras(),
    ) {
        let s = spec_of(split, percent, flat, cap, holding, budget, &extras);
        prop_assume!(settle_engine::rules::validate(&s).is_ok());
        let (facts, engine) = run(s, hops, &ops);
        // Replay: the same facts into a fresh engine give the same state, byte for byte.
        let mut replay = World::chain(engine_spec(&engine), hops).engine;
        for (env, seq) in facts {
            replay.decide(env, seq).unwrap();
        }
        prop_assert_eq!(serde_json::to_vec(replay.state()).unwrap(), serde_json::to_vec(engine.state()).unwrap());
    }

    /// Deals and amendments (from today or a later day) interleaved over several days:
    /// every conversion keeps the rule version in force when it occurred, and its amounts
    /// are exactly what a program that only ever had that version computes; an amendment
    /// leaves every recorded conversion as it was.
    #[test]
    fn amending_a_program_never_changes_past_results(
        steps in prop::collection::vec((any::<bool>(), 1i64..10_000_000, 0u32..=200, 0u32..=40, 0i64..3, 0i64..3), 1..16),
    ) {
        let rules = |pool: u32, originator: u32| {
            spec(shares(&originator.to_string(), "20", "40", Position::Closer), percent_pool(&format!("{}.{}", pool / 10, pool % 10)), 0)
        };
        let mut w = World::chain(rules(100, 30), 3);
        // The versions this test made: number, first day in force, rules.
        let mut versions = vec![(1u32, 0i64, rules(100, 30))];
        let mut deals = Vec::new();
        for (i, (amend, rev, pool, originator, days, ahead)) in steps.into_iter().enumerate() {
            w.day += days;
            if amend {
                // From today or a later day, never before the version it replaces.
                let from = (w.day + ahead).max(versions.last().unwrap().1);
                let before = w.engine.state().conversions.clone();
                w.fact(Event::ProgramAmended { spec: rules(pool, originator), effective_from: t(from) });
                prop_assert_eq!(&before, &w.engine.state().conversions);
                versions.push((u32::try_from(versions.len()).unwrap() + 1, from, rules(pool, originator)));
            } else {
                let id = format!("c{i}");
                w.convert(&id, rev);
                // In force: the newest version made so far that took effect by today.
                let v = versions.iter().rev().find(|v| v.1 <= w.day).unwrap().clone();
                deals.push((id, rev, v));
            }
        }
        let st = w.engine.state();
        for (id, rev, (version, _, rules)) in deals {
            let c = st.conversions.get(st.conversions.seq_of(&id).unwrap()).unwrap();
            prop_assert_eq!(c.rule_version, version, "{} occurred under another version", id);
            let mut alone = World::chain(rules, 3);
            let d = alone.convert(&id, rev);
            // The mandates issued: one per hop owed something.
            let paid: Vec<i64> = c.hops.iter().map(|h| h.amount).filter(|a| *a > 0).collect();
            prop_assert_eq!(paid, amounts(&d), "{}", id);
            prop_assert_eq!(c.pool.minor_units(), outcome(&d).2);
        }
        // A recorded conversion id again is refused and changes nothing.
        let st = w.engine.state().clone();
        let id = st.conversions.values().next().map_or_else(|| { w.convert("c-last", 100); "c-last".to_owned() }, |c| c.id.to_string());
        let st = w.engine.state().clone();
        let again = Event::ConversionRecorded { conversion: id, lead: "l1".into(), revenue: usd(100), occurred_at: t(w.day), subscription_month: None, fx: None };
        prop_assert!(w.try_fact(again).is_err());
        prop_assert_eq!(&st, w.engine.state());
    }
}

/// The spec of the (single) program an engine holds.
fn engine_spec(e: &Engine) -> ProgramSpec {
    e.state().programs.values().next().unwrap().versions[0].spec.clone()
}

#[test]
fn config_is_injected_not_read() {
    // Two engines with different salt secrets derive different salts, same amounts.
    let mk = |secret| {
        let mut w = World::chain(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0), 2);
        w.engine =
            Engine::with_state(EngineConfig { vendor: "vendor".into(), salt_secret: secret }, w.engine.state().clone());
        let d = w.convert("c", 100_000);
        d.outputs
            .iter()
            .filter_map(|o| match &o.sign {
                Some(settle_engine::state::ToSign::Mandate(m)) => Some((m.salt.clone(), m.payment_amount)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (mk([1; 32]), mk([2; 32]));
    assert_eq!(a.len(), 2);
    assert_ne!(a[0].0, b[0].0);
    assert_eq!(a[0].1, b[0].1);
}
