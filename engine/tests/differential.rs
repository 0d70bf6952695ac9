//! Differential test: the engine against an independent reference model of
//! `docs/commission-rules.md` (`tests/reference/mod.rs`, exact rationals over big
//! integers, written from the document alone).
//!
//! Each case publishes a random program (shares or levels; percent, flat, tiers, spiffs,
//! cap, floor, FX, recurring months, budget, payment range, validity; every rounding;
//! currencies with 0, 2, 3 and 4 minor digits), registers a lead handed along 1 to 8
//! hops (and sometimes a second lead closed by the originator alone), records
//! conversions and then refunds (amounts, fractions, full; several partial ones), and
//! fails on the first difference: a refusal, an outcome, a pool, a hop's amount or a
//! hop's clawback. The generators lean on ties and edges: small pools, thirds and
//! sevenths, weights with common factors, amounts near 10^15.
//!
//! 10,000 cases by default (what CI runs). More with `SETTLE_DIFF_CASES`; the long run:
//!
//! ```sh
//! SETTLE_DIFF_CASES=1000000 cargo test --release -p settle-engine --test differential -- --nocapture
//! ```
mod reference;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::select;
use reference::{Deal, Decided, LIMIT, Model, Outcome, Q, RefundSize, Rounding, int};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use settle_engine::model::{Event, FxRate, PartnerRole, ProgramSpec, RefundSize as EngineRefund};
use settle_engine::{Decision, Engine, EngineConfig, Envelope, Rejection};
use settle_mandates::money::{Amount, Currency};

/// The program's publication time and `valid_from`.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn hours(h: i64) -> DateTime<Utc> {
    t0() + Duration::hours(h)
}

/// A decimal string as the engine's `Decimal` reads and writes it back, so that the
/// model and the engine see the same number.
fn normalised(s: &str) -> String {
    s.parse::<Decimal>().unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
}

/// The engine and the model side by side, fed the same facts.
struct Driver {
    engine: Engine,
    model: Model,
    seq: u64,
    /// Log time of the next fact.
    now: DateTime<Utc>,
    /// Lead ids, by the model's index.
    leads: Vec<String>,
    /// Id and revenue currency of each recorded conversion, by the model's index.
    conversions: Vec<(String, Currency)>,
    /// Ids handed out (refused facts included), to keep every id fresh.
    ids: usize,
    /// What each partner earned so far (by the model).
    earned: BTreeMap<String, i64>,
    /// What happened so far, for the failure message.
    transcript: Vec<String>,
}

impl Driver {
    /// Publishes `spec` to both, enrolls p0..p(hops-1) and registers lead `l1` at
    /// `registered` handed along all of them (and `l2`, p0 alone, if `second_lead`).
    /// `Ok(None)` when both refuse the program.
    fn new(spec: &Value, hops: usize, second_lead: bool, registered: DateTime<Utc>) -> Result<Option<Self>, String> {
        let model = Model::new(spec);
        let published = serde_json::from_value::<ProgramSpec>(spec.clone())
            .map_err(|e| format!("the engine cannot read the spec: {e}"))
            .and_then(|s| {
                let mut engine = Engine::new(EngineConfig { vendor: "vendor".into(), salt_secret: [7; 32] });
                let env = envelope(t0(), "k-publish", Event::ProgramPublished { spec: s });
                engine.decide(env, 0).map(|d| (engine, d)).map_err(|e| e.to_string())
            });
        let transcript = vec![format!("spec {spec}")];
        let (model, (engine, d)) = match (model, published) {
            (Ok(m), Ok(e)) => (m, e),
            (Err(_), Err(_)) => return Ok(None),
            (m, e) => {
                return Err(format!(
                    "publication differs: model {:?}, engine {:?}\n{spec:#}",
                    m.map(|_| "accepted"),
                    e.map(|_| "accepted")
                ));
            }
        };
        let mut w = Self {
            engine,
            model,
            seq: 1 + d.outputs.len() as u64,
            now: t0(),
            leads: vec![],
            conversions: vec![],
            ids: 0,
            earned: BTreeMap::new(),
            transcript,
        };
        let partners: Vec<String> = (0..hops).map(|i| format!("p{i}")).collect();
        for p in &partners {
            let name = p.to_uppercase();
            let e =
                Event::PartnerEnrolled { partner: p.clone(), program: "prg".into(), name, role: PartnerRole::Partner };
            w.fact(e).map_err(|e| format!("enrolling {p}: {e}"))?;
        }
        w.now = registered;
        w.register("l1", "acme.example", &partners)?;
        if second_lead {
            w.register("l2", "beta.example", &partners[..1])?;
        }
        Ok(Some(w))
    }

