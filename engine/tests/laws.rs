//! Property tests of the engine's laws over random programs, chains, deals and refunds.
mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use settle_engine::model::*;
use settle_engine::{Engine, EngineConfig, Envelope};

#[derive(Debug, Clone)]
enum Op {
    Convert(i64),
    RefundPart(usize, u8),
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
            4 => (1i64..50_000_000).prop_map(Op::Convert),
            2 => (any::<usize>(), 1u8..100).prop_map(|(i, p)| Op::RefundPart(i, p)),
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

fn spec_of(
    split: SplitRule,
    percent: u32,
    flat: Option<i64>,
    cap: Option<i64>,
    holding: u32,
    budget: Option<i64>,
) -> ProgramSpec {
    let levels = matches!(split, SplitRule::Levels { .. });
    let mut pool = percent_pool(&format!("{}.{}", percent / 10, percent % 10));
    if levels {
        pool.percent = None;
    } else {
        pool.flat = flat;
    }
    pool.cap = cap;
    let mut s = spec(split, pool, holding);
    s.budget = budget.map(|max| Budget { max });
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
    let mut convs: Vec<(String, i64)> = Vec::new();
    let mut issued: BTreeMap<String, i64> = BTreeMap::new();
    let mut clawed: BTreeMap<String, i64> = BTreeMap::new();
    let mut paid: BTreeMap<String, i64> = BTreeMap::new();
    for (n, op) in ops.iter().enumerate() {
        let event = match op {
            Op::Convert(rev) => {
                let id = format!("c{n}");
                convs.push((id.clone(), *rev));
                Event::ConversionRecorded {
                    conversion: id,
                    lead: "l1".into(),
                    revenue: usd(*rev),
                    occurred_at: t(w.day),
                    subscription_month: None,
                    fx: None,
                }
            }
            Op::RefundPart(i, p) if !convs.is_empty() => {
                let (id, rev) = &convs[i % convs.len()];
                Event::RefundRecorded {
                    refund: format!("r{n}"),
                    conversion: id.clone(),
                    size: RefundSize::Amount(usd((rev * i64::from(*p) / 100).max(1))),
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
        let Ok(d) = w.engine.decide(env.clone(), seq) else { continue }; // e.g. refund beyond what is left
        w.seq += 1 + d.outputs.len() as u64;
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
            assert_eq!(st.mandate_hop(&id).map(|(s, j, _)| (s, j)), Some((cs, i)), "{id} resolves to its hop");
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
    ) {
        let s = spec_of(split, percent, flat, cap, holding, budget);
        prop_assume!(settle_engine::rules::validate(&s).is_ok());
        let (facts, engine) = run(s, hops, &ops);
        // Replay: the same facts into a fresh engine give the same state, byte for byte.
        let mut replay = World::chain(engine_spec(&engine), hops).engine;
        for (env, seq) in facts {
            replay.decide(env, seq).unwrap();
        }
        prop_assert_eq!(serde_json::to_vec(replay.state()).unwrap(), serde_json::to_vec(engine.state()).unwrap());
    }

    #[test]
    fn amending_a_program_never_changes_past_results(revs in prop::collection::vec(1i64..10_000_000, 1..10), new_pct in 0u32..=100) {
        let mut w = World::chain(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0), 3);
        for (i, r) in revs.iter().enumerate() {
            w.convert(&format!("c{i}"), *r);
        }
        let before = w.engine.state().conversions.clone();
        w.day = 1;
        let mut s2 = spec(shares("30", "20", "40", Position::Closer), percent_pool(&new_pct.to_string()), 0);
        s2.valid_from = t(0);
        w.fact(Event::ProgramAmended { spec: s2, effective_from: t(1) });
        prop_assert_eq!(&before, &w.engine.state().conversions);
        // The same conversion id again is refused and changes nothing.
        let st = w.engine.state().clone();
        let again = Event::ConversionRecorded { conversion: "c0".into(), lead: "l1".into(), revenue: usd(100), occurred_at: t(1), subscription_month: None, fx: None };
        let refused = w.try_fact(again).is_err();
        prop_assert!(refused);
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
