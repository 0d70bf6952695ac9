//! Leads, chains, holds, refunds, settlements, amendments, rejections.
mod common;
use common::*;
use settle_engine::Rejection;
use settle_engine::model::*;
use settle_engine::state::HopStatus;

#[test]
fn duplicate_leads_and_bad_chains() {
    let mut w = World::chain(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0), 3);
    let d = w.fact(Event::LeadRegistered {
        lead: "l2".into(),
        program: "prg".into(),
        customer: " ACME.com".into(),
        customer_key: Some(CustomerKey::CURRENT),
        partner: "p1".into(),
    });
    assert!(
        matches!(&d.outputs[0].envelope.event, Event::LeadOutcome { outcome, owner: Some(o), .. } if outcome == "duplicate" && o == "l1")
    );
    // A conversion on the duplicate earns nothing.
    let dd = w.fact(Event::ConversionRecorded {
        conversion: "cd".into(),
        lead: "l2".into(),
        revenue: usd(1000),
        occurred_at: t(0),
        subscription_month: None,
        fx: None,
    });
    assert_eq!(outcome(&dd).0, "no_commission");
    let cases: Vec<(Event, &str)> = vec![
        (Event::LeadHandedOff { lead: "l1".into(), from: "p2".into(), to: "p0".into() }, "cycle"),
        (Event::LeadHandedOff { lead: "l1".into(), from: "p0".into(), to: "p1".into() }, "does not hold"),
        (Event::LeadHandedOff { lead: "l1".into(), from: "p2".into(), to: "nobody".into() }, "not found"),
        (Event::LeadHandedOff { lead: "zz".into(), from: "p2".into(), to: "p1".into() }, "not found"),
        (
            Event::LeadRegistered {
                lead: "l9".into(),
                program: "prg".into(),
                customer: "x.com".into(),
                customer_key: Some(CustomerKey::CURRENT),
                partner: "ghost".into(),
            },
            "not found",
        ),
        (
            Event::LeadRegistered {
                lead: "bad id!".into(),
                program: "prg".into(),
                customer: "x.com".into(),
                customer_key: Some(CustomerKey::CURRENT),
                partner: "p0".into(),
            },
            "must be",
        ),
        (
            Event::ConversionRecorded {
                conversion: "neg".into(),
                lead: "l1".into(),
                revenue: usd(-5),
                occurred_at: t(0),
                subscription_month: None,
                fx: None,
            },
            "greater than zero",
        ),
        (
            Event::ConversionRecorded {
                conversion: "future".into(),
                lead: "l1".into(),
                revenue: usd(100),
                occurred_at: t(5),
                subscription_month: None,
                fx: None,
            },
            "after the log time",
        ),
        (Event::PartnerSuspended { partner: "p1".into(), reason: "x".repeat(MAX_TEXT_BYTES + 1) }, "longer than"),
        (Event::HoldsAdvanced { to: t(1) }, "at the latest"),
    ];
    for (e, msg) in cases {
        let before = w.engine.state().clone();
        let err = w.try_fact(e).unwrap_err();
        assert!(err.to_string().contains(msg), "{err} should say {msg}");
        assert_eq!(&before, w.engine.state(), "a rejection changes nothing");
    }
    // Chains longer than the limit.
    let mut w = World::chain(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 0), MAX_HOPS);
    w.fact(Event::PartnerEnrolled {
        partner: "extra".into(),
        program: "prg".into(),
        name: "X".into(),
        role: PartnerRole::Connector,
    });
    let err = w
        .try_fact(Event::LeadHandedOff { lead: "l1".into(), from: format!("p{}", MAX_HOPS - 1), to: "extra".into() })
        .unwrap_err();
    assert!(err.to_string().contains("hops"), "{err}");
    // Suspended partners cannot receive leads.
    w.fact(Event::PartnerSuspended { partner: "extra".into(), reason: "fraud".into() });
    assert!(
        w.try_fact(Event::LeadRegistered {
            lead: "l5".into(),
            program: "prg".into(),
            customer: "y.com".into(),
            customer_key: Some(CustomerKey::CURRENT),
            partner: "extra".into()
        })
        .unwrap_err()
        .to_string()
        .contains("suspended")
    );
}

