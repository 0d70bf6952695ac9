//! Helpers shared by the engine tests.
#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use settle_engine::model::*;
use settle_engine::{Decision, Engine, EngineConfig, Envelope, Rejection};
use settle_mandates::money::{Amount, Rounding};

pub fn t(day: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::days(day)
}

pub fn usd(minor: i64) -> Amount {
    Amount::from_minor(minor, "USD".parse().unwrap()).unwrap()
}

pub fn pct(s: &str) -> Percent {
    serde_json::from_value(serde_json::Value::String(s.into())).unwrap()
}

pub fn spec(split: SplitRule, pool: PoolRule, holding_days: u32) -> ProgramSpec {
    ProgramSpec {
        allocation: Some(Allocation::CURRENT),
        program: "prg".into(),
        name: "Program".into(),
        currency: "USD".parse().unwrap(),
        holding_days,
        attribution_window_days: 90,
        pool_rounding: Rounding::HalfEven,
        pool,
        split,
        budget: None,
        payment_range: None,
        disputes: None,
        valid_from: t(0),
        valid_until: None,
    }
}

pub fn shares(o: &str, i: &str, c: &str, rest: Position) -> SplitRule {
    SplitRule::Shares { originator: pct(o), intermediaries: pct(i), closer: pct(c), remaining: rest }
}

pub fn percent_pool(p: &str) -> PoolRule {
    PoolRule { percent: Some(pct(p)), ..PoolRule::default() }
}

pub struct World {
    pub engine: Engine,
    pub seq: u64,
    pub day: i64,
}

impl World {
    pub fn new() -> Self {
        Self { engine: Engine::new(EngineConfig { vendor: "vendor".into(), salt_secret: [7; 32] }), seq: 0, day: 0 }
    }

    pub fn try_fact(&mut self, e: Event) -> Result<Decision, Rejection> {
        let env = Envelope {
            v: 1,
            at: t(self.day),
            by: "vendor:admin".into(),
            key: Some(format!("k{}", self.seq)),
            cause: None,
            event: e,
        };
        let d = self.engine.decide(env, self.seq)?;
        self.seq += 1 + d.outputs.len() as u64;
        Ok(d)
    }

    pub fn fact(&mut self, e: Event) -> Decision {
        self.try_fact(e).unwrap()
    }

    /// A program, partners p0..pn, and a lead handed along the chain p0 → ... → p(n-1).
    pub fn chain(spec: ProgramSpec, n: usize) -> Self {
        let mut w = Self::new();
        for e in chain_facts(spec, n) {
            w.fact(e);
        }
        w
    }

    pub fn convert(&mut self, id: &str, revenue: i64) -> Decision {
        self.fact(Event::ConversionRecorded {
            conversion: id.into(),
            lead: "l1".into(),
            revenue: usd(revenue),
            occurred_at: t(self.day),
            subscription_month: None,
            fx: None,
        })
    }
}

/// The facts of [`World::chain`]: a program, partners p0..pn, and a lead handed along
/// the chain p0 → ... → p(n-1).
pub fn chain_facts(spec: ProgramSpec, n: usize) -> Vec<Event> {
    let mut facts = vec![Event::ProgramPublished { spec }];
    for i in 0..n {
        facts.push(Event::PartnerEnrolled {
            partner: format!("p{i}"),
            program: "prg".into(),
            name: format!("P{i}"),
            role: PartnerRole::Partner,
        });
    }
    facts.push(Event::LeadRegistered {
        lead: "l1".into(),
        program: "prg".into(),
        customer: "acme.com".into(),
        customer_key: Some(CustomerKey::CURRENT),
        partner: "p0".into(),
    });
    for i in 1..n {
        facts.push(Event::LeadHandedOff { lead: "l1".into(), from: format!("p{}", i - 1), to: format!("p{i}") });
    }
    facts
}

/// Amounts of the mandates (payment or clawback) in a decision, in order.
pub fn amounts(d: &Decision) -> Vec<i64> {
    d.outputs
        .iter()
        .filter_map(|o| match &o.envelope.event {
            Event::MandateIssued { amount, .. } | Event::ClawbackIssued { amount, .. } => Some(amount.minor_units()),
            _ => None,
        })
        .collect()
}

pub fn outcome(d: &Decision) -> (String, Option<String>, i64) {
    d.outputs
        .iter()
        .find_map(|o| match &o.envelope.event {
            Event::ConversionOutcome { outcome, reason, pool, .. } => {
                Some((outcome.to_string(), reason.clone(), pool.minor_units()))
            }
            _ => None,
        })
        .unwrap()
}
