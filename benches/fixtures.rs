//! Shared fixtures for the benchmarks.
#![allow(dead_code, missing_docs)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use settle_engine::model::*;
use settle_engine::{Engine, EngineConfig, Envelope};
use settle_mandates::money::{Amount, Rounding};
use settle_mandates::types::{Direction, Instrument, LogRef, Mandate, MandateBasis, Payee};

pub fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap() + Duration::seconds(s)
}

pub fn usd(m: i64) -> Amount {
    Amount::from_minor(m, "USD".parse().unwrap()).unwrap()
}

pub fn mandate(i: u64) -> Mandate {
    Mandate {
        vct: "mandate.payment.1".into(),
        transaction_id: format!("md_{i}_1"),
        payee: Payee { id: "p07".into() },
        payment_amount: usd(24_691),
        payment_instrument: Instrument { kind: "settle.commission_account".into(), id: "p07".into() },
        direction: Direction::Payment,
        iss: "vendor.bench".into(),
        iat: 1_767_225_600,
        execution_date: 1_768_435_200,
        basis: MandateBasis {
            program: "growth".into(),
            rule_version: 1,
            rounding: "largest_remainder.v1+pool.half_even".into(),
            open_mandate: "om_growth_3".into(),
            conversion: format!("deal-{i}"),
            hop: 1,
            hops: 3,
            role: "intermediary".into(),
            pool: usd(123_457),
            log: LogRef { seq: i, event_hash: "ab".repeat(32) },
            caused_by: "agent:vendor-crm".into(),
            reverses: None,
            dispute: None,
        },
        salt: "c2FsdHNhbHRzYWx0c2FsdA".into(),
    }
}

pub fn spec() -> ProgramSpec {
    let pct = |s: &str| serde_json::from_value::<Percent>(serde_json::Value::String(s.into())).unwrap();
    ProgramSpec {
        allocation: Some(Allocation::CURRENT),
        program: "growth".into(),
        name: "Growth".into(),
        currency: "USD".parse().unwrap(),
        holding_days: 0,
        attribution_window_days: 730,
        pool_rounding: Rounding::HalfEven,
        pool: PoolRule { percent: Some(pct("10")), ..PoolRule::default() },
        split: SplitRule::Shares {
            originator: pct("30"),
            intermediaries: pct("20"),
            closer: pct("40"),
            remaining: Position::Closer,
        },
        budget: None,
        payment_range: None,
        disputes: None,
        valid_from: t(0),
        valid_until: None,
    }
}

/// The envelope of record `seq`, logged at t(seq) for the set-up facts and at
/// t(1000 + seq) for everything after it, so a conversion won at t(1000) (after its lead
/// was registered) is recorded after it was won.
pub fn env(seq: u64, e: Event) -> Envelope {
    let s = i64::try_from(seq).unwrap();
    let at = if matches!(e, Event::ConversionRecorded { .. }) { t(1000 + s) } else { t(s) };
    env_at(seq, at, e)
}

pub fn env_at(seq: u64, at: DateTime<Utc>, e: Event) -> Envelope {
    Envelope { v: 1, at, by: "vendor:bench".into(), key: Some(format!("k{seq}")), cause: None, event: e }
}

/// The facts that set up a program, three partners and a lead handed down a 3-hop chain.
pub fn chain_setup() -> Vec<Event> {
    let mut facts = vec![Event::ProgramPublished { spec: spec() }];
    for p in ["p1", "p2", "p3"] {
        facts.push(Event::PartnerEnrolled {
            partner: p.into(),
            program: "growth".into(),
            name: p.into(),
            role: PartnerRole::Partner,
        });
    }
    facts.push(Event::LeadRegistered {
        lead: "l1".into(),
        program: "growth".into(),
        customer: "acme.example".into(),
        customer_key: Some(CustomerKey::CURRENT),
        partner: "p1".into(),
    });
    facts.push(Event::LeadHandedOff { lead: "l1".into(), from: "p1".into(), to: "p2".into() });
    facts.push(Event::LeadHandedOff { lead: "l1".into(), from: "p2".into(), to: "p3".into() });
    facts
}

/// An engine that decided [`chain_setup`], and the next sequence number.
pub fn engine_with_chain() -> (Engine, u64) {
    let mut e = Engine::new(EngineConfig { vendor: "vendor.bench".into(), salt_secret: [7; 32] });
    let mut seq = 0;
    for ev in chain_setup() {
        let d = e.decide(env(seq, ev), seq).unwrap();
        seq += 1 + d.outputs.len() as u64;
    }
    (e, seq)
}

pub fn conversion(i: u64) -> Event {
    Event::ConversionRecorded {
        conversion: format!("deal-{i}"),
        lead: "l1".into(),
        revenue: usd(1_234_567),
        occurred_at: t(1000),
        subscription_month: None,
        fx: None,
    }
}

/// Appends `iters` groups to `ledger` as the service does, two in flight: each group made
/// by `group` and queued in one reserved place, the one before it waited for once it is
/// queued. The time from the first group made to the last durable.
pub fn groups_two_in_flight(
    ledger: &settle_ledger::Ledger,
    rt: &tokio::runtime::Runtime,
    iters: u64,
    mut group: impl FnMut() -> Vec<settle_ledger::Append>,
) -> std::time::Duration {
    type Ack = Result<settle_ledger::Appended, settle_ledger::LedgerError>;
    fn wait<F: std::future::Future<Output = Ack>>(rt: &tokio::runtime::Runtime, acks: Vec<F>) {
        rt.block_on(async {
            for a in acks {
                a.await.unwrap();
            }
        });
    }
    let start = std::time::Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for _ in 0..iters {
        in_flight.push_back(ledger.reserve_blocking().unwrap().append_group(group()).unwrap());
        if in_flight.len() > 1 {
            wait(rt, in_flight.pop_front().unwrap());
        }
    }
    for acks in in_flight {
        wait(rt, acks);
    }
    start.elapsed()
}
