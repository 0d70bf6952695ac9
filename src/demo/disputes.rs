//! The demo's disputes, each week before the payouts: a closer disputes the split of a
//! recent deal (accepted with the amount claimed, accepted as a re-split from the
//! originator, or rejected, in turn); every other week an originator says a deal on its
//! lead is missing (accepted, withdrawn, or left open to become overdue). All of it
//! follows from the state and the week, so the same seed gives the same bytes.

use chrono::{DateTime, Utc};
use settle_engine::Event;
use settle_engine::model::{AdjustmentLine, DisputeOutcome, DisputeSubject};
use settle_engine::state::State;
use settle_mandates::money::Amount;

use crate::service::Submit;

/// Who acts for a partner: its agent where it has one (with `disputes_write`), else itself.
fn by(agents: &[(&str, &str)], partner: &str) -> String {
    agents
        .iter()
        .find(|(_, p)| *p == partner)
        .map_or_else(|| format!("partner:{partner}"), |(a, _)| format!("agent:{a}"))
}

/// The week's dispute facts on `day` (the `week`-th), at `at(i)` for increasing `i`:
/// `deal` names a recent conversion, `lead` a recent lead.
pub(super) fn week(
    st: &State,
    week: i64,
    deal: &str,
    lead: &str,
    agents: &[(&str, &str)],
    mut key: impl FnMut() -> String,
    at: impl Fn(i64) -> DateTime<Utc>,
) -> Vec<Submit> {
    let mut out = Vec::new();
    let mut fact = |i: i64, by: String, event: Event| out.push(super::fact(key(), by, at(i), event));
    let admin = || "vendor:admin".to_owned();
    if let Some((_, c)) = st.conversions.seq_of(deal).and_then(|cs| st.conversions.get(cs).map(|c| (cs, c)))
        && let (Some(first), Some(last)) = (c.hops.first(), c.hops.last())
    {
        let id = format!("dispute-{week}-split");
        let closer = last.partner.to_string();
        let claimed = Amount::from_minor((last.amount / 20).max(1), c.pool.currency()).ok();
        fact(
            0,
            by(agents, &closer),
            Event::DisputeOpened {
                dispute: id.clone(),
                partner: closer.clone(),
                subject: DisputeSubject::Conversion { conversion: deal.to_owned() },
                claimed,
                statement: "the closer's share of this deal should be higher".into(),
                evidence: vec![format!("receipts of {deal}"), "partner agreement, section 4".into()],
            },
        );
        fact(
            1,
            admin(),
            Event::DisputeCommented {
                dispute: id.clone(),
                text: "checking the rule version it was priced with".into(),
            },
        );
        let originator = first.partner.to_string();
        let resplit = claimed
            .filter(|a| c.hops.len() >= 2 && first.amount - first.clawed >= a.minor_units() && originator != closer);
        let (outcome, reason, adjustments) = match (week % 3, resplit) {
            (0, _) => (DisputeOutcome::Accepted, "agreed: the closer is owed what it claims".to_owned(), Vec::new()),
            (2, Some(a)) => (
                DisputeOutcome::Accepted,
                "agreed: the originator's share moves to the closer".to_owned(),
                vec![
                    AdjustmentLine { amount: a, partner: closer },
                    AdjustmentLine {
                        amount: Amount::from_minor(-a.minor_units(), a.currency()).unwrap_or(a),
                        partner: originator,
                    },
                ],
            ),
            _ => (
                DisputeOutcome::Rejected,
                format!("priced under rule version {} as published", c.rule_version),
                Vec::new(),
            ),
        };
        fact(2, admin(), Event::DisputeResolved { dispute: id, outcome, reason, adjustments });
    }
    if week % 2 == 1
        && let Some(l) = st.leads.get(lead)
        && let Some(originator) = l.chain.first().map(ToString::to_string)
        && let Some(cur) = st.programs.get(l.program.as_str()).map(|p| p.latest().spec.currency)
    {
        let id = format!("dispute-{week}-missing");
        fact(
            3,
            by(agents, &originator),
            Event::DisputeOpened {
                dispute: id.clone(),
                partner: originator.clone(),
                subject: DisputeSubject::MissingConversion { lead: lead.to_owned() },
                claimed: Amount::from_minor(2_500, cur).ok(),
                statement: "the customer signed a contract on this lead; no deal was recorded".into(),
                evidence: vec![format!("signed order for {lead}")],
            },
        );
        match week % 10 {
            1 | 5 => fact(
                4,
                admin(),
                Event::DisputeResolved {
                    dispute: id,
                    outcome: DisputeOutcome::Accepted,
                    reason: "the deal was booked outside the CRM".into(),
                    adjustments: Vec::new(),
                },
            ),
            3 => fact(
                4,
                by(agents, &originator),
                Event::DisputeWithdrawn { dispute: id, reason: "found the deal under another lead".into() },
            ),
            // Left open: past the response time it is flagged overdue.
            _ => {}
        }
    }
    out
}
