//! Disputes: opened by a party within the program's window, commented, withdrawn,
//! rejected, or accepted with signed adjustment mandates that move money in the books as
//! payments and clawbacks do, never beyond the claim; flagged when overdue.
mod common;

use common::*;
use proptest::prelude::*;
use settle_engine::Rejection;
use settle_engine::model::*;
use settle_engine::replay::sign_decisions;
use settle_engine::state::HopStatus;
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};
use settle_mandates::types::{Direction, Mandate, VCT_ADJUSTMENT_MANDATE};

/// p0 → p1, 10% pool split 50/50, no hold; conversion c1 of 1,000.00 (p0 and p1 earn
/// 50.00 each).
fn world() -> World {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    w.convert("c1", 100_000);
    w
}

fn open(id: &str, partner: &str, subject: DisputeSubject, claimed: Option<i64>) -> Event {
    Event::DisputeOpened {
        dispute: id.into(),
        partner: partner.into(),
        subject,
        claimed: claimed.map(usd),
        statement: "the split of this deal is wrong".into(),
        evidence: vec!["receipt md_9_1".into()],
    }
}

fn conversion(id: &str) -> DisputeSubject {
    DisputeSubject::Conversion { conversion: id.into() }
}

fn resolve(id: &str, outcome: DisputeOutcome, reason: &str, lines: &[(&str, i64)]) -> Event {
    Event::DisputeResolved {
        dispute: id.into(),
        outcome,
        reason: reason.into(),
        adjustments: lines.iter().map(|(p, a)| AdjustmentLine { partner: (*p).into(), amount: usd(*a) }).collect(),
    }
}

fn adjustments(d: &settle_engine::Decision) -> Vec<(String, String, i64)> {
    d.outputs
        .iter()
        .filter_map(|o| match &o.envelope.event {
            Event::AdjustmentIssued { mandate_id, partner, amount, .. } => {
                Some((mandate_id.clone(), partner.clone(), amount.minor_units()))
            }
            _ => None,
        })
        .collect()
}

/// `e` as a fact stated by `by` (the world's facts are the vendor administrator's).
fn as_by(w: &mut World, by: &str, e: Event) -> Result<settle_engine::Decision, Rejection> {
    let env = settle_engine::Envelope {
        v: 1,
        at: t(w.day),
        by: by.into(),
        key: Some(format!("k{}", w.seq)),
        cause: None,
        event: e,
    };
    let d = w.engine.decide(env, w.seq)?;
    w.seq += 1 + d.outputs.len() as u64;
    Ok(d)
}

/// Partner p9, in the program but on no chain.
fn enroll_p9(w: &mut World) {
    w.fact(Event::PartnerEnrolled {
        partner: "p9".into(),
        program: "prg".into(),
        name: "P9".into(),
        role: PartnerRole::Partner,
    });
}

fn balanced(w: &World) {
    for (p, b) in &w.engine.state().books {
        assert!(b.is_balanced(), "book of {p}: {b:?}");
    }
}