#[test]
fn splits_over_100_percent_are_refused_at_publication() {
    let mut w = World::new();
    let err = w
        .try_fact(Event::ProgramPublished {
            spec: spec(shares("60", "20", "40", Position::Closer), percent_pool("10"), 0),
        })
        .unwrap_err();
    assert!(matches!(err, Rejection::Rules(_)));
    assert!(err.to_string().contains("over 100%"));
    let err = w
        .try_fact(Event::ProgramPublished {
            spec: spec(SplitRule::Levels { rates: vec![pct("60"), pct("50")] }, PoolRule::default(), 0),
        })
        .unwrap_err();
    assert!(err.to_string().contains("over 100%"));
    assert!(serde_json::from_value::<Percent>(serde_json::json!("101")).is_err());
    assert!(serde_json::from_value::<Percent>(serde_json::json!("-1")).is_err());
}

#[test]
fn holds_release_refunds_claw_back_every_hop_and_paid_money_goes_negative() {
    let mut w = World::chain(spec(shares("30", "20", "40", Position::Closer), percent_pool("10"), 30), 3);
    let d = w.convert("c1", 1_000_000); // pool 1,000.00: 300 / 200 / 500
    assert_eq!(amounts(&d), vec![30000, 20000, 50000]);
    let book = |w: &World, p: &str| *w.engine.state().books.get(p).unwrap();
    assert_eq!(book(&w, "p2").on_hold, 50000);
    // Day 29: nothing released; day 30: all three payable.
    w.day = 29;
    let r = w.fact(Event::HoldsAdvanced { to: t(29) });
    assert!(r.outputs.is_empty());
    w.day = 30;
    let r = w.fact(Event::HoldsAdvanced { to: t(30) });
    assert!(
        matches!(&r.outputs[0].envelope.event, Event::HoldsReleased { mandate_ids, total } if mandate_ids.len() == 3 && total.minor_units() == 100000)
    );
    assert_eq!(book(&w, "p2").payable, 50000);
    // Pay p2.
    let cseq = w.engine.state().conversions.seq_of("c1").unwrap();
    w.fact(Event::SettlementConfirmed {
        settlement: "s1".into(),
        batch: None,
        partner: "p2".into(),
        rail: "book".into(),
        confirmation_id: "x".into(),
        mandate_ids: vec![format!("md_{cseq}_2")],
    });
    assert_eq!(book(&w, "p2").paid, 50000);
    // Paying it again is refused.
    assert!(
        w.try_fact(Event::SettlementConfirmed {
            settlement: "s2".into(),
            batch: None,
            partner: "p2".into(),
            rail: "book".into(),
            confirmation_id: "y".into(),
            mandate_ids: vec![format!("md_{cseq}_2")]
        })
        .is_err()
    );
    // Refund 25%: 250.00 of pool clawed back from every hop, 75 / 50 / 125.
    let r = w.fact(Event::RefundRecorded {
        refund: "r1".into(),
        conversion: "c1".into(),
        size: RefundSize::Amount(usd(250_000)),
    });
    assert_eq!(amounts(&r), vec![7500, 5000, 12500]);
    assert!(
        matches!(&r.outputs[2].envelope.event, Event::ClawbackIssued { offset, .. } if offset.minor_units() == 12500),
        "paid hop is offset"
    );
    assert_eq!(book(&w, "p2").payable, -12500, "clawback of paid money is a negative payable");
    assert_eq!(book(&w, "p0").payable, 22500);
    // Refund the rest: exactly everything is clawed back, never more.
    let r = w.fact(Event::RefundRecorded { refund: "r2".into(), conversion: "c1".into(), size: RefundSize::Full });
    assert_eq!(amounts(&r), vec![22500, 15000, 37500]);
    let c = w.engine.state().conversions.get(cseq).unwrap();
    assert!(c.hops.iter().all(|h| h.clawed == h.amount));
    assert_eq!(c.hops[2].status, HopStatus::Paid);
    assert!(
        w.try_fact(Event::RefundRecorded { refund: "r3".into(), conversion: "c1".into(), size: RefundSize::Full })
            .unwrap_err()
            .to_string()
            .contains("fully refunded")
    );
    assert!(
        w.try_fact(Event::RefundRecorded { refund: "r4".into(), conversion: "nope".into(), size: RefundSize::Full })
            .is_err()
    );
}