    fn register(&mut self, lead: &str, customer: &str, chain: &[String]) -> Result<(), String> {
        let e = Event::LeadRegistered {
            customer: customer.into(),
            customer_key: None,
            lead: lead.into(),
            partner: chain[0].clone(),
            program: "prg".into(),
        };
        self.fact(e).map_err(|e| format!("registering {lead}: {e}"))?;
        for pair in chain.windows(2) {
            let e = Event::LeadHandedOff { from: pair[0].clone(), lead: lead.into(), to: pair[1].clone() };
            self.fact(e).map_err(|e| format!("handing {lead} to {}: {e}", pair[1]))?;
        }
        self.model.register(chain.to_vec(), self.now);
        self.leads.push(lead.into());
        self.transcript.push(format!("lead {lead} at {}: {}", self.now, chain.join(" → ")));
        Ok(())
    }

    fn fact(&mut self, event: Event) -> Result<Decision, Rejection> {
        let env = envelope(self.now, &format!("k{}", self.seq), event);
        let d = self.engine.decide(env, self.seq)?;
        self.seq += 1 + d.outputs.len() as u64;
        Ok(d)
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.ids += 1;
        format!("{prefix}{}", self.ids)
    }

    fn fail(&self, what: String) -> String {
        format!("{what}\n--- case so far:\n{}", self.transcript.join("\n"))
    }

    /// Records `deal` (at the current log time) in both; what it came to, `None` if both
    /// refused it, `Err` on any difference.
    fn convert(&mut self, deal: &Deal) -> Result<Option<Decided>, String> {
        let id = self.fresh("c");
        let currency: Currency = deal.currency.parse().map_err(|e| format!("{}: {e}", deal.currency))?;
        let revenue = Amount::from_minor(deal.revenue, currency).map_err(|e| e.to_string())?;
        let fx =
            deal.fx.as_ref().map(|r| FxRate { rate: r.parse().expect("a normalised rate"), source: "test".into() });
        let event = Event::ConversionRecorded {
            conversion: id.clone(),
            fx,
            lead: self.leads[deal.lead].clone(),
            occurred_at: deal.occurred_at,
            revenue,
            subscription_month: deal.subscription_month,
        };
        let line = format!(
            "convert {id} at {} (occurred {}): {} {} fx {:?} month {:?} lead {}",
            self.now,
            deal.occurred_at,
            deal.revenue,
            deal.currency,
            deal.fx,
            deal.subscription_month,
            self.leads[deal.lead]
        );
        let before = self.model.clone();
        let model = self.model.convert(deal);
        // Not in the rules: the engine refuses a deal that would take a partner's earned
        // total past 10^15 minor units (the limit of a book's totals). Such deals are not
        // asked.
        if let Ok(m) = &model
            && m.outcome == Outcome::Settled
        {
            let chain = self.model.chain(self.model.conversions() - 1);
            if chain.iter().zip(&m.hops).any(|(p, h)| self.earned.get(p).copied().unwrap_or(0) + h > LIMIT) {
                self.model = before;
                self.transcript.push(format!("{line}\n    not asked: a partner's earned total would pass 10^15"));
                return Ok(None);
            }
            for (p, h) in chain.iter().zip(&m.hops) {
                *self.earned.entry(p.clone()).or_default() += h;
            }
        }
        let engine = self.fact(event);
        match (model, engine) {
            (Err(m), Err(e)) => {
                self.transcript.push(format!("{line}\n    both refuse (model: {m}; engine: {e})"));
                Ok(None)
            }
            (Ok(m), Ok(d)) => {
                self.conversions.push((id, currency));
                let chain = self.model.chain(self.model.conversions() - 1).to_vec();
                let e = engine_conversion(&d, &chain).map_err(|e| self.fail(format!("{line}\n    engine: {e}")))?;
                self.transcript.push(format!("{line}\n    model {m:?}"));
                if e != m {
                    return Err(self.fail(format!("conversion differs\n    model  {m:?}\n    engine {e:?}")));
                }
                Ok(Some(m))
            }
            (m, e) => Err(self.fail(format!(
                "{line}\n    refusal differs: model {:?}, engine {:?}",
                m.map(|d| d.outcome),
                e.map(|_| "accepted")
            ))),
        }
    }