#[test]
fn an_accepted_claim_is_paid_by_a_signed_adjustment_in_a_payout_batch() {
    let mut w = world();
    w.fact(open("d1", "p1", conversion("c1"), Some(1_000)));
    assert_eq!(w.engine.state().disputes["d1"].status, DisputeStatus::Open);
    w.fact(Event::DisputeCommented { dispute: "d1".into(), text: "the closer share was 60%".into() });
    assert_eq!(w.engine.state().disputes["d1"].comments.len(), 1);
    // Accepted with no lines: the claimed amount to the disputing partner.
    let d = w.fact(resolve("d1", DisputeOutcome::Accepted, "agreed", &[]));
    let adj = adjustments(&d);
    assert_eq!(adj.len(), 1);
    let (id, partner, amount) = adj[0].clone();
    assert_eq!((partner.as_str(), amount), ("p1", 1_000));
    // Signed as an adjustment mandate, naming the dispute and the conversion.
    let key = SigningKey::from_seed(&[9; 32]);
    let ring = KeyRing::new(&Jwks { keys: vec![key.to_jwk(None, None)] }).unwrap();
    let signed = sign_decisions(vec![d], &key);
    let token = signed
        .iter()
        .flatten()
        .find_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.bytes).ok()?;
            (v["type"] == "adjustment_issued").then(|| v["data"]["mandate"].as_str().unwrap().to_owned())
        })
        .unwrap();
    let (m, _) = Mandate::verify(&token, &ring).unwrap();
    assert_eq!((m.vct.as_str(), m.direction), (VCT_ADJUSTMENT_MANDATE, Direction::Adjustment));
    assert_eq!((m.basis.dispute.as_deref(), m.basis.conversion.as_str()), (Some("d1"), "c1"));
    assert_eq!((m.payment_amount.minor_units(), m.transaction_id.as_str()), (1_000, id.as_str()));
    let b = w.engine.state().books["p1"];
    assert_eq!((b.adjusted, b.payable), (1_000, 6_000));
    // Paid in a payout batch with the partner's payment mandate.
    let (cs, c) = w.engine.state().conversions.iter().next().unwrap();
    let md = c.mandate_id(cs, 1);
    let ids = vec![md, id.clone()];
    let d = w.fact(Event::PayoutBatched {
        batch: "B1".into(),
        partner: "p1".into(),
        rail: "sepa".into(),
        mandate_ids: ids.clone(),
    });
    assert!(d.outputs.iter().any(
        |o| matches!(&o.envelope.event, Event::PayoutBatchCreated { amount, .. } if amount.minor_units() == 6_000)
    ));
    assert_eq!(w.engine.state().adjustments[&id].status, HopStatus::Batched);
    w.fact(Event::SettlementConfirmed {
        settlement: "S1".into(),
        batch: Some("B1".into()),
        partner: "p1".into(),
        mandate_ids: ids,
        rail: "sepa".into(),
        confirmation_id: "C1".into(),
    });
    assert_eq!(w.engine.state().adjustments[&id].status, HopStatus::Paid);
    let b = w.engine.state().books["p1"];
    assert_eq!((b.paid, b.payable, b.net()), (6_000, 0, 6_000));
    balanced(&w);
    // Resolved once only.
    let again = w.try_fact(resolve("d1", DisputeOutcome::Rejected, "no", &[]));
    assert!(matches!(again, Err(Rejection::Conflict(_))), "{again:?}");
}

#[test]
fn a_resplit_moves_money_between_partners_and_never_exceeds_the_claim_or_the_holding() {
    let mut w = world();
    w.fact(open("d1", "p1", conversion("c1"), Some(1_000)));
    // More than claimed, up or down, is refused; so is taking back more than p0 holds,
    // a partner not on the conversion, a partner twice, a zero line, another currency.
    for lines in
        [vec![("p1", 1_001)], vec![("p1", 500), ("p0", -1_001)], vec![("p1", 600), ("p1", 400)], vec![("p1", 0)]]
    {
        let e = w.try_fact(resolve("d1", DisputeOutcome::Accepted, "", &lines)).unwrap_err();
        assert!(matches!(e, Rejection::Invalid(_)), "{lines:?}: {e}");
    }
    enroll_p9(&mut w);
    let e = w.try_fact(resolve("d1", DisputeOutcome::Accepted, "", &[("p9", 100)])).unwrap_err();
    assert!(e.to_string().contains("not on conversion"), "{e}");
    // A suspended partner is paid no new adjustment (it may still be taken from).
    w.fact(Event::PartnerSuspended { partner: "p1".into(), reason: "audit".into() });
    let e = w.try_fact(resolve("d1", DisputeOutcome::Accepted, "", &[("p1", 1_000), ("p0", -1_000)])).unwrap_err();
    assert!(e.to_string().contains("suspended"), "{e}");
    let mut w = world();
    enroll_p9(&mut w);
    w.fact(open("d1", "p1", conversion("c1"), Some(1_000)));
    // 10.00 from the originator to the closer.
    let d = w.fact(resolve("d1", DisputeOutcome::Accepted, "closer share", &[("p1", 1_000), ("p0", -1_000)]));
    assert_eq!(adjustments(&d).iter().map(|a| a.2).collect::<Vec<_>>(), vec![1_000, -1_000]);
    let st = w.engine.state();
    assert_eq!((st.books["p0"].adjusted, st.books["p0"].payable), (-1_000, 4_000));
    assert_eq!((st.books["p1"].adjusted, st.books["p1"].payable), (1_000, 6_000));
    // A negative adjustment is not a payable mandate.
    assert_eq!(st.adjustments.len(), 1);
    balanced(&w);
    // A second dispute may take back at most what p0 still holds (50.00 − 10.00).
    w.fact(open("d2", "p1", conversion("c1"), Some(10_000)));
    let e = w.try_fact(resolve("d2", DisputeOutcome::Accepted, "", &[("p0", -4_001)])).unwrap_err();
    assert!(e.to_string().contains("holds 40.00"), "{e}");
    w.fact(resolve("d2", DisputeOutcome::Accepted, "", &[("p0", -4_000)]));
    assert_eq!(w.engine.state().books["p0"].payable, 0);
    balanced(&w);
}

