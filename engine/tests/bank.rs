//! The bank rail: payout instruments (by reference only), batches that pay them, and a
//! bank's return of a batch it paid.
mod common;
use common::*;
use settle_engine::Rejection;
use settle_engine::model::*;
use settle_engine::state::{BatchStatus, HopStatus};

fn reference(n: u8) -> String {
    format!("pi_{}", hex_of(n))
}

fn hex_of(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn mandates(d: &settle_engine::Decision) -> Vec<String> {
    d.outputs
        .iter()
        .filter_map(|o| match &o.envelope.event {
            Event::MandateIssued { mandate_id, partner, .. } if partner == "p1" => Some(mandate_id.clone()),
            _ => None,
        })
        .collect()
}

fn answer(batch: &str, settlement: &str, ids: &[String], said: Result<&str, &str>) -> Event {
    let (settlement, batch, partner, rail, mandate_ids) =
        (settlement.into(), Some(batch.into()), "p1".into(), BANK_RAIL.into(), ids.to_vec());
    match said {
        Ok(c) => {
            Event::SettlementConfirmed { settlement, batch, partner, rail, mandate_ids, confirmation_id: c.into() }
        }
        Err(e) => Event::SettlementFailed { settlement, batch, partner, rail, mandate_ids, error: e.into() },
    }
}

fn batch(id: &str, rail: &str, ids: &[String]) -> Event {
    Event::PayoutBatched { batch: id.into(), partner: "p1".into(), rail: rail.into(), mandate_ids: ids.to_vec() }
}

fn register(n: u8) -> Event {
    Event::PayoutInstrumentRegistered { partner: "p1".into(), instrument: reference(n), currency: usd(0).currency() }
}

/// A world of two partners (p1 the closer, half of a 10% pool), p1's bank account
/// registered, conversion c1 of 1,000.00 paid to p1 by bank in batch A (settlement S1):
/// the world and c1's mandates of p1 (5,000 minor units).
fn paid_by_bank() -> (World, Vec<String>) {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    w.fact(register(1));
    let a = mandates(&w.convert("c1", 100_000));
    w.fact(batch("A", BANK_RAIL, &a));
    w.fact(answer("A", "S1", &a, Ok("REF-A")));
    (w, a)
}

/// A refund of 300.00 of c1 (30%).
fn refund_30() -> Event {
    Event::RefundRecorded { refund: "r1".into(), conversion: "c1".into(), size: RefundSize::Amount(usd(30_000)) }
}

#[test]
fn a_bank_payout_pays_the_registered_instrument_and_needs_one() {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    let ids = mandates(&w.convert("c1", 100_000));
    let e = w.try_fact(batch("B1", BANK_RAIL, &ids)).unwrap_err().to_string();
    assert!(e.contains("has no payout instrument"), "{e}");
    // The reference is a salted hash, never the details; in the program's currency.
    for bad in ["DE89370400440532013000", "pi_00", &format!("pi_{}", "G".repeat(64))] {
        let e = Event::PayoutInstrumentRegistered {
            partner: "p1".into(),
            instrument: bad.into(),
            currency: usd(0).currency(),
        };
        assert!(matches!(w.try_fact(e), Err(Rejection::Invalid(_))), "{bad}");
    }
    let eur = "EUR".parse().unwrap();
    let e = Event::PayoutInstrumentRegistered { partner: "p1".into(), instrument: reference(1), currency: eur };
    assert!(w.try_fact(e).unwrap_err().to_string().contains("paid in USD"));
    let e = Event::PayoutInstrumentRegistered {
        partner: "nobody".into(),
        instrument: reference(1),
        currency: usd(0).currency(),
    };
    assert!(matches!(w.try_fact(e), Err(Rejection::NotFound(_))));
    w.fact(register(1));
    w.fact(register(2)); // replaces the first
    let d = w.fact(batch("B1", BANK_RAIL, &ids));
    assert!(
        matches!(&d.outputs[0].envelope.event, Event::PayoutBatchCreated { instrument: Some(i), .. } if *i == reference(2)),
        "{:?}",
        d.outputs[0].envelope.event
    );
    // Other rails name no instrument.
    let more = mandates(&w.convert("c2", 100_000));
    let d = w.fact(batch("B2", "book", &more));
    assert!(matches!(&d.outputs[0].envelope.event, Event::PayoutBatchCreated { instrument: None, .. }));
    // Removed (only the current one): no more bank payouts until another is registered.
    let gone = Event::PayoutInstrumentRemoved { partner: "p1".into(), instrument: reference(1) };
    assert!(matches!(w.try_fact(gone), Err(Rejection::NotFound(_))));
    w.fact(Event::PayoutInstrumentRemoved { partner: "p1".into(), instrument: reference(2) });
    let third = mandates(&w.convert("c3", 100_000));
    assert!(w.try_fact(batch("B3", BANK_RAIL, &third)).unwrap_err().to_string().contains("no payout instrument"));
}

#[test]
fn a_bank_may_return_a_batch_it_paid_and_the_money_is_payable_again() {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    w.fact(register(1));
    let ids = mandates(&w.convert("c1", 100_000));
    let book = |w: &World| *w.engine.state().books.get("p1").unwrap();
    w.fact(batch("B1", BANK_RAIL, &ids));
    w.fact(answer("B1", "S1", &ids, Ok("BANKREF-1")));
    assert_eq!((book(&w).payable, book(&w).paid), (0, 5_000));
    assert_eq!(w.engine.state().batches["B1"].status, BatchStatus::Paid);
    // Paid again: refused; returned: the payout is reversed, each mandate's payment failed.
    assert!(w.try_fact(answer("B1", "S2", &ids, Ok("again"))).unwrap_err().to_string().contains("already settled"));
    let d = w.fact(answer("B1", "S2", &ids, Err("AC04")));
    assert!(
        matches!(&d.outputs[0].envelope.event, Event::PayoutReturned { amount, batch, .. } if amount.minor_units() == 5_000 && batch == "B1"),
        "{:?}",
        d.outputs[0].envelope.event
    );
    assert!(
        matches!(&d.outputs[1].envelope.event, Event::MandatePaymentFailed { error, mandate_id, .. } if error == "AC04" && *mandate_id == ids[0])
    );
    let b = book(&w);
    assert_eq!((b.payable, b.in_payout, b.paid, b.earned), (5_000, 0, 0, 5_000));
    assert_eq!(w.engine.state().batches["B1"].status, BatchStatus::Returned);
    let cs = w.engine.state().conversions.seq_of("c1").unwrap();
    assert_eq!(w.engine.state().conversions.get(cs).unwrap().hops[1].status, HopStatus::Payable);
    // Returned once only; then a new batch pays the mandates again.
    assert!(w.try_fact(answer("B1", "S3", &ids, Err("AC04"))).unwrap_err().to_string().contains("already settled"));
    w.fact(batch("B2", BANK_RAIL, &ids));
    w.fact(answer("B2", "S4", &ids, Ok("BANKREF-2")));
    assert_eq!((book(&w).payable, book(&w).paid), (0, 5_000));
}

#[test]
fn a_return_after_a_clawback_of_paid_money_leaves_the_net_payable() {
    let (mut w, ids) = paid_by_bank();
    // 30% refunded after payment: owed back as a negative payable.
    w.fact(refund_30());
    let b = *w.engine.state().books.get("p1").unwrap();
    assert_eq!((b.payable, b.paid), (-1_500, 5_000));
    w.fact(answer("A", "S2", &ids, Err("AC04")));
    let b = *w.engine.state().books.get("p1").unwrap();
    assert_eq!((b.payable, b.paid), (3_500, 0));
    // Other rails' paid batches are final.
    let more = mandates(&w.convert("c2", 100_000));
    w.fact(batch("B2", "sepa", &more));
    let ok = Event::SettlementConfirmed {
        settlement: "S3".into(),
        batch: Some("B2".into()),
        partner: "p1".into(),
        rail: "sepa".into(),
        confirmation_id: "x".into(),
        mandate_ids: more.clone(),
    };
    w.fact(ok);
    let back = Event::SettlementFailed {
        settlement: "S4".into(),
        batch: Some("B2".into()),
        partner: "p1".into(),
        rail: "sepa".into(),
        error: "AC04".into(),
        mandate_ids: more,
    };
    assert!(w.try_fact(back).unwrap_err().to_string().contains("already settled"));
}

/// A return voids the debt of clawbacks of the returned money; where a later payout had
/// recovered that debt (paying less), the partner is owed it back: a credit the next
/// batch pays with the returned mandates, and gives back if it fails. Nothing is stuck,
/// nothing paid twice.
#[test]
fn a_return_after_the_debt_was_recovered_owes_the_recovery_back() {
    let (mut w, a) = paid_by_bank();
    let book = |w: &World| *w.engine.state().books.get("p1").unwrap();
    w.fact(refund_30());
    assert_eq!(book(&w).payable, -1_500);
    let b = mandates(&w.convert("c2", 100_000));
    let d = w.fact(batch("B", BANK_RAIL, &b));
    assert!(
        matches!(&d.outputs[0].envelope.event, Event::PayoutBatchCreated { amount, offset, credit: None, .. } if amount.minor_units() == 3_500 && offset.minor_units() == 1_500)
    );
    w.fact(answer("B", "S2", &b, Ok("REF-B")));
    // A comes back: its mandate is worth 3,500 now, and B's 1,500 recovery is owed back.
    w.fact(answer("A", "S3", &a, Err("AC04")));
    let k = book(&w);
    assert_eq!((k.payable, k.credit, k.paid), (5_000, 1_500, 3_500));
    // A batch that fails gives the credit back; the next one pays it.
    let d = w.fact(batch("C", BANK_RAIL, &a));
    assert!(
        matches!(&d.outputs[0].envelope.event, Event::PayoutBatchCreated { amount, credit: Some(c), .. } if amount.minor_units() == 5_000 && c.minor_units() == 1_500),
        "{:?}",
        d.outputs[0].envelope.event
    );
    assert_eq!(book(&w).credit, 0);
    w.fact(answer("C", "S4", &a, Err("AC01")));
    assert_eq!((book(&w).payable, book(&w).credit), (5_000, 1_500));
    w.fact(batch("D", BANK_RAIL, &a));
    w.fact(answer("D", "S5", &a, Ok("REF-D")));
    let k = book(&w);
    assert_eq!((k.payable, k.credit, k.paid, k.earned - k.clawed_back), (0, 0, 8_500, 8_500));
}

/// Before any recovery, a return leaves only the mandates' value payable: no credit.
#[test]
fn a_return_before_any_recovery_owes_only_the_mandates() {
    let (mut w, a) = paid_by_bank();
    w.fact(refund_30());
    w.fact(answer("A", "S2", &a, Err("AC04")));
    let k = *w.engine.state().books.get("p1").unwrap();
    assert_eq!((k.payable, k.credit), (3_500, 0));
    // A bank transfer of nothing is refused.
    let (mut w, _) = paid_by_bank();
    w.fact(Event::RefundRecorded { refund: "r1".into(), conversion: "c1".into(), size: RefundSize::Full });
    let small = mandates(&w.convert("c2", 10_000));
    let e = w.try_fact(batch("B", BANK_RAIL, &small)).unwrap_err().to_string();
    assert!(e.contains("nothing to transfer"), "{e}");
}