    /// Refunds conversion `i` in both; each hop's clawback, `None` if both refused it,
    /// `Err` on any difference.
    fn refund(&mut self, i: usize, size: &RefundSize) -> Result<Option<Vec<i64>>, String> {
        let refund = self.fresh("r");
        let (conversion, currency) = self.conversions[i].clone();
        let engine_size = match size {
            RefundSize::Amount(a) => Amount::from_minor(*a, currency).map(EngineRefund::Amount).ok(),
            RefundSize::Fraction(f) => Some(EngineRefund::Fraction(f.parse().expect("a normalised fraction"))),
            RefundSize::Full => Some(EngineRefund::Full),
        };
        let line = format!("refund {refund} of {conversion}: {size:?} (left {})", self.model.left(i));
        let model = self.model.refund(i, size);
        // An amount beyond what `Amount` holds is refused before it reaches the engine.
        let engine = engine_size
            .ok_or_else(|| "amount out of range".to_owned())
            .and_then(|size| self.fact(Event::RefundRecorded { conversion, refund, size }).map_err(|e| e.to_string()));
        match (model, engine) {
            (Err(m), Err(e)) => {
                self.transcript.push(format!("{line}\n    both refuse (model: {m}; engine: {e})"));
                Ok(None)
            }
            (Ok(m), Ok(d)) => {
                let e = engine_clawbacks(&d, self.model.chain(i)).map_err(|e| self.fail(format!("{line}\n    {e}")))?;
                self.transcript.push(format!("{line}\n    model {m:?}"));
                if e != m {
                    return Err(self.fail(format!("clawbacks differ\n    model  {m:?}\n    engine {e:?}")));
                }
                Ok(Some(m))
            }
            (m, e) => {
                Err(self.fail(format!("{line}\n    refusal differs: model {m:?}, engine {:?}", e.map(|_| "accepted"))))
            }
        }
    }
}

fn envelope(at: DateTime<Utc>, key: &str, event: Event) -> Envelope {
    Envelope { v: 1, at, by: "vendor:admin".into(), key: Some(key.into()), cause: None, event }
}

/// The engine's conversion outcome, pool and mandates, read from its derived events.
fn engine_conversion(d: &Decision, chain: &[String]) -> Result<Decided, String> {
    let mut outcome = None;
    let mut mandates = vec![];
    for o in &d.outputs {
        match &o.envelope.event {
            Event::ConversionOutcome { outcome: name, pool, .. } => {
                let o = [Outcome::Settled, Outcome::Held, Outcome::NoCommission]
                    .into_iter()
                    .find(|o| o.name() == name)
                    .ok_or_else(|| format!("unknown outcome {name}"))?;
                if outcome.replace((o, pool.minor_units())).is_some() {
                    return Err("two conversion outcomes".into());
                }
            }
            Event::MandateIssued { partner, amount, .. } => mandates.push((partner.clone(), amount.minor_units())),
            _ => {}
        }
    }
    let (outcome, pool) = outcome.ok_or("no conversion outcome")?;
    if mandates.is_empty() {
        return Ok(Decided { outcome, pool, hops: vec![] });
    }
    // One mandate per hop owed something, in chain order; a hop owed 0 gets none
    // (commission-rules.md: "nothing owed, nothing signed").
    let mut hops = vec![0; chain.len()];
    let mut next = 0;
    for (partner, amount) in &mandates {
        let at = chain[next..].iter().position(|p| p == partner).map(|i| next + i);
        match at {
            Some(i) if *amount > 0 && outcome == Outcome::Settled => {
                hops[i] = *amount;
                next = i + 1;
            }
            _ => return Err(format!("{} with a mandate of {amount} to {partner} (chain {chain:?})", outcome.name())),
        }
    }
    Ok(Decided { outcome, pool, hops })
}

/// The engine's clawback of each hop (0 where it issued none).
fn engine_clawbacks(d: &Decision, chain: &[String]) -> Result<Vec<i64>, String> {
    let mut out = vec![0; chain.len()];
    for o in &d.outputs {
        if let Event::ClawbackIssued { partner, amount, .. } = &o.envelope.event {
            let hop = chain.iter().position(|p| p == partner).ok_or_else(|| format!("clawback from {partner}"))?;
            if out[hop] != 0 || amount.minor_units() <= 0 {
                return Err(format!("clawback {} from hop {hop} (already {})", amount.minor_units(), out[hop]));
            }
            out[hop] = amount.minor_units();
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Generators.

/// A spec, shown as its JSON.
#[derive(Clone)]
struct Spec(Value);

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Convert {
        second_lead: bool,
        revenue: i64,
        /// Another currency, and the FX rate given with it.
        foreign: Option<(&'static str, Option<String>)>,
        /// Log time advances by this many hours first.
        after_hours: i64,
        /// The deal occurred this many hours before its log time.
        back_hours: i64,
        month: Option<u32>,
    },
    Refund {
        conversion: usize,
        size: RefundGen,
    },
}

#[derive(Debug, Clone)]
enum RefundGen {
    Amount(i64),
    /// `left × n / d` of what is left (at least 1).
    PartOfLeft(i64, i64),
    /// Exactly what is left, as an amount.
    Left,
    /// One unit more than is left.
    OverLeft,
    Fraction(String),
    Full,
}

#[derive(Debug, Clone)]
struct Case {
    spec: Spec,
    hops: usize,
    second_lead: bool,
    registered_after_hours: i64,
    ops: Vec<Op>,
}

/// `x` millionths, as the shortest decimal string.
fn millionths(x: u64) -> String {
    let s = format!("{}.{:06}", x / 1_000_000, x % 1_000_000);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

const PERCENTS: &[&str] = &[
    "0",
    "1",
    "2",
    "5",
    "10",
    "12.5",
    "14.285714",
    "20",
    "25",
    "30",
    "33.333333",
    "40",
    "50",
    "66.666667",
    "100",
    "0.000001",
    "99.999999",
    "7",
    "3",
];

fn arb_percent() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(PERCENTS).prop_map(str::to_owned),
        1 => (0u64..=100).prop_map(|x| x.to_string()),
        1 => (0u64..=100_000_000).prop_map(millionths),
    ]
    .boxed()
}

/// A smaller percentage, for levels (eight of them stay within 100 %).
fn arb_rate() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(&["0", "1", "2", "5", "10", "12.5", "3.333333", "1.428571", "0.5", "0.000001"][..]).prop_map(str::to_owned),
        1 => (0u64..=12_500_000).prop_map(millionths),
    ]
    .boxed()
}