#[test]
fn only_a_party_may_dispute_within_the_window_and_a_claim_in_words_pays_nothing() {
    let mut w = world();
    enroll_p9(&mut w);
    let e = w.try_fact(open("d1", "p9", conversion("c1"), Some(100))).unwrap_err();
    assert!(matches!(e, Rejection::NotFound(_)), "{e}");
    // A mandate is disputed by its payee only, though p0 is on its conversion.
    let (cs, c) = w.engine.state().conversions.iter().next().unwrap();
    let md1 = DisputeSubject::Mandate { mandate: c.mandate_id(cs, 1) };
    let e = w.try_fact(open("d1", "p0", md1.clone(), Some(100))).unwrap_err();
    assert!(matches!(e, Rejection::NotFound(_)), "{e}");
    w.fact(open("d0", "p1", md1, Some(100)));
    for (subject, missing) in [
        (conversion("nope"), "conversion 'nope'"),
        (DisputeSubject::Mandate { mandate: "md_99_0".into() }, "mandate 'md_99_0'"),
        (DisputeSubject::Clawback { clawback: "cb_99_0".into() }, "clawback 'cb_99_0'"),
        (DisputeSubject::MissingConversion { lead: "nope".into() }, "lead 'nope'"),
    ] {
        let e = w.try_fact(open("d1", "p1", subject, None)).unwrap_err();
        assert!(matches!(&e, Rejection::NotFound(m) if m.contains(missing)), "{e}");
    }
    // Empty statement, bad currency, negative claim.
    let mut bad = open("d1", "p1", conversion("c1"), None);
    if let Event::DisputeOpened { statement, .. } = &mut bad {
        statement.clear();
    }
    assert!(matches!(w.try_fact(bad), Err(Rejection::Invalid(_))));
    let e = w.try_fact(open("d1", "p1", conversion("c1"), Some(-5))).unwrap_err();
    assert!(e.to_string().contains("greater than zero"), "{e}");
    // A claim in words only: accepted without money, never with an adjustment.
    w.fact(open("d1", "p1", conversion("c1"), None));
    assert!(w.try_fact(open("d1", "p1", conversion("c1"), None)).is_err(), "the same id twice");
    let e = w.try_fact(resolve("d1", DisputeOutcome::Accepted, "", &[("p1", 1)])).unwrap_err();
    assert!(e.to_string().contains("claims no amount"), "{e}");
    let d = w.fact(resolve("d1", DisputeOutcome::Accepted, "acknowledged", &[]));
    assert!(adjustments(&d).is_empty());
    // The default window is 90 days after the conversion.
    w.day = 91;
    let e = w.try_fact(open("d2", "p1", conversion("c1"), None)).unwrap_err();
    assert!(e.to_string().contains("dispute window"), "{e}");
}

