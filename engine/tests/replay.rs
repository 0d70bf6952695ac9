//! The replay that audits a log: derived records fed as bytes (accepted without parsing
//! when they are exactly what the replay derives) give the same verdict as records fed
//! parsed, and every kind of forgery is still found, with the same message.

mod common;

use common::*;
use settle_engine::model::*;
use settle_engine::replay::{Mismatch, Ready, Replay, sign_decisions};
use settle_engine::{Engine, EngineConfig, Envelope};
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};

struct Rec {
    seq: u64,
    kind: &'static str,
    version: u32,
    bytes: Vec<u8>,
}

fn cfg() -> EngineConfig {
    EngineConfig { vendor: "vendor".into(), salt_secret: [7; 32] }
}

fn ring(key: &SigningKey) -> KeyRing {
    KeyRing::new(&Jwks { keys: vec![key.to_jwk(None, None)] }).unwrap()
}

/// A program, a 3-hop chain, two won deals and a partial refund, signed with `key`.
fn log(key: &SigningKey) -> Vec<Rec> {
    signed(key)
        .into_iter()
        .enumerate()
        .map(|(seq, r)| Rec { seq: seq as u64, kind: r.kind, version: r.version, bytes: r.bytes })
        .collect()
}

/// The records of [`log`], with their envelopes.
fn signed(key: &SigningKey) -> Vec<Ready> {
    let mut facts = chain_facts(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0), 3);
    for (c, revenue) in [("c1", 1_234_567), ("c2", 500_000)] {
        facts.push(Event::ConversionRecorded {
            conversion: c.into(),
            lead: "l1".into(),
            revenue: usd(revenue),
            occurred_at: t(1),
            subscription_month: None,
            fx: None,
        });
    }
    facts.push(Event::RefundRecorded {
        refund: "r1".into(),
        conversion: "c1".into(),
        size: RefundSize::Amount(usd(200_000)),
    });
    let mut engine = Engine::new(cfg());
    let mut out = Vec::new();
    for (i, event) in facts.into_iter().enumerate() {
        let env =
            Envelope { v: 1, at: t(1), by: "vendor:admin".into(), key: Some(format!("k{i}")), cause: None, event };
        let seq = out.len() as u64;
        let d = engine.decide(env, seq).unwrap();
        out.extend(sign_decisions(vec![d], key).into_iter().flatten());
    }
    out
}

#[test]
fn every_signed_record_is_its_events_canonical_bytes() {
    // The signed records' bytes are made with the token spliced in: they must be exactly
    // what serialising the filled event makes, for every kind of signed event.
    let records = signed(&SigningKey::from_seed(&[5; 32]));
    let mut kinds: Vec<&str> = records.iter().map(|r| r.kind).collect();
    kinds.dedup();
    for kind in ["open_mandate_issued", "mandate_issued", "clawback_issued"] {
        assert!(kinds.contains(&kind), "the log has no {kind}: {kinds:?}");
    }
    for r in &records {
        assert_eq!(r.bytes, r.envelope.to_bytes(), "{} at {}", r.kind, r.envelope.cause.unwrap_or(0));
    }
}

/// Replays `log`, derived records as bytes (`raw`) or parsed; mandates and records seen.
fn replay(log: &[Rec], ring: &KeyRing, raw: bool) -> Result<(u64, u64), Mismatch> {
    let mut r = Replay::new(Engine::new(cfg()), ring.clone(), true);
    for x in log {
        if raw && !is_fact_kind(x.kind) {
            r.feed_derived_bytes(x.seq, x.kind, x.version, &x.bytes)?;
        } else {
            r.feed(x.seq, x.kind, x.version, &x.bytes)?;
        }
    }
    let seen = (r.mandates, r.records);
    r.finish()?;
    Ok(seen)
}

/// Both ways of feeding give the same verdict on `log`.
fn verdict(log: &[Rec], ring: &KeyRing) -> Result<(u64, u64), Mismatch> {
    let raw = replay(log, ring, true);
    assert_eq!(raw, replay(log, ring, false), "records fed as bytes and parsed disagree");
    raw
}

fn position(log: &[Rec], kind: &str) -> usize {
    log.iter().position(|r| r.kind == kind).unwrap()
}

#[test]
fn a_clean_log_replays_the_same_either_way() {
    let key = SigningKey::from_seed(&[3; 32]);
    let log = log(&key);
    let (mandates, records) = verdict(&log, &ring(&key)).unwrap();
    let count = |k: &str| log.iter().filter(|r| r.kind == k).count() as u64;
    // Two deals of three hops, and the refund clawed back from each hop.
    assert_eq!((count("mandate_issued"), count("clawback_issued")), (6, 3));
    assert_eq!(mandates, 6 + 3 + count("open_mandate_issued"), "every signed record is checked");
    assert_eq!(records, log.len() as u64);
}

#[test]
fn an_edited_derived_record_is_found_either_way() {
    let key = SigningKey::from_seed(&[3; 32]);
    let mut log = log(&key);
    let i = position(&log, "mandate_issued");
    let mut env = Envelope::from_bytes(&log[i].bytes).unwrap();
    let Event::MandateIssued { amount, .. } = &mut env.event else { unreachable!() };
    *amount = usd(amount.minor_units() + 1);
    log[i].bytes = env.to_bytes();
    let m = verdict(&log, &ring(&key)).unwrap_err();
    assert_eq!(m.seq, i as u64);
    assert!(m.what.contains("differs from the replay"), "{m}");
}

#[test]
fn a_derived_record_not_in_canonical_form_is_found_either_way() {
    let key = SigningKey::from_seed(&[3; 32]);
    let mut log = log(&key);
    let i = position(&log, "conversion_outcome");
    log[i].bytes.insert(1, b' ');
    let m = verdict(&log, &ring(&key)).unwrap_err();
    assert_eq!((m.seq, m.what.as_str()), (i as u64, "event is not in canonical form"));
}

#[test]
fn a_derived_record_under_another_type_is_found_either_way() {
    let key = SigningKey::from_seed(&[3; 32]);
    let mut log = log(&key);
    let i = position(&log, "lead_outcome");
    log[i].kind = "conversion_outcome";
    let m = verdict(&log, &ring(&key)).unwrap_err();
    assert_eq!(m.seq, i as u64);
}

#[test]
fn signatures_are_checked_on_records_taken_as_bytes() {
    let key = SigningKey::from_seed(&[3; 32]);
    let log = log(&key);
    let m = verdict(&log, &ring(&SigningKey::from_seed(&[4; 32]))).unwrap_err();
    assert!(m.what.contains("signature"), "{m}");
}