#[test]
fn amendments_apply_from_their_time_and_never_change_the_past() {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    w.day = 10;
    let before = amounts(&w.convert("c1", 100_000));
    let mut s2 = spec(shares("50", "0", "50", Position::Closer), percent_pool("20"), 0);
    s2.valid_from = t(0);
    w.fact(Event::ProgramAmended { spec: s2, effective_from: t(20) });
    let c1 = w.engine.state().conversions.get(w.engine.state().conversions.seq_of("c1").unwrap()).unwrap();
    assert_eq!(c1.hops.iter().map(|h| h.amount).collect::<Vec<_>>(), before);
    assert_eq!(c1.rule_version, 1);
    // A deal that occurred before the amendment, recorded after it, keeps the old rules.
    w.day = 25;
    let d = w.fact(Event::ConversionRecorded {
        conversion: "c2".into(),
        lead: "l1".into(),
        revenue: usd(100_000),
        occurred_at: t(15),
        subscription_month: None,
        fx: None,
    });
    assert_eq!(amounts(&d), before);
    let d = w.fact(Event::ConversionRecorded {
        conversion: "c3".into(),
        lead: "l1".into(),
        revenue: usd(100_000),
        occurred_at: t(21),
        subscription_month: None,
        fx: None,
    });
    assert_eq!(amounts(&d), vec![10000, 10000]);
}

fn ids_of(d: &settle_engine::Decision) -> Vec<String> {
    d.outputs
        .iter()
        .filter_map(|o| match &o.envelope.event {
            Event::MandateIssued { mandate_id, .. } => Some(mandate_id.clone()),
            _ => None,
        })
        .collect()
}

fn settle(batch: &str, settlement: &str, ids: &[String], ok: bool) -> Event {
    if ok {
        Event::SettlementConfirmed {
            settlement: settlement.into(),
            batch: Some(batch.into()),
            partner: "p1".into(),
            rail: "sepa".into(),
            confirmation_id: "SEPA-1".into(),
            mandate_ids: ids.to_vec(),
        }
    } else {
        Event::SettlementFailed {
            settlement: settlement.into(),
            batch: Some(batch.into()),
            partner: "p1".into(),
            rail: "sepa".into(),
            error: "AC04".into(),
            mandate_ids: ids.to_vec(),
        }
    }
}