fn arb_split() -> BoxedStrategy<Value> {
    let triples: &[(&str, &str, &str)] = &[
        ("30", "20", "40"),
        ("30", "40", "10"),
        ("33.333333", "33.333333", "33.333333"),
        ("25", "50", "25"),
        ("10", "10", "10"),
        ("0", "0", "0"),
        ("0", "100", "0"),
        ("100", "0", "0"),
        ("0", "0", "100"),
        ("14.285714", "28.571428", "42.857142"),
        ("40", "10", "10"),
        ("20", "20", "20"),
        ("50", "0", "50"),
        ("0", "60", "0"),
    ];
    let shares = (
        prop_oneof![
            3 => select(triples).prop_map(|(o, i, c)| (o.to_owned(), i.to_owned(), c.to_owned())),
            1 => (0u64..=50, 0u64..=50, 0u64..=50).prop_map(|(o, i, c)| (o.to_string(), i.to_string(), c.to_string())),
            1 => (arb_percent(), arb_percent(), arb_percent()),
        ],
        select(&["originator", "intermediaries", "closer"][..]),
    )
        .prop_map(|((o, i, c), r)| {
            json!({"kind": "shares", "originator": o, "intermediaries": i, "closer": c, "remaining": r})
        });
    let lists: &[&[&str]] = &[
        &["40", "10", "10"],
        &["10", "2", "1"],
        &["0", "0", "0"],
        &["10", "10", "10"],
        &["33.333333", "33.333333", "33.333333"],
        &["10"],
        &["0"],
        &["5", "5", "5", "5", "5", "5", "5", "5"],
        &["14.285714", "14.285714"],
        &["0", "10"],
        &["60", "50"],
    ];
    let levels = prop_oneof![
        2 => select(lists).prop_map(|l| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()),
        1 => prop::collection::vec(arb_rate(), 1..=8),
    ]
    .prop_map(|rates| json!({"kind": "levels", "rates": rates}));
    prop_oneof![3 => shares, 2 => levels].boxed()
}

/// A pool amount: small, or near the limit.
fn arb_money() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => 0i64..=400,
        1 => 0i64..=10_000_000,
        1 => select(&[18, 400_000_000_000_001, LIMIT, LIMIT - 1, 999_999_999_999_999][..]),
        1 => (LIMIT - 1_000_000)..=LIMIT,
    ]
    .boxed()
}

fn arb_tiers() -> BoxedStrategy<Value> {
    (prop::collection::vec((prop_oneof![1i64..=500, 1_000i64..=10_000_000], arb_percent()), 1..=4), any::<bool>())
        .prop_map(|(steps, marginal)| {
            let mut from = 0;
            let tiers: Vec<Value> = steps
                .into_iter()
                .enumerate()
                .map(|(i, (step, p))| {
                    if i > 0 {
                        from += step;
                    }
                    json!({"from": from, "percent": p})
                })
                .collect();
            (tiers, if marginal { "marginal" } else { "tiered" })
        })
        .prop_map(|(tiers, mode)| json!({"tiers": tiers, "tier_mode": mode}))
        .boxed()
}

fn arb_spiffs() -> BoxedStrategy<Vec<Value>> {
    prop::collection::vec(
        (0i64..=24 * 60, 0i64..=24 * 30, prop::option::of(arb_rate()), prop::option::of(0i64..=400)),
        0..=2,
    )
    .prop_map(|spiffs| {
        spiffs
            .into_iter()
            .enumerate()
            .map(|(i, (from, len, p, flat))| {
                let mut s = json!({"name": format!("spiff {i}"), "from": hours(from), "until": hours(from + len)});
                if let Some(p) = p {
                    s["percent"] = json!(p);
                }
                if let Some(f) = flat {
                    s["flat"] = json!(f);
                }
                s
            })
            .collect()
    })
    .boxed()
}