#[test]
fn a_missing_conversion_is_disputed_on_the_lead_until_its_window_after_attribution() {
    let mut w = World::chain(spec(shares("50", "0", "50", Position::Closer), percent_pool("10"), 0), 2);
    let lead = || DisputeSubject::MissingConversion { lead: "l1".into() };
    // Attribution 90 days, window 90 days: open until day 180.
    w.day = 180;
    w.fact(open("d1", "p0", lead(), Some(2_500)));
    // No conversion: nothing to take back from anyone.
    let e = w.try_fact(resolve("d1", DisputeOutcome::Accepted, "", &[("p0", 2_500), ("p1", -1)])).unwrap_err();
    assert!(e.to_string().contains("takes back"), "{e}");
    let d = w.fact(resolve("d1", DisputeOutcome::Accepted, "the deal was won", &[("p0", 1_250), ("p1", 1_250)]));
    assert_eq!(adjustments(&d).len(), 2);
    balanced(&w);
    w.day = 181;
    assert!(w.try_fact(open("d2", "p0", lead(), None)).unwrap_err().to_string().contains("window"));
}

#[test]
fn a_clawback_is_disputed_from_its_refund_and_rejections_withdrawals_close_for_good() {
    let mut w = world();
    w.day = 60;
    let d = w.fact(Event::RefundRecorded { refund: "r1".into(), conversion: "c1".into(), size: RefundSize::Full });
    let cb = d
        .outputs
        .iter()
        .find_map(|o| match &o.envelope.event {
            Event::ClawbackIssued { mandate_id, partner, .. } if partner == "p1" => Some(mandate_id.clone()),
            _ => None,
        })
        .unwrap();
    // Past the conversion's window (day 0 + 90) but within the clawback's (day 60 + 90).
    w.day = 120;
    w.fact(open("d1", "p1", DisputeSubject::Clawback { clawback: cb.clone() }, Some(5_000)));
    assert!(w.try_fact(open("d2", "p1", conversion("c1"), None)).is_err());
    let e = w.try_fact(resolve("d1", DisputeOutcome::Rejected, " ", &[])).unwrap_err();
    assert!(e.to_string().contains("reason"), "{e}");
    assert!(w.try_fact(resolve("d1", DisputeOutcome::Rejected, "refund stands", &[("p1", 5)])).is_err());
    w.fact(resolve("d1", DisputeOutcome::Rejected, "the refund stands", &[]));
    assert_eq!(w.engine.state().disputes["d1"].status, DisputeStatus::Rejected);
    assert!(matches!(
        w.try_fact(Event::DisputeCommented { dispute: "d1".into(), text: "but".into() }),
        Err(Rejection::Conflict(_))
    ));
    // Withdrawn by the side that opened it only: here the partner's.
    as_by(&mut w, "partner:p1", open("d3", "p1", DisputeSubject::Clawback { clawback: cb.clone() }, None)).unwrap();
    let withdraw = || Event::DisputeWithdrawn { dispute: "d3".into(), reason: String::new() };
    let e = w.try_fact(withdraw()).unwrap_err();
    assert!(e.to_string().contains("side that opened it"), "{e}");
    as_by(&mut w, "agent:a1", withdraw()).unwrap();
    assert_eq!(w.engine.state().disputes["d3"].status, DisputeStatus::Withdrawn);
    assert!(w.try_fact(resolve("d3", DisputeOutcome::Rejected, "late", &[])).is_err());
    // A clawback that was never issued (p1's hop 5) is not found.
    let never = cb.rsplit_once('_').map(|(s, _)| format!("{s}_5")).unwrap();
    let e = w.try_fact(open("d4", "p1", DisputeSubject::Clawback { clawback: never }, None)).unwrap_err();
    assert!(matches!(e, Rejection::NotFound(_)), "{e}");
}

