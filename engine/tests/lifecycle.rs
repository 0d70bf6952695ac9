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
                partner: "ghost".into(),
            },
            "not found",
        ),
        (
            Event::LeadRegistered {
                lead: "bad id!".into(),
                program: "prg".into(),
                customer: "x.com".into(),
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
    let cseq = w.engine.state().conversion_ids["c1"];
    w.fact(Event::SettlementConfirmed {
        settlement: "s1".into(),
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
    let c = &w.engine.state().conversions[&cseq];
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
    let c1 = w.engine.state().conversions[&w.engine.state().conversion_ids["c1"]].clone();
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