/// The pool's rules, given whether the split is `levels` (no percent, flat or tiers).
#[allow(clippy::type_complexity)]
fn arb_pool()
-> BoxedStrategy<(Option<String>, Option<Value>, Option<i64>, Option<i64>, Option<i64>, Vec<Value>, Option<u32>)> {
    (
        prop::option::weighted(0.8, arb_percent()),
        prop::option::weighted(0.2, arb_tiers()),
        prop::option::weighted(0.3, arb_money()),
        prop::option::weighted(0.2, arb_money()),
        prop::option::weighted(0.2, arb_money()),
        arb_spiffs(),
        prop::option::weighted(0.2, 1u32..=3),
    )
        .boxed()
}

fn arb_spec() -> BoxedStrategy<Spec> {
    (
        arb_split(),
        arb_pool(),
        prop_oneof![4 => Just("USD"), 2 => Just("JPY"), 2 => Just("BHD"), 1 => Just("CLF")],
        select(&["half_even", "half_away_from_zero", "toward_zero", "floor"][..]),
        prop_oneof![4 => Just(90u32), 1 => select(&[1u32, 2, 30, 730][..])],
        prop::option::weighted(0.15, prop_oneof![0i64..=2_000, 0i64..=10_000_000]),
        prop::option::weighted(0.15, (0i64..=50, 0i64..=1_000)),
        prop::option::weighted(0.1, 24i64..=24 * 90),
    )
        .prop_map(
            |(
                split,
                (percent, tiers, flat, cap, floor, spiffs, months),
                currency,
                rounding,
                window,
                budget,
                range,
                until,
            )| {
                let levels = split["kind"] == "levels";
                let mut pool = json!({});
                if !levels {
                    match (tiers, percent) {
                        (Some(t), _) => {
                            pool["tiers"] = t["tiers"].clone();
                            pool["tier_mode"] = t["tier_mode"].clone();
                        }
                        // Never a shares pool with nothing in it.
                        (None, p) => pool["percent"] = json!(p.unwrap_or_else(|| "10".into())),
                    }
                    if let Some(f) = flat {
                        pool["flat"] = json!(f);
                    }
                }
                if let Some(c) = cap {
                    pool["cap"] = json!(c);
                }
                if let Some(f) = floor {
                    pool["floor"] = json!(cap.map_or(f, |c| f.min(c)));
                }
                if !spiffs.is_empty() {
                    pool["spiffs"] = json!(spiffs);
                }
                if let Some(m) = months {
                    pool["recurring_months"] = json!(m);
                }
                let mut spec = json!({
                    "allocation": "largest_remainder.v2",
                    "program": "prg",
                    "name": "Program",
                    "currency": currency,
                    "holding_days": 30,
                    "attribution_window_days": window,
                    "pool_rounding": rounding,
                    "pool": pool,
                    "split": split,
                    "valid_from": t0(),
                });
                if let Some(max) = budget {
                    spec["budget"] = json!({"max": max});
                }
                if let Some((min, width)) = range {
                    spec["payment_range"] = json!({"min": min, "max": min + width});
                }
                if let Some(h) = until {
                    spec["valid_until"] = json!(hours(h));
                }
                Spec(spec)
            },
        )
        .boxed()
}

fn arb_fx_rate() -> BoxedStrategy<String> {
    prop_oneof![
        2 => select(&[
            "1", "0.5", "1.1", "3", "7", "1000", "0.001", "149.123", "0.0073", "0.333333333333333333",
            "0.142857142857142857", "1.0000000000000000000000000001", "0.9999999999999999999999999999",
        ][..]).prop_map(str::to_owned),
        1 => (1u64..=1_000_000_000_000, 0u32..=12).prop_map(|(m, s)| Decimal::new(i64::try_from(m).unwrap(), s).to_string()),
    ]
    .prop_map(|s| normalised(&s))
    .boxed()
}

fn arb_revenue() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => 1i64..=400,
        3 => 1i64..=10_000_000,
        2 => select(&[467, 1_168, 1_889, 2_071, 2_127, 2_386, 30_000, 1_234_567, 999_999_999_999_999, LIMIT][..]),
        1 => 100_000_000_000_000i64..=LIMIT,
    ]
    .boxed()
}

fn arb_fraction() -> BoxedStrategy<String> {
    prop_oneof![
        2 => select(&[
            "0.5", "0.25", "0.333333", "0.142857", "0.1", "1", "0.999999", "0.0001", "0.75",
            "0.3333333333333333333333333333", "0.2857142857142857142857142857", "0.0000001",
        ][..]).prop_map(str::to_owned),
        1 => (1u64..=1_000_000).prop_map(millionths),
    ]
    .prop_map(|s| normalised(&s))
    .boxed()
}