#[test]
fn a_dispute_past_its_response_time_is_flagged_once() {
    let mut w = world();
    w.fact(open("d1", "p1", conversion("c1"), None));
    w.day = 13;
    let d = w.fact(Event::HoldsAdvanced { to: t(13) });
    assert!(!d.outputs.iter().any(|o| matches!(o.envelope.event, Event::DisputeOverdue { .. })));
    w.day = 14;
    let d = w.fact(Event::HoldsAdvanced { to: t(14) });
    let flagged: Vec<_> = d
        .outputs
        .iter()
        .filter_map(|o| match &o.envelope.event {
            Event::DisputeOverdue { dispute, due_at } => Some((dispute.clone(), *due_at)),
            _ => None,
        })
        .collect();
    assert_eq!(flagged, vec![("d1".to_owned(), t(14))]);
    assert!(w.engine.state().disputes["d1"].overdue);
    w.day = 20;
    let d = w.fact(Event::HoldsAdvanced { to: t(20) });
    assert!(!d.outputs.iter().any(|o| matches!(o.envelope.event, Event::DisputeOverdue { .. })));
}

#[test]
fn a_returned_bank_payout_makes_its_adjustment_payable_again() {
    let mut w = world();
    w.fact(Event::PayoutInstrumentRegistered {
        partner: "p1".into(),
        instrument: format!("pi_{}", "ab".repeat(32)),
        currency: usd(0).currency(),
    });
    w.fact(open("d1", "p1", conversion("c1"), Some(700)));
    let id = adjustments(&w.fact(resolve("d1", DisputeOutcome::Accepted, "ok", &[])))[0].0.clone();
    let ids = vec![id.clone()];
    let d = w.fact(Event::PayoutBatched {
        batch: "B".into(),
        partner: "p1".into(),
        rail: BANK_RAIL.into(),
        mandate_ids: ids.clone(),
    });
    assert!(
        d.outputs.iter().any(
            |o| matches!(&o.envelope.event, Event::PayoutBatchCreated { amount, .. } if amount.minor_units() == 700)
        )
    );
    let answer = |s: &str, ok: bool| {
        let (settlement, batch, partner, rail, mandate_ids) =
            (s.into(), Some("B".into()), "p1".into(), BANK_RAIL.into(), ids.clone());
        if ok {
            Event::SettlementConfirmed { settlement, batch, partner, rail, mandate_ids, confirmation_id: "X".into() }
        } else {
            Event::SettlementFailed { settlement, batch, partner, rail, mandate_ids, error: "AC04".into() }
        }
    };
    w.fact(answer("S1", true));
    w.fact(answer("S2", false));
    let st = w.engine.state();
    assert_eq!(st.adjustments[&id].status, HopStatus::Payable);
    assert_eq!((st.books["p1"].paid, st.books["p1"].payable, st.books["p1"].credit), (0, 5_700, 0));
    balanced(&w);
}