#[test]
fn payout_batches_hold_money_in_flight_until_the_rail_answers() {
    // No holding period: 50/50 of a 10% pool, p1 is the closer.
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    let a = ids_of(&w.convert("c1", 100_000))[1].clone(); // p1: 50.00
    let b = ids_of(&w.convert("c2", 200_000))[1].clone(); // p1: 100.00
    let book = |w: &World| *w.engine.state().books.get("p1").unwrap();
    let batch = |id: &str, ids: &[String]| Event::PayoutBatched {
        batch: id.into(),
        partner: "p1".into(),
        rail: "sepa".into(),
        mandate_ids: ids.to_vec(),
    };
    let both = vec![a.clone(), b.clone()];
    // A direct payment the rail refused: one failure record, the mandate stays payable.
    let refused = w.fact(Event::SettlementFailed {
        settlement: "S-1".into(),
        batch: None,
        partner: "p1".into(),
        rail: "sepa".into(),
        error: "account_closed".into(),
        mandate_ids: vec![a.clone()],
    });
    assert!(
        matches!(&refused.outputs[..], [o] if matches!(&o.envelope.event, Event::MandatePaymentFailed { mandate_id, error, .. } if *mandate_id == a && error == "account_closed")),
        "{:?}",
        refused.outputs
    );
    assert_eq!((book(&w).payable, book(&w).paid), (15_000, 0));
    let d = w.fact(batch("B1", &both));
    assert!(
        matches!(&d.outputs[0].envelope.event, Event::PayoutBatchCreated { amount, offset, .. } if amount.minor_units() == 15_000 && offset.is_zero())
    );
    assert_eq!((book(&w).payable, book(&w).in_payout, book(&w).paid), (0, 15_000, 0));
    // In flight: not in another batch, not settled directly, not the batch under other ids.
    let e = w.try_fact(batch("B2", std::slice::from_ref(&a))).unwrap_err().to_string();
    assert!(e.contains("not payable (it is batched)"), "{e}");
    let direct = Event::SettlementConfirmed {
        settlement: "S0".into(),
        batch: None,
        partner: "p1".into(),
        rail: "sepa".into(),
        confirmation_id: "x".into(),
        mandate_ids: vec![a.clone()],
    };
    assert!(w.try_fact(direct).unwrap_err().to_string().contains("batched"));
    let e = w.try_fact(settle("B1", "S1", std::slice::from_ref(&a), true)).unwrap_err().to_string();
    assert!(e.contains("must list the 2 mandates of payout batch 'B1'"), "{e}");
    assert!(matches!(w.try_fact(batch("B1", &both)), Err(Rejection::Conflict(_))));
    // The rail fails: payable again, and a new batch can take them.
    // Nothing is booked; each mandate gets a record of the failure (a receipt's leaf).
    let failed = w.fact(settle("B1", "S1", &both, false));
    let named: Vec<&str> = failed
        .outputs
        .iter()
        .map(|o| match &o.envelope.event {
            Event::MandatePaymentFailed { mandate_id, settlement, .. } if settlement == "S1" => mandate_id.as_str(),
            other => panic!("unexpected {}", other.kind()),
        })
        .collect();
    assert_eq!(named, both.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((book(&w).payable, book(&w).in_payout), (15_000, 0));
    assert!(w.try_fact(settle("B1", "S1b", &both, true)).unwrap_err().to_string().contains("already settled"));
    w.fact(batch("B2", &both));
    // A refund while in flight: like paid money, it is owed back as a negative payable.
    let r = w.fact(Event::RefundRecorded {
        refund: "r1".into(),
        conversion: "c2".into(),
        size: RefundSize::Amount(usd(100_000)),
    });
    assert!(
        matches!(&r.outputs[1].envelope.event, Event::ClawbackIssued { offset, amount, .. } if offset == amount && amount.minor_units() == 5_000)
    );
    assert_eq!((book(&w).payable, book(&w).in_payout), (-5_000, 15_000));
    let d = w.fact(settle("B2", "S2", &both, true));
    assert!(matches!(&d.outputs[0].envelope.event, Event::PayoutBooked { paid, .. } if paid.minor_units() == 15_000));
    // Then one record per mandate paid, in the settlement's order.
    assert_eq!(d.outputs.len(), 1 + both.len());
    for (o, id) in d.outputs[1..].iter().zip(&both) {
        assert!(
            matches!(&o.envelope.event, Event::MandatePaid { mandate_id, confirmation_id, rail, .. } if mandate_id == id && rail == "sepa" && confirmation_id == "SEPA-1"),
            "{:?}",
            o.envelope.event
        );
    }
    let b1 = book(&w);
    assert_eq!((b1.payable, b1.in_payout, b1.paid, b1.earned, b1.clawed_back), (-5_000, 0, 15_000, 15_000, 5_000));
    let c = w.engine.state().conversions.get(w.engine.state().conversions.seq_of("c1").unwrap()).unwrap();
    assert_eq!(c.hops[1].status, HopStatus::Paid);
}

#[test]
fn a_held_conversion_is_paid_on_release_once_its_authorisation_allows_it() {
    let mut s = spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 7);
    s.budget = Some(settle_engine::model::Budget { max: 15_000 });
    let mut w = World::chain(s.clone(), 2);
    w.convert("c1", 100_000); // pool 100.00 of the 150.00 budget
    let held = w.convert("c2", 100_000);
    assert_eq!(outcome(&held).0, "held");
    let cseq = w.engine.state().conversions.seq_of("c2").unwrap();
    // Still over budget: refused, nothing changes.
    let before = w.engine.state().clone();
    let e = w.try_fact(Event::ConversionReleased { conversion: "c2".into() }).unwrap_err().to_string();
    assert!(e.contains("stays held: monthly budget exceeded"), "{e}");
    assert_eq!(*w.engine.state(), before);
    // The vendor raises the budget; the release pays what the deal earned when recorded.
    s.budget = Some(settle_engine::model::Budget { max: 50_000 });
    w.fact(Event::ProgramAmended { spec: s, effective_from: t(0) });
    w.day = 3;
    let release_seq = w.seq;
    let d = w.fact(Event::ConversionReleased { conversion: "c2".into() });
    assert_eq!(amounts(&d), vec![5_000, 5_000]);
    let ids = ids_of(&d);
    assert_eq!(ids, vec![format!("md_{release_seq}_0"), format!("md_{release_seq}_1")]);
    let (o, why, pool) = outcome(&d);
    assert_eq!((o.as_str(), pool), ("settled", 10_000));
    assert!(why.unwrap().starts_with("released from hold (monthly budget exceeded"));
    let st = w.engine.state();
    let (cs, hop, c) = st.mandate_hop(&ids[1]).unwrap();
    assert_eq!((cs, hop, c.id.as_str(), c.released_at), (cseq, 1, "c2", Some(release_seq)));
    assert!(st.mandate_hop(&format!("md_{cseq}_0")).is_none(), "the held conversion's own seq names no mandate");
    assert_eq!(st.books["p1"].on_hold, 10_000, "both deals' closer parts, each in its holding period");
    assert!(matches!(
        w.try_fact(Event::ConversionReleased { conversion: "c2".into() }),
        Err(Rejection::Conflict(m)) if m.contains("not held")
    ));
    // Its hold ends 7 days after the release, and a refund claws back the released hops.
    w.day = 10;
    let r = w.fact(Event::HoldsAdvanced { to: t(10) });
    assert!(
        matches!(&r.outputs[0].envelope.event, Event::HoldsReleased { mandate_ids, .. } if mandate_ids.contains(&ids[0]))
    );
    let r = w.fact(Event::RefundRecorded { refund: "r1".into(), conversion: "c2".into(), size: RefundSize::Full });
    assert!(matches!(&r.outputs[0].envelope.event, Event::ClawbackIssued { reverses, .. } if *reverses == ids[0]));
}