fn arb_op() -> BoxedStrategy<Op> {
    let convert = (
        prop::bool::weighted(0.2),
        arb_revenue(),
        prop::option::weighted(
            0.2,
            (
                select(&["EUR", "JPY", "BHD", "KWD", "USD", "UYW", "CLF"][..]),
                prop::option::weighted(0.85, arb_fx_rate()),
            ),
        ),
        prop_oneof![0i64..=24, 0i64..=24 * 15],
        prop_oneof![4 => Just(0i64), 1 => 0i64..=24 * 40],
        prop::option::weighted(0.2, 1u32..=5),
    )
        .prop_map(|(second_lead, revenue, foreign, after_hours, back_hours, month)| Op::Convert {
            second_lead,
            revenue,
            foreign,
            after_hours,
            back_hours,
            month,
        });
    let size = prop_oneof![
        3 => (1i64..=6, 2i64..=7).prop_map(|(n, d)| RefundGen::PartOfLeft(n.min(d - 1), d)),
        1 => (1i64..=400).prop_map(RefundGen::Amount),
        1 => Just(RefundGen::Left),
        1 => Just(RefundGen::OverLeft),
        2 => arb_fraction().prop_map(RefundGen::Fraction),
        1 => Just(RefundGen::Full),
    ];
    let refund = (any::<usize>(), size).prop_map(|(conversion, size)| Op::Refund { conversion, size });
    prop_oneof![2 => convert, 3 => refund].boxed()
}

fn arb_case() -> BoxedStrategy<Case> {
    (
        arb_spec(),
        1usize..=8,
        prop::bool::weighted(0.3),
        0i64..=24 * 40,
        arb_op(),
        prop::collection::vec(arb_op(), 0..=10),
    )
        .prop_map(|(spec, hops, second_lead, registered_after_hours, first, rest)| {
            // The first step is a conversion.
            let first = match first {
                Op::Refund { .. } => Op::Convert {
                    second_lead: false,
                    revenue: 1_168,
                    foreign: None,
                    after_hours: 0,
                    back_hours: 0,
                    month: None,
                },
                c => c,
            };
            Case { spec, hops, second_lead, registered_after_hours, ops: std::iter::once(first).chain(rest).collect() }
        })
        .boxed()
}