#[derive(Debug, Clone)]
enum Op {
    Convert(i64),
    Refund(usize, u8),
    Open { partner: usize, conv: usize, claimed: Option<i64> },
    Resolve { dispute: usize, lines: Vec<(usize, i64)>, accept: bool },
    Pay(usize),
    Advance,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1_000i64..5_000_000).prop_map(Op::Convert),
        (0usize..8, 1u8..=100).prop_map(|(c, p)| Op::Refund(c, p)),
        (0usize..3, 0usize..8, proptest::option::of(1i64..200_000)).prop_map(|(partner, conv, claimed)| Op::Open {
            partner,
            conv,
            claimed
        }),
        (0usize..8, proptest::collection::vec((0usize..3, -150_000i64..150_000), 0..4), any::<bool>())
            .prop_map(|(dispute, lines, accept)| Op::Resolve { dispute, lines, accept }),
        (0usize..3).prop_map(Op::Pay),
        Just(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever is opened, accepted (with any lines) or rejected, between conversions,
    /// refunds and payouts: every book balances, money is conserved (what the hops hold
    /// plus every adjustment is what the books hold), and an accepted dispute's
    /// adjustments, up and down, are each at most its claim.
    #[test]
    fn adjustments_keep_the_books_and_never_pay_more_than_the_claim(ops in proptest::collection::vec(op(), 1..40)) {
        let mut w = World::chain(spec(shares("30", "20", "50", Position::Closer), percent_pool("10"), 3), 3);
        let (mut convs, mut disputes) = (Vec::new(), Vec::new());
        let mut net_adjusted = 0i64;
        for (n, op) in ops.into_iter().enumerate() {
            let event = match op {
                Op::Convert(r) => {
                    convs.push(format!("c{n}"));
                    Event::ConversionRecorded { conversion: format!("c{n}"), lead: "l1".into(), revenue: usd(r), occurred_at: t(w.day), subscription_month: None, fx: None }
                }
                Op::Refund(c, p) if !convs.is_empty() => Event::RefundRecorded {
                    refund: format!("r{n}"),
                    conversion: convs[c % convs.len()].clone(),
                    size: RefundSize::Fraction(rust_decimal::Decimal::new(i64::from(p), 2)),
                },
                Op::Open { partner, conv, claimed } if !convs.is_empty() => {
                    disputes.push(format!("d{n}"));
                    open(&format!("d{n}"), &format!("p{partner}"), conversion(&convs[conv % convs.len()]), claimed)
                }
                Op::Resolve { dispute, lines, accept } if !disputes.is_empty() => {
                    let lines: Vec<(String, i64)> = lines.into_iter().map(|(p, a)| (format!("p{p}"), a)).collect();
                    let refs: Vec<(&str, i64)> = lines.iter().map(|(p, a)| (p.as_str(), *a)).collect();
                    let outcome = if accept { DisputeOutcome::Accepted } else { DisputeOutcome::Rejected };
                    resolve(&disputes[dispute % disputes.len()], outcome, "decided", &refs)
                }
                Op::Pay(p) => {
                    let partner = format!("p{p}");
                    let st = w.engine.state();
                    let mut ids: Vec<String> = st.adjustments.iter().filter(|(_, a)| a.partner == partner && a.status == HopStatus::Payable).map(|(id, _)| id.clone()).collect();
                    for (cs, c) in st.conversions.iter() {
                        for (i, h) in c.hops.iter().enumerate() {
                            if h.partner == partner && h.status == HopStatus::Payable {
                                ids.push(c.mandate_id(cs, i));
                            }
                        }
                    }
                    if ids.is_empty() { continue }
                    Event::PayoutBatched { batch: format!("b{n}"), partner, rail: "sepa".into(), mandate_ids: ids }
                }
                Op::Advance => {
                    w.day += 2;
                    Event::HoldsAdvanced { to: t(w.day) }
                }
                _ => continue,
            };
            let claim_of = |w: &World, e: &Event| match e {
                Event::DisputeResolved { dispute, .. } => w.engine.state().disputes.get(dispute).and_then(|d| d.claimed).map(|c| c.minor_units()),
                _ => None,
            };
            let claimed = claim_of(&w, &event);
            let Ok(d) = w.try_fact(event) else { continue };
            let adj = adjustments(&d);
            let up: i64 = adj.iter().map(|a| a.2.max(0)).sum();
            let down: i64 = adj.iter().map(|a| (-a.2).max(0)).sum();
            if !adj.is_empty() {
                let c = claimed.expect("an adjustment needs a claimed amount");
                prop_assert!(up <= c && down <= c, "up {} down {} claim {}", up, down, c);
            }
            net_adjusted += up - down;
            let st = w.engine.state();
            let mut books = 0i64;
            for (p, b) in &st.books {
                prop_assert!(b.is_balanced(), "book of {}: {:?}", p, b);
                books += b.net();
            }
            let hops: i64 = st.conversions.values().flat_map(|c| c.hops.into_iter().map(|h| h.amount - h.clawed)).sum();
            prop_assert_eq!(hops + net_adjusted, books);
            let adjusted: i64 = st.books.values().map(|b| b.adjusted).sum();
            prop_assert_eq!(adjusted, net_adjusted);
        }
    }
}