#[test]
fn release_refuses_conversions_that_are_not_held_or_were_refunded() {
    let mut s = spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0);
    s.budget = Some(settle_engine::model::Budget { max: 1 });
    let mut w = World::chain(s, 2);
    assert_eq!(outcome(&w.convert("c1", 100_000)).0, "held");
    w.fact(Event::RefundRecorded { refund: "r1".into(), conversion: "c1".into(), size: RefundSize::Amount(usd(1)) });
    let e = w.try_fact(Event::ConversionReleased { conversion: "c1".into() }).unwrap_err().to_string();
    assert!(e.contains("has refunds recorded"), "{e}");
    assert!(matches!(w.try_fact(Event::ConversionReleased { conversion: "nope".into() }), Err(Rejection::NotFound(_))));
}

/// A clawback of money still in a payout batch is owed back only if the rail pays the
/// batch: another payout meanwhile pays in full, and a failed batch leaves exactly what
/// its mandates are still worth payable.
#[test]
fn clawbacks_in_flight_wait_for_the_rails_answer() {
    let mut w = World::chain(spec(shares("0", "0", "100", Position::Closer), percent_pool("10"), 0), 1);
    let book = |w: &World| *w.engine.state().books.get("p0").unwrap();
    let a = ids_of(&w.convert("c1", 100_000))[0].clone(); // p0: 100.00
    let batch = |id: &str, ids: &[String]| Event::PayoutBatched {
        batch: id.into(),
        partner: "p0".into(),
        rail: "sepa".into(),
        mandate_ids: ids.to_vec(),
    };
    w.fact(batch("B1", std::slice::from_ref(&a)));
    w.fact(Event::RefundRecorded { refund: "r1".into(), conversion: "c1".into(), size: RefundSize::Full });
    assert_eq!((book(&w).payable, book(&w).clawed_in_payout), (-10_000, 10_000));
    let b = ids_of(&w.convert("c2", 100_000))[0].clone();
    let d = w.fact(Event::SettlementConfirmed {
        settlement: "S1".into(),
        batch: None,
        partner: "p0".into(),
        rail: "book".into(),
        confirmation_id: "x".into(),
        mandate_ids: vec![b],
    });
    assert!(
        matches!(&d.outputs[0].envelope.event, Event::PayoutBooked { paid, offset, .. } if paid.minor_units() == 10_000 && offset.is_zero()),
        "the debt of money still in flight is not taken from another payout"
    );
    // The rail answers for another rail's batch: refused.
    let wrong_rail = Event::SettlementFailed {
        settlement: "S2".into(),
        batch: Some("B1".into()),
        partner: "p0".into(),
        rail: "book".into(),
        error: "x".into(),
        mandate_ids: vec![a.clone()],
    };
    assert!(w.try_fact(wrong_rail).unwrap_err().to_string().contains("went to rail 'sepa'"));
    w.fact(settle_p0("B1", "S2", std::slice::from_ref(&a), false));
    let b0 = book(&w);
    assert_eq!((b0.payable, b0.in_payout, b0.paid, b0.clawed_in_payout), (0, 0, 10_000, 0), "nothing owed either way");
}