/// Runs a case through both; `Err` describes the first difference.
fn run(case: &Case) -> Result<(), String> {
    let Some(mut w) = Driver::new(&case.spec.0, case.hops, case.second_lead, hours(case.registered_after_hours))?
    else {
        return Ok(());
    };
    let program_currency = w.model.program.currency.clone();
    for op in &case.ops {
        match op {
            Op::Convert { second_lead, revenue, foreign, after_hours, back_hours, month } => {
                w.now += Duration::hours(*after_hours);
                let (currency, fx) = match foreign {
                    Some((c, fx)) if *c != program_currency => ((*c).to_owned(), fx.clone()),
                    _ => (program_currency.clone(), None),
                };
                let deal = Deal {
                    lead: usize::from(*second_lead && case.second_lead),
                    revenue: *revenue,
                    currency,
                    fx,
                    occurred_at: w.now - Duration::hours(*back_hours),
                    subscription_month: *month,
                };
                if w.model.is_ambiguous(&deal) {
                    continue;
                }
                w.convert(&deal)?;
            }
            Op::Refund { conversion, size } => {
                let n = w.model.conversions();
                if n == 0 {
                    continue;
                }
                let i = conversion % n;
                let left = w.model.left(i);
                let size = match size {
                    RefundGen::Amount(a) => RefundSize::Amount(*a),
                    RefundGen::PartOfLeft(num, den) => RefundSize::Amount(
                        (i128::from(left) * i128::from(*num) / i128::from(*den))
                            .try_into()
                            .map_or(1, |a: i64| a.max(1)),
                    ),
                    RefundGen::Left => RefundSize::Amount(left),
                    RefundGen::OverLeft => RefundSize::Amount(left + 1),
                    RefundGen::Fraction(f) => RefundSize::Fraction(f.clone()),
                    RefundGen::Full => RefundSize::Full,
                };
                // Refunding nothing (all refunded already) is not said to be refused or
                // recorded: not asked.
                if left == 0 && matches!(size, RefundSize::Full | RefundSize::Amount(0)) {
                    continue;
                }
                w.refund(i, &size)?;
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("SETTLE_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_computes_what_the_reference_model_computes(case in arb_case()) {
        if let Err(e) = run(&case) {
            return Err(TestCaseError::fail(e));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Regressions (values from the issue): each checked against the model and the engine.

fn program(currency: &str, rounding: &str, pool: Value, split: Value) -> Value {
    json!({
        "allocation": "largest_remainder.v2",
        "program": "prg",
        "name": "Program",
        "currency": currency,
        "holding_days": 30,
        "attribution_window_days": 90,
        "pool_rounding": rounding,
        "pool": pool,
        "split": split,
        "valid_from": t0(),
    })
}

fn shares(o: &str, i: &str, c: &str, remaining: &str) -> Value {
    json!({"kind": "shares", "originator": o, "intermediaries": i, "closer": c, "remaining": remaining})
}

fn levels(rates: &[&str]) -> Value {
    json!({"kind": "levels", "rates": rates})
}

/// One conversion of `revenue` by a `hops`-hop chain, then `refunds`: the conversion and
/// each refund's clawbacks, the same in the model and the engine (else a panic).
fn scenario(spec: &Value, hops: usize, revenue: i64, refunds: &[RefundSize]) -> (Decided, Vec<Vec<i64>>) {
    let mut w = Driver::new(spec, hops, false, t0()).unwrap().expect("the program is published");
    let deal = Deal {
        lead: 0,
        revenue,
        currency: w.model.program.currency.clone(),
        fx: None,
        occurred_at: t0(),
        subscription_month: None,
    };
    let d = w.convert(&deal).unwrap_or_else(|e| panic!("{e}")).expect("the deal is recorded");
    let claws =
        refunds.iter().map(|r| w.refund(0, r).unwrap_or_else(|e| panic!("{e}")).expect("refund recorded")).collect();
    (d, claws)
}

/// The fractional parts of an exact split of `pool` by `weights`.
fn fractions(pool: i64, weights: &[i64]) -> Vec<Q> {
    let total: i64 = weights.iter().sum();
    weights.iter().map(|&w| int(pool) * int(w) / int(total)).map(|x| x.fract()).collect()
}

#[test]
fn equal_thirds_of_a_clawback_go_to_the_lower_hops() {
    let spec = program("USD", "half_even", json!({"percent": "10"}), shares("30", "20", "40", "closer"));
    // Pool 116.8 → 117 over 30/20/50: 35.1, 23.4, 58.5; the cent to the closer's .5.
    let (d, claws) = scenario(&spec, 3, 1_168, &[RefundSize::Amount(389)]);
    assert_eq!((d.pool, d.hops.as_slice()), (117, &[35, 23, 59][..]));
    // Target 117 × 389 / 1168 = 38.97 → 39 over what the hops hold: 35/3, 23/3, 59/3,
    // three equal fractions 2/3; the two cents go to hops 0 and 1.
    assert_eq!(fractions(39, &[35, 23, 59]), vec![Q::new(2.into(), 3.into()); 3]);
    assert_eq!(claws, [[12, 8, 19]]);
}

#[test]
fn equal_sevenths_of_a_clawback_go_to_the_lower_hop() {
    let spec = program("USD", "half_even", json!({"percent": "10"}), shares("30", "20", "40", "closer"));
    let (d, claws) = scenario(&spec, 3, 1_889, &[RefundSize::Amount(269)]);
    // Pool 188.9 → 189: 56.7, 37.8, 94.5; the two cents to .8 and .7.
    assert_eq!((d.pool, d.hops.as_slice()), (189, &[57, 38, 94][..]));
    // Target 189 × 269 / 1889 = 26.9 → 27: parts 57/7, 38/7, 94/7, fractions 1/7, 3/7,
    // 3/7; the one cent left goes to hop 1, the lower of the tie.
    let f = fractions(27, &[57, 38, 94]);
    assert!(f[1] == f[2] && f[1] > f[0], "{f:?}");
    assert_eq!(claws, [[8, 6, 13]]);
}

#[test]
fn equal_ninths_of_a_clawback_go_to_the_lower_hop() {
    let spec = program("USD", "half_even", json!({"percent": "10"}), shares("30", "20", "40", "closer"));
    let (d, claws) = scenario(&spec, 3, 2_071, &[RefundSize::Amount(230)]);
    // Pool 207.1 → 207: 62.1, 41.4, 103.5; the cent to the closer's .5.
    assert_eq!((d.pool, d.hops.as_slice()), (207, &[62, 41, 104][..]));
    // Target 207 × 230 / 2071 = 22.99 → 23: parts 62/9, 41/9, 104/9, fractions 8/9, 5/9,
    // 5/9; two cents: hop 0, then hop 1 of the tie.
    let f = fractions(23, &[62, 41, 104]);
    assert!(f[1] == f[2] && f[0] > f[1], "{f:?}");
    assert_eq!(claws, [[7, 5, 11]]);
}

#[test]
fn levels_40_10_10_split_equal_thirds_to_the_lower_hops() {
    let spec = program("USD", "half_even", json!({}), levels(&["40", "10", "10"]));
    // 60 % of 4.67 = 280.2 → 280 by weights 10/10/40: 46⅔, 46⅔, 186⅔.
    for (revenue, pool, hops) in
        [(467, 280, [47, 47, 186]), (2_127, 1_276, [213, 213, 850]), (2_386, 1_432, [239, 239, 954])]
    {
        assert_eq!(fractions(pool, &[10, 10, 40]), vec![Q::new(2.into(), 3.into()); 3]);
        let (d, _) = scenario(&spec, 3, revenue, &[]);
        assert_eq!((d.outcome, d.pool, d.hops.as_slice()), (Outcome::Settled, pool, &hops[..]), "revenue {revenue}");
    }
}

#[test]
fn equal_intermediaries_of_a_flat_pool_go_to_the_lower_hops() {
    // 30/40/10, rest to the closer, 5 hops: weights 30, 40/3, 40/3, 40/3, 30 of 18:
    // 5.4, 2.4, 2.4, 2.4, 5.4; the two units left go to hops 0 and 1.
    let spec = program("USD", "half_even", json!({"flat": 18}), shares("30", "40", "10", "closer"));
    let (d, _) = scenario(&spec, 5, 100, &[]);
    assert_eq!((d.pool, d.hops.as_slice()), (18, &[6, 3, 2, 2, 5][..]));
}

#[test]
fn equal_thirds_go_to_the_lower_hop() {
    // The document's example: P = 100 with equal weights gives 34, 33, 33 (30 % of 3.34).
    let spec = program("USD", "half_even", json!({}), levels(&["10", "10", "10"]));
    let (d, _) = scenario(&spec, 3, 334, &[]);
    assert_eq!((d.pool, d.hops.as_slice()), (100, &[34, 33, 33][..]));
}

#[test]
fn a_whole_clawback_target_is_not_a_unit_short_under_floor() {
    let spec = program("USD", "floor", json!({"percent": "10"}), shares("30", "20", "40", "closer"));
    // 10 % of 300.00 = 3000; 100.00 refunded: target 3000 × 10000 / 30000 = 1000 exactly.
    let (d, claws) = scenario(&spec, 1, 30_000, &[RefundSize::Amount(10_000)]);
    assert_eq!((d.pool, d.hops.as_slice()), (3_000, &[3_000][..]));
    assert_eq!(claws, [[1_000]]);
    let spec = program("USD", "toward_zero", json!({"percent": "10"}), shares("30", "20", "40", "closer"));
    assert_eq!(scenario(&spec, 1, 30_000, &[RefundSize::Amount(10_000)]).1, [[1_000]]);
}

#[test]
fn a_clawback_target_a_hair_above_a_half_rounds_up_near_the_limit() {
    let pool = 400_000_000_000_001;
    let spec = program("USD", "half_even", json!({"flat": pool}), shares("30", "20", "40", "closer"));
    let (revenue, refunded) = (999_999_999_999_999, 928_571_428_571_428);
    let (exact, target) = Model::target(pool, refunded, revenue, Rounding::HalfEven);
    // 400,000,000,000,001 × 928,571,428,571,428 / 999,999,999,999,999 =
    // 371,428,571,428,572.5000000000000005000…: above the half by 5 × 10^-16, no tie.
    // (The issue wrote the target as 285,714,285,714,572.5000000000000005; the integer
    // part does not follow from its own inputs, the fraction does.)
    let dec = |s: &str| reference::decimal(s).unwrap();
    assert!(exact > dec("371428571428572.5000000000000005"), "{exact}");
    assert!(exact < dec("371428571428572.5000000000000006"), "{exact}");
    assert_eq!(target, 371_428_571_428_573);
    let (d, claws) = scenario(&spec, 3, revenue, &[RefundSize::Amount(refunded)]);
    assert_eq!(d.pool, pool);
    assert_eq!(claws[0].iter().sum::<i64>(), target, "{claws:?}");
}

#[test]
fn a_whole_refund_in_parts_claws_back_every_mandate() {
    // Thirds of the revenue, then the rest: the clawbacks add up to each mandate.
    let spec = program(
        "BHD",
        "half_away_from_zero",
        json!({"percent": "33.333333"}),
        shares("30", "20", "40", "intermediaries"),
    );
    let third = RefundSize::Fraction("0.333333".into());
    let (d, claws) = scenario(&spec, 4, 1_000_001, &[third.clone(), third.clone(), third, RefundSize::Full]);
    let total: Vec<i64> = (0..4).map(|h| claws.iter().map(|c| c[h]).sum()).collect();
    assert_eq!(total, d.hops);
}

#[test]
fn currencies_with_four_minor_digits_are_paid_exactly() {
    // CLF and UYW have 4 minor digits in ISO 4217. A CLF program converting UYW revenue
    // at 0.5: 1.2345 UYW (12345) → 0.61725 CLF → 6172.5 ten-thousandths → 6172 (even).
    for code in ["CLF", "UYW"] {
        assert!(code.parse::<Currency>().is_ok_and(|c| c.exponent() == 4), "{code}");
    }
    let spec = program("CLF", "half_even", json!({"percent": "100"}), shares("30", "20", "40", "closer"));
    let mut w = Driver::new(&spec, 2, false, t0()).unwrap().expect("a CLF program is published");
    let deal = Deal {
        lead: 0,
        revenue: 12_345,
        currency: "UYW".into(),
        fx: Some("0.5".into()),
        occurred_at: t0(),
        subscription_month: None,
    };
    let d = w.convert(&deal).unwrap_or_else(|e| panic!("{e}")).expect("recorded");
    assert_eq!((d.pool, d.hops.as_slice()), (6_172, &[1_852, 4_320][..]));
}