fn settle_p0(batch: &str, settlement: &str, ids: &[String], ok: bool) -> Event {
    match settle(batch, settlement, ids, ok) {
        Event::SettlementConfirmed { settlement, batch, rail, confirmation_id, mandate_ids, .. } => {
            Event::SettlementConfirmed { settlement, batch, partner: "p0".into(), rail, confirmation_id, mandate_ids }
        }
        Event::SettlementFailed { settlement, batch, rail, error, mandate_ids, .. } => {
            Event::SettlementFailed { settlement, batch, partner: "p0".into(), rail, error, mandate_ids }
        }
        e => e,
    }
}

/// A suspended partner in the chain holds the deal before its pool is computed (pool 0,
/// as recorded since the first version), and a release leaves it held.
#[test]
fn a_suspended_partner_holds_the_deal_with_no_pool_and_it_stays_held() {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    w.fact(Event::PartnerSuspended { partner: "p1".into(), reason: "fraud review".into() });
    let d = w.convert("c1", 100_000);
    assert_eq!(outcome(&d), ("held".into(), Some("partner 'p1' is suspended or unknown".into()), 0));
    let e = w.try_fact(Event::ConversionReleased { conversion: "c1".into() }).unwrap_err().to_string();
    assert!(e.contains("stays held: partner 'p1' is suspended"), "{e}");
}

/// The open mandate's validity window: a deal that occurs after the program's
/// authorisation ends is held with the reason and no mandate, not paid; once the vendor
/// extends the window, a release pays it.
#[test]
fn a_deal_outside_the_validity_window_is_held_until_the_window_covers_it() {
    let mut s = spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0);
    s.valid_until = Some(t(10));
    let mut w = World::chain(s.clone(), 2);
    w.day = 9;
    assert_eq!(amounts(&w.convert("c1", 100_000)), [5_000, 5_000], "inside the window: paid");
    w.day = 10;
    let d = w.convert("c2", 100_000);
    let (o, why, pool) = outcome(&d);
    assert_eq!(
        (o.as_str(), why.as_deref(), pool),
        ("held", Some("deal occurred outside the program's validity window"), 10_000)
    );
    assert!(amounts(&d).is_empty(), "a held deal has no mandate");
    assert_eq!(w.engine.state().books["p1"].earned, 5_000, "only the first deal was earned");
    // Still outside: the release is refused and changes nothing.
    let before = w.engine.state().clone();
    let e = w.try_fact(Event::ConversionReleased { conversion: "c2".into() }).unwrap_err().to_string();
    assert!(e.contains("stays held: deal occurred outside the program's validity window"), "{e}");
    assert_eq!(*w.engine.state(), before);
    // The vendor extends the authorisation; the release pays what the deal earned.
    s.valid_until = Some(t(20));
    w.fact(Event::ProgramAmended { spec: s, effective_from: t(10) });
    let d = w.fact(Event::ConversionReleased { conversion: "c2".into() });
    assert_eq!(amounts(&d), [5_000, 5_000]);
    assert_eq!(w.engine.state().books["p1"].earned, 10_000);
}

/// A won deal that names no registered lead is recorded with a "no commission" outcome
/// (so the log holds every won deal); its id is taken, and a refund of it claws back
/// nothing.
#[test]
fn a_deal_with_no_registered_lead_is_recorded_and_earns_nothing() {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    let d = w.fact(Event::ConversionRecorded {
        conversion: "direct-1".into(),
        lead: "never-registered".into(),
        revenue: usd(100_000),
        occurred_at: t(0),
        subscription_month: None,
        fx: None,
    });
    assert_eq!(outcome(&d), ("no_commission".into(), Some("no lead 'never-registered' is registered".into()), 0));
    assert!(amounts(&d).is_empty());
    assert!(w.engine.state().books.values().all(|b| b.earned == 0));
    let again = w.try_fact(Event::ConversionRecorded {
        conversion: "direct-1".into(),
        lead: "l1".into(),
        revenue: usd(100_000),
        occurred_at: t(0),
        subscription_month: None,
        fx: None,
    });
    assert!(matches!(again, Err(Rejection::Conflict(_))), "{again:?}");
    let r = w.fact(Event::RefundRecorded {
        refund: "r1".into(),
        conversion: "direct-1".into(),
        size: RefundSize::Fraction("0.5".parse().unwrap()),
    });
    assert!(amounts(&r).is_empty());
    let cs = w.engine.state().conversions.seq_of("direct-1").unwrap();
    assert_eq!(w.engine.state().conversions.get(cs).unwrap().refunded, 50_000);
}
